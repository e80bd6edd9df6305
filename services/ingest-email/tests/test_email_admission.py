"""The SMTP admission rules (pure): sessions, per-client message rate, the memory budget."""

from __future__ import annotations

import pytest

from switchboard_common.settings import SettingsError
from switchboard_ingest_email.admission import (
    BASELINE_BYTES,
    MESSAGE_BYTES,
    MIB,
    SESSION_BYTES,
    UNDECLARED_SIZE,
    Admission,
    Limits,
    message_cost,
)
from switchboard_ingest_email.settings import IngestEmailSettings

pytestmark = pytest.mark.unit


def limits(**changes: int) -> Limits:
    values = {
        "max_sessions": 3,
        "max_sessions_per_client": 2,
        "messages_per_client_per_minute": 6,
        "max_recipients": 100,
        "max_message_bytes": 4 * MIB,
        "memory_budget_bytes": message_cost(4 * MIB) + message_cost(1 * MIB),
        "memory_limit_bytes": 1024 * MIB,
        **changes,
    }
    return Limits(**values)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sessions_are_bounded_in_total_and_per_client() -> None:
    admission = Admission(limits())
    assert admission.open_session("192.0.2.1") is None
    assert admission.open_session("192.0.2.1") is None
    assert admission.open_session("192.0.2.1") == "too_many_sessions_per_ip"
    assert admission.open_session("192.0.2.2") is None
    assert admission.open_session("192.0.2.3") == "too_many_sessions"
    assert admission.sessions == 3

    admission.close_session("192.0.2.1")
    assert admission.open_session("192.0.2.3") is None  # a freed place is taken again
    assert admission.open_session("192.0.2.1") == "too_many_sessions"
    for client in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        admission.close_session(client)
    assert admission.sessions == 0
    assert admission.open_session("192.0.2.1") is None
    assert admission.open_session("192.0.2.1") is None  # the per-client count went back too


def test_message_rate_allows_a_minutes_burst_then_refills_per_client() -> None:
    clock = Clock()
    admission = Admission(limits(messages_per_client_per_minute=6), clock=clock)
    assert [admission.allow_message("192.0.2.1") for _ in range(7)] == [True] * 6 + [False]
    assert admission.allow_message("192.0.2.2")  # another client has its own allowance
    clock.now += 9  # 6 a minute: one more every 10 seconds
    assert not admission.allow_message("192.0.2.1")
    clock.now += 1
    assert admission.allow_message("192.0.2.1")
    assert not admission.allow_message("192.0.2.1")
    clock.now += 3600  # refills only up to a minute's worth
    assert [admission.allow_message("192.0.2.1") for _ in range(7)] == [True] * 6 + [False]


def test_the_rate_table_stays_bounded_and_forgets_refilled_clients_first() -> None:
    clock = Clock()
    admission = Admission(limits(messages_per_client_per_minute=6), clock=clock)
    for n in range(10_000):
        admission.allow_message(f"a{n}")
    clock.now += 11  # the a-clients have their one message back: as good as unknown
    for n in range(20_000):
        admission.allow_message(f"b{n}")
        assert len(admission.rates) <= 10_000
    assert "a0" not in admission.rates
    assert "b19999" in admission.rates


def test_memory_is_reserved_for_the_declared_size_and_released() -> None:
    admission = Admission(limits())
    big = admission.reserve(4 * MIB)
    assert big is not None
    assert (big.size, big.cost) == (4 * MIB, 4 * MIB * 12 + MESSAGE_BYTES)
    small = admission.reserve(None)
    assert small is not None
    assert small.size == UNDECLARED_SIZE
    assert admission.reserved_bytes == admission.limits.memory_budget_bytes
    assert admission.reserve(1) is None  # the budget is spent
    admission.release(big)
    admission.release(big)  # twice is once
    assert admission.reserved_bytes == small.cost
    assert admission.reserve(10 * MIB) is not None  # capped at the maximum message size


def test_a_reservation_grows_with_the_data_while_the_budget_allows() -> None:
    admission = Admission(limits())
    reservation = admission.reserve(None)
    assert reservation is not None
    assert admission.grow(reservation, 1000)  # within what was reserved
    assert reservation.size == UNDECLARED_SIZE
    assert admission.grow(reservation, UNDECLARED_SIZE + 1)
    assert reservation.size == 2 * UNDECLARED_SIZE  # doubled: few asks for big messages
    assert admission.reserved_bytes == reservation.cost == message_cost(2 * MIB)

    other = admission.reserve(2 * MIB)
    assert other is not None
    # Doubling to 4 MiB does not fit any more; what is needed (in 64 KiB steps) does.
    assert admission.grow(reservation, 2 * MIB + 100)
    assert reservation.size == 2 * MIB + 64 * 1024
    assert not admission.grow(reservation, 3 * MIB + 1)  # nothing left for that
    assert reservation.size == 2 * MIB + 64 * 1024
    assert admission.reserved_bytes == reservation.cost + other.cost
    assert not admission.grow(reservation, 4 * MIB + 1)  # over the maximum message size


def test_limits_say_what_cannot_work_and_compute_the_worst_case() -> None:
    fine = limits()
    assert fine.problem() is None
    assert fine.worst_case_bytes() == BASELINE_BYTES + 3 * SESSION_BYTES + (
        message_cost(4 * MIB) + message_cost(1 * MIB)
    )
    too_small = limits(memory_budget_bytes=message_cost(4 * MIB) - 1)
    assert "smaller than what one message of the maximum size needs" in (too_small.problem() or "")
    over = limits(memory_limit_bytes=fine.worst_case_bytes() - 1)
    assert "exceeds INGEST_EMAIL_MEMORY_LIMIT_BYTES" in (over.problem() or "")
    budget = Limits.budget_for(512 * MIB, 100)
    assert budget == 512 * MIB - BASELINE_BYTES - 100 * SESSION_BYTES
    assert limits(memory_budget_bytes=budget, max_sessions=100,
                  memory_limit_bytes=512 * MIB).worst_case_bytes() == 512 * MIB  # fmt: skip


def test_settings_derive_the_budget_from_the_memory_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SUPPORT_EMAIL_DOMAINS", "support.example.com")
    default = IngestEmailSettings.load().limits
    assert default.memory_limit_bytes == 512 * MIB
    assert default.memory_budget_bytes == Limits.budget_for(512 * MIB, 100)
    assert default.worst_case_bytes() <= default.memory_limit_bytes
    assert (default.max_sessions, default.max_sessions_per_client) == (100, 20)
    assert (default.messages_per_client_per_minute, default.max_recipients) == (300, 100)

    monkeypatch.setenv("INGEST_EMAIL_MEMORY_LIMIT_BYTES", str(1024 * MIB))
    monkeypatch.setenv("INGEST_EMAIL_MAX_SESSIONS", "300")
    assert IngestEmailSettings.load().limits.memory_budget_bytes == Limits.budget_for(
        1024 * MIB, 300
    )
    monkeypatch.setenv("INGEST_EMAIL_MEMORY_BUDGET_BYTES", str(400 * MIB))
    assert IngestEmailSettings.load().limits.memory_budget_bytes == 400 * MIB

    monkeypatch.setenv("INGEST_EMAIL_MEMORY_BUDGET_BYTES", str(900 * MIB))
    with pytest.raises(SettingsError, match="exceeds INGEST_EMAIL_MEMORY_LIMIT_BYTES"):
        IngestEmailSettings.load()
    monkeypatch.delenv("INGEST_EMAIL_MEMORY_BUDGET_BYTES")
    monkeypatch.setenv("INGEST_EMAIL_MEMORY_LIMIT_BYTES", str(256 * MIB))
    with pytest.raises(SettingsError, match="maximum size"):
        IngestEmailSettings.load()
