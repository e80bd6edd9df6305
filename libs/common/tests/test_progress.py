"""When a consumer counts as stalled: the pure part of ``switchboard_common.progress``."""

from __future__ import annotations

import pytest

from switchboard_common.progress import ConsumerProgress

pytestmark = pytest.mark.unit


def test_an_idle_consumer_is_never_stalled_however_long_since_its_last_batch() -> None:
    progress = ConsumerProgress(stall_after=60)
    progress.batch_started(0)
    progress.batch_finished(1, committed=True)
    progress.lag_sampled(0, 10_000)
    assert not progress.stalled(10_000)


def test_the_stall_clock_starts_when_work_arrives_not_at_the_last_batch() -> None:
    progress = ConsumerProgress(stall_after=60, last_progress=0)
    progress.lag_sampled(3, 1_000)  # records arrive after a long idle spell
    assert progress.stalled_for(1_030) == 30
    assert not progress.stalled(1_030)
    assert progress.stalled(1_061)


def test_a_batch_held_in_the_handler_stalls_and_a_finished_one_resets_the_clock() -> None:
    progress = ConsumerProgress(stall_after=60)
    progress.batch_started(100)
    assert progress.stalled(161)
    progress.batch_finished(170, committed=False)  # gave up: redelivered, no progress
    assert progress.stalled(170)
    progress.lag_sampled(1, 171)
    assert progress.stalled(171)
    progress.batch_started(172)
    progress.batch_finished(173, committed=True)
    assert progress.stalled_for(200) == 27  # records still waiting, progress made at 173
    progress.lag_sampled(0, 201)
    assert progress.stalled_for(500) == 0
