"""The widget's socket: one conversation between a browser tab and Switchboard.

The origin is checked at the handshake, the visitor at ``hello`` (token, vouched
identity); then each ``send`` is published to ``support.inbound.v1`` and acknowledged
only once Kafka has it, stored in the mailbox (so a reload or a second tab sees it) and
shown to the visitor's other sockets; ``seen`` reports replies delivered. Nothing a
visitor writes is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from pymongo.errors import PyMongoError
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from switchboard_common.contract import INBOUND, OUTBOUND, Channel, DeliveryStatus, DeliveryUpdated
from switchboard_common.kafka import Outgoing
from switchboard_common.logging import get_logger
from switchboard_common.publishing import DurablePublisher, PublishUnavailableError
from switchboard_webchat import frames
from switchboard_webchat.frames import ErrorCode, FrameError, Hello, Ping, Seen, Send
from switchboard_webchat.hub import Hub, Session
from switchboard_webchat.inbound import Inbound, received
from switchboard_webchat.limits import ConnectionCounter, SendLimiter
from switchboard_webchat.mailbox import Entry, Mailboxes, NewEntry, mailbox_key
from switchboard_webchat.metrics import WebchatMetrics
from switchboard_webchat.tokens import (
    Visitor,
    issue_token,
    new_visitor_id,
    verify_identity,
    verify_token,
)

log = get_logger(__name__)

#: Close codes: policy violation (origin, token, identity), try again later (busy).
POLICY = 1008
TRY_LATER = 1013
#: Seconds the widget is told to wait when Kafka or the database did not take a message.
UNAVAILABLE_RETRY = 2.0
#: Messages committed together at most (the rest wait for the next batch).
MAX_BATCH = 500
#: Seconds a batch smaller than the last waits for more messages, at most.
LINGER = 0.002


@dataclass(frozen=True)
class _Outcome:
    """What became of a visitor's message: stored (``resend``: before), or refused."""

    entry: Entry | None = None
    resend: bool = False
    code: ErrorCode | None = None
    why: str = ""
    retry_after: float | None = None


UNAVAILABLE = _Outcome(
    code=ErrorCode.UNAVAILABLE, why="not sent yet: try again shortly", retry_after=UNAVAILABLE_RETRY
)


@dataclass(frozen=True)
class _Waiting:
    """A visitor's message waiting for the next batch."""

    visitor: Visitor
    address: str
    mailbox: str
    send: Send
    inbound: Inbound
    outcome: asyncio.Future[_Outcome]


class Refusal(Exception):  # noqa: N818 - a refusal is not a bug: the visitor is told
    """End the socket with an error frame and a close code."""

    def __init__(self, code: ErrorCode, message: str, close: int = POLICY) -> None:
        super().__init__(message)
        self.code = code
        self.close = close


@dataclass(frozen=True)
class ChatPolicy:
    """What the settings say about sockets."""

    site: str
    origins: frozenset[str]
    token_secret: bytes
    identity_secret: bytes
    max_chars: int
    hello_timeout: float


class ChatSockets:
    """Serves ``/chat/socket``."""

    def __init__(
        self,
        policy: ChatPolicy,
        *,
        hub: Hub,
        mailboxes: Mailboxes,
        publisher: DurablePublisher,
        limiter: SendLimiter,
        connections: ConnectionCounter,
        metrics: WebchatMetrics,
        clock: Callable[[], datetime],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self._hub = hub
        self._mailboxes = mailboxes
        self._publisher = publisher
        self._limiter = limiter
        self._connections = connections
        self._metrics = metrics
        self._clock = clock
        self._monotonic = monotonic
        #: Messages waiting for the batch after the one in flight, and its committer.
        self._waiting: list[_Waiting] = []
        self._committer: asyncio.Task[None] | None = None
        #: The size of the last batch, and set once as many messages wait again.
        self._last_batch = 0
        self._enough = asyncio.Event()

    async def serve(self, socket: WebSocket) -> None:
        """The whole life of one socket."""
        # Accepted first so that a refusal can say why: a browser shows a page nothing
        # of a handshake answered 403.
        await socket.accept()
        address = socket.client.host if socket.client else "unknown"
        refused = self._check_handshake(socket)
        if refused is None and not self._connections.open(address):
            refused = Refusal(
                ErrorCode.TOO_MANY_CONNECTIONS, "too many open chats", close=TRY_LATER
            )
        if refused is not None:
            await self._refuse(socket, refused)
            return
        self._metrics.sockets.inc()
        try:
            await self._converse(socket, address)
        except Refusal as refusal:
            await self._refuse(socket, refusal)
        except PyMongoError as error:
            # The mailbox could not be read: the widget reconnects and catches up.
            log.warning("mailbox unavailable for a socket", error_type=type(error).__name__)
            await self._refuse(
                socket, Refusal(ErrorCode.UNAVAILABLE, "try again shortly", close=TRY_LATER)
            )
        except WebSocketDisconnect:
            pass
        finally:
            self._metrics.sockets.dec()
            self._connections.close(address)

    def _check_handshake(self, socket: WebSocket) -> Refusal | None:
        origin = (socket.headers.get("origin") or "").rstrip("/").lower()
        if origin not in self.policy.origins:
            return Refusal(ErrorCode.ORIGIN_NOT_ALLOWED, "this page may not open the chat")
        site = socket.query_params.get("site")
        if site is not None and site != self.policy.site:
            return Refusal(ErrorCode.UNKNOWN_SITE, "this chat serves another site")
        return None

    async def _refuse(self, socket: WebSocket, refusal: Refusal) -> None:
        self._metrics.connections_refused.labels(refusal.code.value).inc()
        with contextlib.suppress(Exception):  # the browser may be gone already
            if socket.application_state == WebSocketState.CONNECTED:
                await socket.send_text(frames.encode(frames.error(refusal.code, str(refusal))))
                await socket.close(refusal.close)

    async def _converse(self, socket: WebSocket, address: str) -> None:
        visitor, token, after = await self._hello(socket)
        session = Session(
            mailbox_key(visitor.site, visitor.recipient), socket.send_text, socket.close
        )
        writer = asyncio.create_task(session.write(), name="webchat-writer")
        self._hub.join(session)
        try:
            await session.reply(
                frames.welcome(
                    token,
                    visitor.visitor_id,
                    verified=visitor.email is not None,
                    max_chars=self.policy.max_chars,
                )
            )
            backlog = await self._mailboxes.after(session.mailbox, after, limit=10_000)
            await session.catch_up(backlog)
            self._hub.follow(session.mailbox, after, backlog)
            await self._receive(socket, session, visitor, address, writer)
        finally:
            self._hub.leave(session)
            session.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer, timeout=5)

    async def _hello(self, socket: WebSocket) -> tuple[Visitor, str, int]:
        try:
            async with asyncio.timeout(self.policy.hello_timeout):
                text = await socket.receive_text()
        except TimeoutError:
            raise Refusal(ErrorCode.HELLO_REQUIRED, "say hello first") from None
        except KeyError:  # a binary frame
            raise Refusal(ErrorCode.HELLO_REQUIRED, "say hello first") from None
        try:
            hello = frames.parse_frame(text)
        except FrameError as error:
            raise Refusal(ErrorCode.HELLO_REQUIRED, f"say hello first ({error})") from None
        if not isinstance(hello, Hello):
            raise Refusal(ErrorCode.HELLO_REQUIRED, "say hello first")
        if hello.token is None:
            visitor_id = new_visitor_id()
        else:
            known = verify_token(self.policy.token_secret, hello.token)
            if known is None:
                raise Refusal(ErrorCode.BAD_TOKEN, "unknown visitor token: start afresh")
            visitor_id = known
        email = None
        if hello.identity is not None:
            if not verify_identity(
                self.policy.identity_secret, hello.identity.email, hello.identity.hash
            ):
                raise Refusal(ErrorCode.BAD_IDENTITY, "the site's identity hash does not match")
            email = hello.identity.email.strip().lower()
        name = hello.name.strip() if hello.name and hello.name.strip() else None
        visitor = Visitor(self.policy.site, visitor_id, email, name)
        return visitor, issue_token(self.policy.token_secret, visitor_id), hello.after

    async def _receive(
        self,
        socket: WebSocket,
        session: Session,
        visitor: Visitor,
        address: str,
        writer: asyncio.Task[None],
    ) -> None:
        while not writer.done():
            message = await socket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                await self._refused(session, ErrorCode.BAD_FRAME, "frames are JSON text")
                continue
            try:
                frame = frames.parse_frame(text)
            except FrameError as error:
                await self._refused(session, ErrorCode.BAD_FRAME, str(error), error.client_id)
                continue
            if isinstance(frame, Send):
                await self._send(session, visitor, address, frame)
            elif isinstance(frame, Seen):
                await self._seen(session, frame.seq)
            elif isinstance(frame, Ping):
                await session.reply(frames.PONG)
            else:
                await self._refused(session, ErrorCode.BAD_FRAME, "hello was said already")

    async def _refused(
        self,
        session: Session,
        code: ErrorCode,
        message: str,
        client_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self._metrics.refused.labels(code.value).inc()
        await session.reply(
            frames.error(code, message, client_id=client_id, retry_after=retry_after)
        )

    async def _send(self, session: Session, visitor: Visitor, address: str, send: Send) -> None:
        problem = frames.check_text(send.text, self.policy.max_chars)
        if problem is not None:
            explain = {
                ErrorCode.EMPTY: "the message is empty",
                ErrorCode.TOO_LONG: f"the message is over {self.policy.max_chars} characters",
            }[problem]
            await self._refused(session, problem, explain, send.client_id)
            return
        inbound = received(visitor, send.client_id, send.text, self._clock())
        message_id = inbound.message.message_id
        waiting = _Waiting(
            visitor,
            address,
            session.mailbox,
            send,
            inbound,
            asyncio.get_running_loop().create_future(),
        )
        self._waiting.append(waiting)
        if len(self._waiting) >= self._last_batch:
            self._enough.set()
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_all(), name="webchat-sends")
        # A socket reads its next frame only once this one is answered: its order holds.
        # Meanwhile the stored entry is not pushed back to it: its ack answers it.
        with session.sending(send.client_id):
            outcome = await waiting.outcome
        if outcome.code is not None:
            await self._refused(
                session, outcome.code, outcome.why, send.client_id, retry_after=outcome.retry_after
            )
            return
        entry = outcome.entry
        assert entry is not None  # noqa: S101 - an outcome is an entry or a refusal
        if outcome.resend:
            # Acknowledged before and the ack lost (a reload, a dropped connection).
            self._metrics.resends.inc()
        else:
            self._metrics.accepted.labels(str(visitor.email is not None).lower()).inc()
        session.mark(entry.seq)
        await session.reply(frames.ack(send.client_id, message_id, entry.seq))
        if not outcome.resend:
            self._hub.deliver([entry], skip=session)  # the visitor's other tabs

    async def _commit_all(self) -> None:
        """Group commit: the messages of every socket that arrived while a batch was in
        flight go together, a fixed number of round trips for the batch (the ids known,
        one publish, one mailbox write) rather than per message."""
        while self._waiting:
            # The sockets just answered send their next messages about now: wait a
            # moment for as many as the last batch had, not a batch of the first alone.
            if len(self._waiting) < self._last_batch:
                self._enough.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._enough.wait(), LINGER)
            batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
            self._last_batch = len(batch)
            try:
                outcomes = await self._commit(batch)
            except Exception as error:  # noqa: BLE001 - every socket must hear back
                log.warning("visitor messages not taken", error_type=type(error).__name__)
                outcomes = [UNAVAILABLE] * len(batch)
            for waiting, outcome in zip(batch, outcomes, strict=True):
                if not waiting.outcome.done():  # the socket may have gone meanwhile
                    waiting.outcome.set_result(outcome)

    async def _commit(self, batch: list[_Waiting]) -> list[_Outcome]:
        """Each message's outcome: known already (a resend), refused by the limits, or
        acknowledged once Kafka has every record of the batch and the mailbox stored it
        (all of the batch is ``unavailable`` otherwise)."""
        try:
            known: dict[str, Entry] | None = await self._mailboxes.find(
                w.inbound.message.message_id for w in batch
            )
        except PyMongoError:
            known = None  # publishing decides; storing below says if the database is away
        outcomes: list[_Outcome | None] = []
        for waiting in batch:
            message_id = waiting.inbound.message.message_id
            if known is not None and message_id in known:
                outcomes.append(_Outcome(known[message_id], resend=True))
                continue
            wait = self._limiter.admit(
                waiting.visitor.visitor_id, waiting.address, self._monotonic()
            )
            if wait > 0:
                outcomes.append(
                    _Outcome(code=ErrorCode.RATE_LIMITED, why="slow down", retry_after=wait)
                )
                continue
            outcomes.append(None)
        take = [w for w, o in zip(batch, outcomes, strict=True) if o is None]
        resent = [o.entry for o in outcomes if o is not None and o.resend and o.entry is not None]
        if resent:
            with contextlib.suppress(PyMongoError):  # its copy by seq, had its writer stopped
                await self._mailboxes.index(resent)
        if not take:
            return [o or UNAVAILABLE for o in outcomes]
        records = {
            w.inbound.message.message_id: Outgoing(
                INBOUND, w.inbound.key, w.inbound.message, event_id=w.inbound.message.message_id
            )
            for w in take
        }
        try:
            await self._publisher.publish(list(records.values()))
            entries = iter(
                await self._mailboxes.append(
                    [
                        NewEntry(
                            entry_id=w.inbound.message.message_id,
                            mailbox=w.mailbox,
                            sender="visitor",
                            text=w.send.text,
                            at=w.inbound.message.received_at,
                            client_id=w.send.client_id,
                        )
                        for w in take
                    ],
                    found=known,
                )
            )
        except (PublishUnavailableError, PyMongoError) as error:
            log.warning("visitor messages not taken", error_type=type(error).__name__)
            return [o or UNAVAILABLE for o in outcomes]
        return [o or _Outcome(next(entries)) for o in outcomes]

    async def _seen(self, session: Session, seq: int) -> None:
        """Report each reply up to ``seq`` delivered, once: claimed in the mailbox first,
        so two tabs (or replicas) saying ``seen`` together report it once; a report that
        fails gives its claim up for the next ``seen``. (A replica that dies between
        claim and report leaves that reply unreported: it was shown all the same.)"""
        now = self._clock()
        try:
            entries = await self._mailboxes.claim_unreported(session.mailbox, seq, now)
        except PyMongoError as error:
            log.warning("delivery not reported yet", error_type=type(error).__name__)
            return
        if not entries:
            return
        try:
            await self._publisher.publish(
                [
                    Outgoing(
                        OUTBOUND,
                        e.conversation_id,
                        DeliveryUpdated(
                            reply_id=e.reply_id,
                            conversation_id=e.conversation_id,
                            channel=Channel.WEBCHAT,
                            status=DeliveryStatus.DELIVERED,
                            provider_message_id=e.entry_id,
                            at=now,
                        ),
                        event_id=f"{e.entry_id}:delivered",
                    )
                    for e in entries
                    if e.reply_id and e.conversation_id
                ]
            )
        except PublishUnavailableError as error:
            log.warning("delivery not reported yet", error_type=type(error).__name__)
            with contextlib.suppress(PyMongoError):
                await self._mailboxes.unclaim_unreported(entries)
            return
        self._metrics.delivered.inc(len(entries))
        with contextlib.suppress(PyMongoError):  # claimed: never reported twice anyway
            await self._mailboxes.reported(entries)
