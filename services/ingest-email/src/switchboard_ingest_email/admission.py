"""What the SMTP server takes on, decided in one place: sessions, message rate, memory.

Every SMTP sender may send up to the maximum message size, and turning a message into
an event costs several times its size (the MIME parse keeps lines, decoded text and
parts). Unbounded, a few hundred senders of large messages exhaust the process's memory.
With these rules the peak is computable (``Limits.worst_case_bytes``):

    peak <= baseline + max_sessions x SESSION_BYTES + memory budget

- a connection over ``max_sessions`` or ``max_sessions_per_client``: refused (SMTP 421);
- ``MAIL FROM`` over the client's message rate: deferred (451 4.7.1);
- ``RCPT TO`` beyond ``max_recipients``: 452 4.5.3 (RFC 5321 4.5.3.1.10), the sender
  sends the rest in another transaction;
- ``DATA``: the message's cost (``message_cost``) is reserved from the memory budget
  before ``354``, for the declared ``SIZE`` (``UNDECLARED_SIZE`` without one), and grows
  with the data actually received. What does not fit is deferred (451 4.3.1) before
  any data is read, or at the end of the data (which is discarded while read). The
  reservation is held until the reply, so the parse, store and publish are covered.

Pure: no I/O, the clock is injected.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from switchboard_common.ratelimit import ClientBuckets

KIB = 1024
MIB = 1024 * KIB

#: Peak bytes of memory per byte of message, from receipt to the 250: the received bytes
#: (twice while they become one ``bytes``), the MIME parse (measured 7.7x the raw size
#: for a 24 MiB message with a base64 attachment, 8.3x for quoted-printable text) and the
#: raw store's chunk copies and their BSON encoding.
MEMORY_PER_MESSAGE_BYTE = 12
#: Fixed cost of one message besides its bytes (envelope, parse objects, event, record).
MESSAGE_BYTES = 256 * KIB
#: Worst case of one open session besides its message: the stream buffer (up to twice
#: the 64 KiB line limit before reading pauses, plus one 256 KiB socket read), the
#: protocol, its task and transport.
SESSION_BYTES = 512 * KIB
#: Memory of the process before any session (interpreter, libraries, clients); used to
#: derive the budget from a memory limit. Measured ~80 MiB at start; the margin is for
#: what grows with use (allocator arenas, caches, client buffers).
BASELINE_BYTES = 160 * MIB
#: Size assumed for a message without a declared ``SIZE`` (real MTAs declare it); the
#: reservation grows as its data arrives.
UNDECLARED_SIZE = 1 * MIB

SessionRefusal = Literal["too_many_sessions", "too_many_sessions_per_ip"]


def message_cost(size: int) -> int:
    """Bytes of memory a message of ``size`` bytes may need at its peak."""
    return size * MEMORY_PER_MESSAGE_BYTE + MESSAGE_BYTES


@dataclass(frozen=True)
class Limits:
    """The configured bounds (from ``IngestEmailSettings.limits``)."""

    max_sessions: int
    max_sessions_per_client: int
    messages_per_client_per_minute: int
    max_recipients: int
    max_message_bytes: int
    memory_budget_bytes: int
    #: The memory the process may use (the container's limit).
    memory_limit_bytes: int

    @staticmethod
    def budget_for(memory_limit_bytes: int, max_sessions: int) -> int:
        """The memory budget that fits a process under ``memory_limit_bytes``."""
        return memory_limit_bytes - BASELINE_BYTES - max_sessions * SESSION_BYTES

    def worst_case_bytes(self, baseline_bytes: int = BASELINE_BYTES) -> int:
        """Peak memory with every session open and the budget in use."""
        return baseline_bytes + self.max_sessions * SESSION_BYTES + self.memory_budget_bytes

    def problem(self) -> str | None:
        """Why these limits cannot work, or None."""
        largest = message_cost(self.max_message_bytes)
        if self.worst_case_bytes() > self.memory_limit_bytes:
            return (
                f"the worst case ({self.worst_case_bytes()} bytes = {BASELINE_BYTES} + "
                f"INGEST_EMAIL_MAX_SESSIONS x {SESSION_BYTES} + the memory budget) exceeds "
                f"INGEST_EMAIL_MEMORY_LIMIT_BYTES ({self.memory_limit_bytes}): lower the "
                "sessions or the budget, or raise the limit"
            )
        if self.memory_budget_bytes < largest:
            return (
                f"the memory budget ({self.memory_budget_bytes} bytes) is smaller than what "
                f"one message of the maximum size needs ({largest} bytes = "
                f"{MEMORY_PER_MESSAGE_BYTE} x INGEST_EMAIL_MAX_MESSAGE_BYTES + "
                f"{MESSAGE_BYTES}), so such messages would be deferred forever: raise the "
                "budget (or the memory limit) or lower INGEST_EMAIL_MAX_MESSAGE_BYTES"
            )
        return None


@dataclass
class Reservation:
    """Memory reserved for one message: enough for ``size`` bytes of it."""

    size: int
    cost: int
    released: bool = False


@dataclass
class Admission:
    """The running state of the limits: open sessions, client message rates, memory."""

    limits: Limits
    clock: Callable[[], float] = time.monotonic
    sessions: int = 0
    reserved_bytes: int = 0
    _per_client: dict[str, int] = field(default_factory=dict)
    rates: ClientBuckets = field(init=False)

    def __post_init__(self) -> None:
        self.rates = ClientBuckets(self.limits.messages_per_client_per_minute)

    # ---------------------------------------------------------------- sessions

    def open_session(self, client: str) -> SessionRefusal | None:
        """Admit a new connection from ``client`` (its IP address): None, or why not."""
        open_here = self._per_client.get(client, 0)
        if self.sessions >= self.limits.max_sessions:
            return "too_many_sessions"
        if open_here >= self.limits.max_sessions_per_client:
            return "too_many_sessions_per_ip"
        self.sessions += 1
        self._per_client[client] = open_here + 1
        return None

    def close_session(self, client: str) -> None:
        """A session admitted by ``open_session`` ended."""
        self.sessions -= 1
        left = self._per_client.get(client, 1) - 1
        if left > 0:
            self._per_client[client] = left
        else:
            self._per_client.pop(client, None)

    # ---------------------------------------------------------------- message rate

    def allow_message(self, client: str) -> bool:
        """One more transaction from ``client`` now? A token bucket per client: a
        minute's worth of messages at once, refilled at the per-minute rate."""
        bucket = self.rates.bucket(client, self.clock())
        if bucket.wait() > 0:
            return False
        bucket.take()
        return True

    # ---------------------------------------------------------------- memory

    def reserve(self, declared_size: int | None) -> Reservation | None:
        """Reserve memory for a message about to be sent (at ``DATA``), or None."""
        size = min(declared_size or UNDECLARED_SIZE, self.limits.max_message_bytes)
        cost = message_cost(size)
        if self.reserved_bytes + cost > self.limits.memory_budget_bytes:
            return None
        self.reserved_bytes += cost
        return Reservation(size, cost)

    def grow(self, reservation: Reservation, size: int) -> bool:
        """Cover ``size`` bytes of the message (more arrived than reserved for): by
        doubling, so a message without a declared size asks only a few times, else by
        what is left of the budget in 64 KiB steps."""
        if size <= reservation.size:
            return True
        if size > self.limits.max_message_bytes:
            return False  # refused as too large anyway
        step = 64 * KIB
        largest = self.limits.max_message_bytes
        for wanted in (
            min(max(size, 2 * reservation.size), largest),
            min(-(-size // step) * step, largest),
        ):
            extra = message_cost(wanted) - reservation.cost
            if self.reserved_bytes + extra <= self.limits.memory_budget_bytes:
                self.reserved_bytes += extra
                reservation.size, reservation.cost = wanted, reservation.cost + extra
                return True
        return False

    def release(self, reservation: Reservation) -> None:
        """The message got its reply; its memory is free (idempotent)."""
        if not reservation.released:
            reservation.released = True
            self.reserved_bytes -= reservation.cost
