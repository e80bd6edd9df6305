"""Which team an agent belongs to, for metric labels (pure, plus one file reader).

Per-agent figures (handled conversations, handling time, occupancy, offer answers,
ratings) are labelled by team, never by customer. Agent ids as label values are an
operator's choice (``by_agent_id: true``): ids come and go, and every one is a series.
The router and the SLA monitor read the same file (``SWITCHBOARD_AGENT_GROUPS_FILE``), so
a team means the same agents in every figure.

.. code-block:: yaml

    groups:
      billing: [agent-ana, agent-bo]
      tier-1: [agent-cy]
    by_agent_id: false
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: The label of agents in no group, and of work no agent holds.
OTHER = "other"
NONE = "none"
#: At most this many groups: every one is a series per figure.
MAX_GROUPS = 100
_RESERVED = {OTHER, NONE}


class AgentGroupsError(ValueError):
    """The groups file is unreadable or invalid; the message names the file and why."""


@dataclass(frozen=True)
class AgentGroups:
    """Agent id -> the label its figures carry."""

    by_agent: Mapping[str, str] = field(default_factory=dict)
    by_agent_id: bool = False

    def label(self, agent_id: str | None) -> str:
        """The agent's group; their id when the operator opted in; ``other`` for agents
        in no group and ``none`` when no agent holds the work."""
        if not agent_id:
            return NONE
        group = self.by_agent.get(agent_id)
        if group is not None:
            return group
        return agent_id if self.by_agent_id else OTHER

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.by_agent.values())))


def parse_agent_groups(data: Any, *, source: str = "<agent groups>") -> AgentGroups:
    """Validate the file's content; an agent in two groups is refused, not guessed."""
    if data is None:
        return AgentGroups()
    if not isinstance(data, dict):
        raise AgentGroupsError(f"{source}: expected a mapping with `groups`")
    unknown = set(data) - {"groups", "by_agent_id"}
    if unknown:
        raise AgentGroupsError(f"{source}: unknown field(s) {', '.join(sorted(unknown))}")
    by_agent_id = data.get("by_agent_id", False)
    if not isinstance(by_agent_id, bool):
        raise AgentGroupsError(f"{source}: by_agent_id must be true or false")
    groups = data.get("groups") or {}
    if not isinstance(groups, dict):
        raise AgentGroupsError(f"{source}: groups must map a group name to agent ids")
    if len(groups) > MAX_GROUPS:
        raise AgentGroupsError(f"{source}: {len(groups)} groups; at most {MAX_GROUPS}")
    by_agent: dict[str, str] = {}
    for name, agents in groups.items():
        if not isinstance(name, str) or not name.strip() or name in _RESERVED:
            raise AgentGroupsError(f"{source}: group name {name!r} is empty or reserved")
        if not isinstance(agents, list) or not all(isinstance(a, str) and a for a in agents):
            raise AgentGroupsError(f"{source}: group {name!r} must list agent ids")
        for agent in agents:
            if by_agent.setdefault(agent, name) != name:
                raise AgentGroupsError(
                    f"{source}: agent {agent!r} is in {by_agent[agent]!r} and {name!r}"
                )
    return AgentGroups(by_agent=by_agent, by_agent_id=by_agent_id)


def load_agent_groups(path: Path | None) -> AgentGroups:
    """The groups from a YAML file; no file means every agent is ``other``."""
    if path is None:
        return AgentGroups()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise AgentGroupsError(f"{path}: cannot read ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise AgentGroupsError(f"{path}: not YAML ({error})") from None
    return parse_agent_groups(data, source=str(path))
