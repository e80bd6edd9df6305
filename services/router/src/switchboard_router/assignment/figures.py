"""Per-agent figures from the router's own decisions and views: conversations handled,
handling time, offer answers (counted as the executor's claimed steps finish, no round
trip of their own) and occupancy (load and capacity of online agents, set with the
other gauges from the load the gauge round reads anyway). Labelled by agent group."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from switchboard_common.agent_groups import AgentGroups
from switchboard_router.assignment.decide import Change
from switchboard_router.assignment.model import Agent
from switchboard_router.metrics import AgentMetrics

#: The offer outcomes of decisions as the per-agent figure names them.
OFFER_OUTCOMES = {"accepted": "accepted", "rejected": "rejected", "timed_out": "expired"}


def occupancy(
    agents: Iterable[Agent], load: Mapping[tuple[str, str], int], groups: AgentGroups
) -> dict[str, tuple[int, int]]:
    """Per group: (conversations held, capacity) summed over these (online) agents and
    their channels; ``load`` is slots held per (agent, channel), as the database has them
    (total-capacity units, channel ``*``, are not conversations)."""
    out: dict[str, tuple[int, int]] = {}
    for agent in agents:
        group = groups.label(agent.agent_id)
        held = sum(load.get((agent.agent_id, str(c)), 0) for c in agent.capacity)
        room = sum(agent.capacity.values())
        if agent.total_capacity is not None:  # a cap over all channels binds first
            room = min(room, agent.total_capacity)
        used, capacity = out.get(group, (0, 0))
        out[group] = (used + held, capacity + room)
    return out


class AgentFigures:
    """The per-agent metrics and the groups that label them."""

    def __init__(self, metrics: AgentMetrics, groups: AgentGroups) -> None:
        self.metrics = metrics
        self.groups = groups
        #: Groups whose gauges were set: one whose agents all left reads 0, not stale.
        self._shown: set[str] = set(groups.groups)

    def record(self, change: Change) -> None:
        """What a claimed step says about an agent's work."""
        channel = change.after.channel.value
        done = change.handled
        if done is not None:
            group = self.groups.label(done.agent_id)
            if done.resolved:
                self.metrics.conversations_handled.labels(group, channel).inc()
            if done.seconds is not None:
                self.metrics.handling_seconds.labels(group, channel).observe(done.seconds)
        outcome = OFFER_OUTCOMES.get(change.offer or "")
        if outcome is not None and change.offered_to:
            group = self.groups.label(change.offered_to)
            self.metrics.offers.labels(group, outcome).inc()

    def show_occupancy(self, agents: Iterable[Agent], load: Mapping[tuple[str, str], int]) -> None:
        figures = occupancy(agents, load, self.groups)
        self._shown |= set(figures)
        for group in sorted(self._shown):
            used, capacity = figures.get(group, (0, 0))
            self.metrics.load.labels(group).set(used)
            self.metrics.capacity.labels(group).set(capacity)
