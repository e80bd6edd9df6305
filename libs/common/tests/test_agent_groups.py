"""Agent groups: the bounded labels of per-agent figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchboard_common.agent_groups import (
    MAX_GROUPS,
    AgentGroups,
    AgentGroupsError,
    load_agent_groups,
    parse_agent_groups,
)

pytestmark = pytest.mark.unit


def test_agents_are_labelled_by_group_and_ids_only_when_the_operator_opts_in() -> None:
    groups = parse_agent_groups({"groups": {"billing": ["ana", "bo"], "tier-1": ["cy"]}})
    assert [groups.label(a) for a in ("ana", "bo", "cy", "dee", None)] == [
        "billing",
        "billing",
        "tier-1",
        "other",
        "none",
    ]
    assert groups.groups == ("billing", "tier-1")
    opted_in = parse_agent_groups({"groups": {"billing": ["ana"]}, "by_agent_id": True})
    assert (opted_in.label("ana"), opted_in.label("dee")) == ("billing", "dee")
    assert AgentGroups().label("ana") == "other"


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"groups": {"a": ["x"], "b": ["x"]}}, "agent 'x' is in 'a' and 'b'"),
        ({"groups": {"other": ["x"]}}, "reserved"),
        ({"groups": {"a": "x"}}, "must list agent ids"),
        ({"team": {}}, "unknown field"),
        ({"by_agent_id": "yes"}, "true or false"),
        ({"groups": {f"g{i}": [f"a{i}"] for i in range(MAX_GROUPS + 1)}}, "at most"),
        (["a"], "expected a mapping"),
    ],
)
def test_invalid_groups_are_refused_with_the_reason(data: object, problem: str) -> None:
    with pytest.raises(AgentGroupsError, match=problem):
        parse_agent_groups(data, source="groups.yaml")


def test_the_file_is_read_and_its_problems_named(tmp_path: Path) -> None:
    path = tmp_path / "groups.yaml"
    path.write_text("groups:\n  billing: [ana]\n")
    assert load_agent_groups(path).label("ana") == "billing"
    assert load_agent_groups(None).label("ana") == "other"
    with pytest.raises(AgentGroupsError, match="cannot read"):
        load_agent_groups(tmp_path / "missing.yaml")
    path.write_text("groups: [unclosed\n")
    with pytest.raises(AgentGroupsError, match="not YAML"):
        load_agent_groups(path)
