"""A column store of the agents for matching at scale (numpy), kept by ``AgentDirectory``.

``choose_agent`` (pure Python) is the definition of the choice. Scoring 10,000 agents one
by one in Python costs ~20 ms, more than the database work of a decision, so the index
computes eligibility and the score of all agents at once in numpy, keeps those with the
best score (with a margin for rounding), of each score only the first few in tie order,
and hands them to ``choose_agent``, which re-scores them exactly and breaks the ties. The
result is the same agent as ``choose_agent`` over all candidates
(``test_matcher_index.py`` checks that property), at a cost that hardly grows with the
number of agents.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

import numpy as np
import numpy.typing as npt

from switchboard_common.contract import AgentStatus, Channel
from switchboard_router.assignment.matcher import (
    Candidate,
    Choice,
    Requirements,
    choose_agent,
    requirements,
)
from switchboard_router.assignment.model import Agent, RouteState
from switchboard_router.assignment.policy import RoutingPolicy

#: Finalists per distinct score handed to the exact matcher.
FINALISTS = 16
TOTAL = "*"

IntArray = npt.NDArray[np.int32]
FloatArray = npt.NDArray[np.float64]


class AgentIndex:
    """Per-agent rows: capacity (0 when not online) and load per channel, total capacity
    and load, tenant, last assignment (epoch ms) and one level column per skill."""

    def __init__(self) -> None:
        self.rows: dict[str, int] = {}
        self.ids: list[str] = []
        self._size = 0
        self._capacity = 64
        self.cap: dict[str, IntArray] = {}
        self.load: dict[str, IntArray] = {}
        self.total_cap = np.full(self._capacity, -1, dtype=np.int32)
        self.total_load = np.zeros(self._capacity, dtype=np.int32)
        self.tenant = np.zeros(self._capacity, dtype=np.int32)
        self.last_ms = np.full(self._capacity, np.nan, dtype=np.float64)
        self.levels: dict[str, IntArray] = {}
        self._tenants: dict[str, int] = {}
        self._ranks: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self._ranks_dirty = True

    def _grow(self) -> None:
        old, new = self._capacity, self._capacity * 2

        def ints(array: IntArray, fill: int) -> IntArray:
            out = np.full(new, fill, dtype=np.int32)
            out[:old] = array
            return out

        for table in (self.cap, self.load, self.levels):
            for key, array in table.items():
                table[key] = ints(array, 0)
        self.total_cap = ints(self.total_cap, -1)
        self.total_load = ints(self.total_load, 0)
        self.tenant = ints(self.tenant, 0)
        last = np.full(new, np.nan, dtype=np.float64)
        last[:old] = self.last_ms
        self.last_ms = last
        self._capacity = new

    def _row(self, agent_id: str) -> int:
        row = self.rows.get(agent_id)
        if row is None:
            if self._size == self._capacity:
                self._grow()
            row = self._size
            self._size += 1
            self.rows[agent_id] = row
            self.ids.append(agent_id)
            self._ranks_dirty = True
        return row

    def _column(self, table: dict[str, IntArray], key: str) -> IntArray:
        column = table.get(key)
        if column is None:
            column = np.zeros(self._capacity, dtype=np.int32)
            table[key] = column
        return column

    def update_agent(self, agent: Agent) -> None:
        row = self._row(agent.agent_id)
        online = agent.status == AgentStatus.ONLINE
        for channel in Channel:
            self._column(self.cap, channel)[row] = agent.capacity.get(channel, 0) if online else 0
        self.total_cap[row] = -1 if agent.total_capacity is None else agent.total_capacity
        self.tenant[row] = self._tenant_code(agent.tenant)
        for column in self.levels.values():
            column[row] = 0
        for skill, level in agent.levels.items():
            self._column(self.levels, skill)[row] = level

    def _tenant_code(self, tenant: str | None) -> int:
        if tenant is None:
            return 0
        return self._tenants.setdefault(tenant, len(self._tenants) + 1)

    def set_load(self, agent_id: str, channel: str, load: int) -> None:
        row = self._row(agent_id)
        if channel == TOTAL:
            self.total_load[row] = load
        else:
            self._column(self.load, channel)[row] = load

    def set_last(self, agent_id: str, at: datetime | None) -> None:
        self.last_ms[self._row(agent_id)] = np.nan if at is None else _ms(at)

    def near_best(
        self,
        conversation: RouteState,
        policy: RoutingPolicy,
        now: datetime,
        skip: Iterable[str] = (),
        needs: Requirements | None = None,
    ) -> tuple[list[str], int]:
        """Agent ids that may be the best (the sticky agent included when eligible), and
        how many agents are eligible."""
        needs = requirements(conversation, policy, now) if needs is None else needs
        mask = self._eligible(conversation, needs, policy, skip)
        rows = np.flatnonzero(mask)
        if rows.size == 0:
            return [], 0
        channel = str(conversation.channel)
        cap = self.cap[channel]
        load = self._column(self.load, channel)
        weights = policy.scoring
        if needs.ideal:
            fit_sum = np.zeros(rows.size, dtype=np.float64)
            for skill in needs.ideal:
                column = self.levels.get(skill)
                if column is not None:
                    fit_sum += np.minimum(column[rows], 10)
            fit: FloatArray | float = fit_sum / (10 * len(needs.ideal))
        else:
            fit = 1.0
        spare = (cap[rows] - load[rows]) / cap[rows]
        waited = np.clip((_ms(now) - self.last_ms[rows]) / 1000.0, 0.0, weights.idle_cap_seconds)
        idle = np.where(np.isnan(waited), 1.0, waited / weights.idle_cap_seconds)
        raw = weights.skill_fit * fit + weights.spare_capacity * spare + weights.idle_time * idle
        # ``score`` rounds to 9 decimals; numpy may round a hair differently, so keep every
        # score within two units of the best, and of each such score only the agents first
        # in tie order (idle longer, then smaller id): many agents often tie exactly.
        rounded = np.round(raw, 9)
        near = rounded >= rounded.max() - 2.5e-9
        finalists: npt.NDArray[np.intp] = rows[near]
        if finalists.size > FINALISTS:
            finalists = self._first_in_tie_order(finalists, rounded[near])
        chosen = {self.ids[int(r)] for r in finalists}
        sticky = conversation.sticky_agent
        if sticky is not None and sticky in self.rows and mask[self.rows[sticky]]:
            chosen.add(sticky)
        return sorted(chosen), int(rows.size)

    def _first_in_tie_order(
        self, rows: npt.NDArray[np.intp], rounded: FloatArray
    ) -> npt.NDArray[np.intp]:
        """Of each distinct score, the ``FINALISTS`` rows first in tie order."""
        if self._ranks_dirty:
            order = sorted(range(self._size), key=self.ids.__getitem__)
            self._ranks = np.empty(self._capacity, dtype=np.int64)
            self._ranks[order] = np.arange(self._size)
            self._ranks_dirty = False
        last = self.last_ms[rows]
        idle_order = np.where(np.isnan(last), -np.inf, last)
        keep = []
        for value in np.unique(rounded):
            group = rows[rounded == value]
            group_last = idle_order[rounded == value]
            ranked = np.lexsort((self._ranks[group], group_last))
            keep.append(group[ranked[:FINALISTS]])
        return np.concatenate(keep)

    def _eligible(
        self,
        conversation: RouteState,
        needs: Requirements,
        policy: RoutingPolicy,
        skip: Iterable[str],
    ) -> npt.NDArray[np.bool_]:
        """The rules of ``matcher.is_eligible``, for every row at once."""
        n = self._size
        channel = str(conversation.channel)
        mask: npt.NDArray[np.bool_] = (
            self._column(self.cap, channel)[:n] > self._column(self.load, channel)[:n]
        )
        weight = policy.capacity.weight(conversation.channel)
        total_cap = self.total_cap[:n]
        mask &= (total_cap < 0) | (self.total_load[:n] + weight <= total_cap)
        for skill, level in needs.skills.items():
            column = self.levels.get(skill)
            mask &= False if column is None else column[:n] >= level
        if conversation.tenant:
            code = self._tenants.get(conversation.tenant, -1)
            mask &= (self.tenant[:n] == 0) | (self.tenant[:n] == code)
        for agent_id in [*conversation.excluded_agents, *skip]:
            row = self.rows.get(agent_id)
            if row is not None:
                mask[row] = False
        if needs.only_agent is not None:
            only = self.rows.get(needs.only_agent)
            keep = only is not None and bool(mask[only])
            mask[:] = False
            if keep and only is not None:
                mask[only] = True
        return mask

    def choose(
        self,
        conversation: RouteState,
        policy: RoutingPolicy,
        now: datetime,
        candidate: Callable[[str, str], Candidate | None],
        skip: Iterable[str] = (),
    ) -> Choice | None:
        """The same choice as ``choose_agent`` over every candidate, computed on the few
        near the best score (``candidate`` builds one from the directory)."""
        needs = requirements(conversation, policy, now)
        ids, eligible = self.near_best(conversation, policy, now, skip, needs)
        if not ids:
            return None
        finalists = [c for c in (candidate(i, str(conversation.channel)) for i in ids) if c]
        choice = choose_agent(conversation, finalists, policy, now, needs)
        if choice is not None:
            choice.reason["eligible_agents"] = eligible
        return choice


def _ms(moment: datetime) -> float:
    """Epoch milliseconds. Finalists are re-scored exactly, so float precision is enough."""
    return moment.timestamp() * 1000.0
