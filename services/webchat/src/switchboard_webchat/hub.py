"""The open sockets of this replica, by mailbox, and what reaches them.

An entry stored here (a reply, a visitor's message from another tab) is pushed to the
mailbox's sockets at once; entries stored by other replicas are found by ``poll``, one
query a tick for every mailbox with sockets here (``cursors`` says which are new). Each
socket writes from its own bounded queue, so one slow browser never holds up the others:
a socket whose queue is full is closed, and the widget catches up from its last seq when
it reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any

from switchboard_common.logging import get_logger
from switchboard_webchat import frames
from switchboard_webchat.cursors import Cursors
from switchboard_webchat.mailbox import Entry, Mailboxes
from switchboard_webchat.metrics import WebchatMetrics

log = get_logger(__name__)

#: Frames waiting for one socket before it is given up as too slow.
QUEUE_FRAMES = 256


def message_frame(entry: Entry) -> dict[str, Any]:
    return frames.message(
        entry.seq, entry.entry_id, entry.sender, entry.text, at=entry.at, client_id=entry.client_id
    )


class Session:
    """One socket's outgoing side: frames in order, each mailbox entry at most once."""

    def __init__(
        self,
        mailbox: str,
        send: Callable[[str], Awaitable[None]],
        close: Callable[[int], Awaitable[None]],
    ) -> None:
        self.mailbox = mailbox
        self._send = send
        self._close = close
        self._queue: asyncio.Queue[str | None] = asyncio.Queue(QUEUE_FRAMES)
        self._sent: set[int] = set()
        #: client_ids of this socket's own messages being stored: acknowledged, never
        #: pushed back to it (the poll may find one before its ack is queued).
        self._own: set[str] = set()
        self.overflowed = False
        #: The writer has stopped: nothing queued is sent any more.
        self.closed = False

    def offer(self, frame: dict[str, Any]) -> bool:
        """Queue a frame pushed from elsewhere (a reply, another tab's message) without
        waiting; False when the socket is too far behind. Then nothing more is queued:
        the writer sends what is, in order, and closes the socket, and the widget
        catches up from its last seq when it reconnects."""
        if self.overflowed or self.closed:
            return False
        try:
            self._queue.put_nowait(frames.encode(frame))
        except asyncio.QueueFull:
            self.overflowed = True
            return False
        return True

    def offer_entry(self, entry: Entry) -> bool:
        """Queue an entry unless this socket has had it; whether it was queued."""
        if entry.seq in self._sent:
            return False
        self._sent.add(entry.seq)
        if entry.sender == "visitor" and entry.client_id in self._own:
            return False  # its ack says it
        return self.offer(message_frame(entry))

    async def reply(self, frame: dict[str, Any]) -> None:
        """Queue an answer to the socket's own frame (welcome, ack, error, pong),
        waiting for room: a browser that does not read only holds itself up."""
        if not self.closed:
            await self._queue.put(frames.encode(frame))

    async def catch_up(self, entries: Iterable[Entry]) -> None:
        """Queue a joining socket's backlog, waiting for room: a long conversation is
        no slow browser."""
        for entry in entries:
            if self.closed:
                return
            if entry.seq not in self._sent:
                self._sent.add(entry.seq)
                await self._queue.put(frames.encode(message_frame(entry)))

    def mark(self, seq: int) -> None:
        """This socket knows the entry already (its own message, acknowledged)."""
        self._sent.add(seq)

    @contextlib.contextmanager
    def sending(self, client_id: str) -> Iterator[None]:
        """While this socket stores its own message ``client_id``, which its ack (or
        error) answers: the entry is not pushed back to it as a ``message``."""
        self._own.add(client_id)
        try:
            yield
        finally:
            self._own.discard(client_id)

    def stop(self) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)

    async def write(self) -> None:
        """Send queued frames until stopped (or the socket fails); a socket too far
        behind is closed (1013, try again later)."""
        try:
            while (text := await self._queue.get()) is not None:
                await self._send(text)
                if self.overflowed and self._queue.empty():
                    await self._close(1013)
                    return
        finally:
            # Nobody reads the queue any more: free whoever waits to put into it.
            self.closed = True
            while not self._queue.empty():
                self._queue.get_nowait()


class Hub:
    """This replica's sockets and the loop that finds entries stored elsewhere."""

    def __init__(
        self,
        mailboxes: Mailboxes,
        metrics: WebchatMetrics,
        *,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._mailboxes = mailboxes
        self._metrics = metrics
        self._interval = interval
        self._clock = clock
        self._sessions: dict[str, set[Session]] = {}
        self._cursors = Cursors()

    def join(self, session: Session) -> None:
        """Push the mailbox's new entries to ``session`` from now on."""
        self._sessions.setdefault(session.mailbox, set()).add(session)

    def follow(self, mailbox: str, after: int, backlog: Iterable[Entry]) -> None:
        """Poll ``mailbox`` from where a joining socket's backlog ends (kept as it is when
        other sockets follow it already: theirs may still lack entries)."""
        if mailbox in self._cursors or mailbox not in self._sessions:
            return
        self._cursors.watch(mailbox, after)
        self._cursors.fresh(mailbox, [e.seq for e in backlog], self._clock())

    def leave(self, session: Session) -> None:
        sessions = self._sessions.get(session.mailbox)
        if sessions is None:
            return
        sessions.discard(session)
        if not sessions:
            del self._sessions[session.mailbox]
            self._cursors.forget(session.mailbox)

    def deliver(self, entries: Sequence[Entry], *, skip: Session | None = None) -> None:
        """Push entries to this replica's sockets of their mailboxes."""
        for entry in entries:
            for session in list(self._sessions.get(entry.mailbox, ())):
                if session is not skip and session.offer_entry(entry) and entry.sender != "visitor":
                    self._metrics.pushed.labels(entry.sender).inc()

    async def poll(self) -> None:
        """One tick: find the entries other replicas stored for mailboxes open here."""
        watermarks = self._cursors.watermarks()
        if not watermarks:
            return
        found = await self._mailboxes.newer(watermarks)
        now = self._clock()
        by_mailbox: dict[str, list[Entry]] = {}
        for entry in found:
            by_mailbox.setdefault(entry.mailbox, []).append(entry)
        for mailbox in watermarks:
            entries = by_mailbox.get(mailbox, [])
            fresh = set(self._cursors.fresh(mailbox, [e.seq for e in entries], now))
            self.deliver([e for e in entries if e.seq in fresh])

    async def run(self) -> None:
        """The background loop: ``poll`` every interval; a failed tick is logged and
        the next one tries again (the cursors have not moved)."""
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.poll()
            except Exception as error:  # noqa: BLE001 - the database may be away: try again
                log.warning("mailbox poll failed", error_type=type(error).__name__)
