"""Policy files: the shipped defaults, first-match order, and clear errors."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest

from switchboard_common.contract import Channel, Priority, SlaMetric
from switchboard_sla_monitor.policy import Labels, PolicyError, load_policies, parse_duration
from switchboard_sla_monitor.settings import DEFAULT_POLICY_FILE, SlaMonitorSettings

pytestmark = pytest.mark.unit


def test_the_shipped_defaults_follow_common_practice() -> None:
    policies = load_policies(DEFAULT_POLICY_FILE)

    def first_response(**labels: object) -> timedelta:
        policy = policies.select(Labels(**labels))  # type: ignore[arg-type]
        assert policy is not None
        return policy.targets[SlaMetric.FIRST_RESPONSE].target

    assert first_response(channel=Channel.WHATSAPP) == timedelta(minutes=5)
    # Live chat on the shop's own pages is chat: minutes, not the hour social media gets.
    assert first_response(channel=Channel.WEBCHAT) == timedelta(minutes=5)
    assert first_response(channel=Channel.WEBCHAT, priority=Priority.URGENT) == timedelta(minutes=2)
    assert first_response(channel=Channel.X) == timedelta(hours=1)
    assert first_response(channel=Channel.EMAIL) == timedelta(hours=24)
    assert first_response(channel=Channel.EMAIL, priority=Priority.URGENT) < timedelta(hours=1)
    assert first_response(channel=Channel.TELEGRAM, priority=Priority.URGENT) < timedelta(minutes=5)
    assert first_response() == timedelta(hours=24)  # the catch-all
    for policy in policies.policies:
        assert set(policy.targets) == set(SlaMetric)


def test_the_first_matching_policy_wins(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        """
calendars: {always: {always_open: true}}
policies:
  - {name: vip, match: {customer_tier: [vip]}, calendar: always,
     targets: {first_response: {target: 1m}}}
  - {name: billing-high, match: {queue: [billing], priority: [high, urgent]}, calendar: always,
     targets: {first_response: {target: 2m}}}
  - {name: acme, match: {tenant: [acme]}, calendar: always,
     targets: {first_response: {target: 3m}}}
"""
    )
    policies = load_policies(path)

    def name(**labels: object) -> str | None:
        policy = policies.select(Labels(**labels))  # type: ignore[arg-type]
        return policy.name if policy else None

    assert name(customer_tier="vip", queue="billing", priority=Priority.HIGH) == "vip"
    assert name(queue="billing", priority=Priority.HIGH, tenant="acme") == "billing-high"
    assert name(queue="billing", priority=Priority.LOW, tenant="acme") == "acme"
    assert name(queue="billing", priority=Priority.LOW) is None


def test_holidays_from_dates_and_icalendar_files(tmp_path: Path) -> None:
    (tmp_path / "holidays.ics").write_text(
        "BEGIN:VCALENDAR\nBEGIN:VEVENT\nDTSTART;VALUE=DATE:20261208\nEND:VEVENT\nEND:VCALENDAR\n"
    )
    (tmp_path / "p.yaml").write_text(
        """
calendars:
  madrid:
    timezone: Europe/Madrid
    hours: {monday: ["09:00-14:00", "15:00-18:00"], tuesday: ["09:00-14:00"]}
    holidays: [2026-12-25, {date: 2026-12-26, name: Boxing Day}]
    holiday_files: [holidays.ics]
policies:
  - {name: all, calendar: madrid, targets: {resolution: {target: 2d, warn_before: 4h}}}
"""
    )
    calendar = load_policies(tmp_path / "p.yaml").calendars["madrid"]
    assert calendar.holidays == {date(2026, 12, 25), date(2026, 12, 26), date(2026, 12, 8)}
    assert [str(s) for s in calendar.weekly[0]] == ["09:00-14:00", "15:00-18:00"]


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (
            "calendars: {a: {always_open: true}}\npolicies: []",
            "policies: List should have at least 1",
        ),
        (
            "calendars: {a: {timezone: Mars/Olympus, always_open: true}}\n"
            "policies: [{name: p, calendar: a, targets: {first_response: {target: 5m}}}]",
            "calendars.a.timezone: unknown time zone 'Mars/Olympus'",
        ),
        (
            "calendars: {a: {hours: {monday: ['17:00-09:00']}}}\n"
            "policies: [{name: p, calendar: a, targets: {first_response: {target: 5m}}}]",
            "calendars.a.hours.monday: '17:00-09:00' must start before it ends",
        ),
        (
            "calendars: {a: {hours: {monday: ['09:00-13:00', '12:00-18:00']}}}\n"
            "policies: [{name: p, calendar: a, targets: {first_response: {target: 5m}}}]",
            "calendars.a.hours.monday: shifts 09:00-13:00 and 12:00-18:00 overlap",
        ),
        (
            "calendars: {a: {timezone: UTC}}\n"
            "policies: [{name: p, calendar: a, targets: {first_response: {target: 5m}}}]",
            "calendars.a: needs hours",
        ),
        (
            "calendars: {a: {always_open: true}}\n"
            "policies: [{name: p, calendar: b, targets: {first_response: {target: 5m}}}]",
            r"policies\[0\] \(p\).targets.first_response.calendar: unknown calendar 'b'",
        ),
        (
            "calendars: {a: {always_open: true}}\n"
            "policies: [{name: p, calendar: a, targets: {first_response: {target: 5m, "
            "warn_before: 5m}}}]",
            "first_response.warn_before: must be at least zero and shorter than the target",
        ),
        (
            "calendars: {a: {always_open: true}}\n"
            "policies: [{name: p, calendar: a, targets: {first_response: {target: soon}}}]",
            r"policies\[0\].targets.first_response.target: Value error, expected a duration",
        ),
        (
            "calendars: {a: {always_open: true}}\n"
            "policies: [{name: p, calendar: a, match: {channel: [fax]}, "
            "targets: {first_response: {target: 5m}}}]",
            r"policies\[0\].match.channel\[0\]: Input should be 'email'",
        ),
        (
            "calendars: {a: {always_open: true}}\n"
            "policies: [{name: p, calendar: a, targets: {first_response: {target: 5m}}},"
            " {name: p, calendar: a, targets: {resolution: {target: 5m}}}]",
            r"policies\[1\] \(p\).name: duplicate policy name",
        ),
        (
            "calendars: {a: {always_open: true, holiday_files: [missing.ics]}}\n"
            "policies: [{name: p, calendar: a, targets: {first_response: {target: 5m}}}]",
            r"calendars.a.holiday_files: .*missing.ics: cannot read holiday file",
        ),
        ("calendars: [oops", "not valid YAML"),
    ],
)
def test_invalid_files_are_refused_naming_file_field_and_problem(
    tmp_path: Path, document: str, problem: str
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(document)
    with pytest.raises(PolicyError, match=problem) as raised:
        load_policies(path)
    assert str(path) in str(raised.value)


def test_a_missing_policy_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"nowhere.yaml: cannot read policy file"):
        load_policies(tmp_path / "nowhere.yaml")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("5m", 300), ("1h30m", 5400), ("2d", 172800), (45, 45), ("1d 2h", 93600)],
)
def test_durations(text: object, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("bad", ["", "5 minutes", "m", True, None])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(bad)


def test_settings_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = SlaMonitorSettings.load()
    assert defaults.http_port == 8004
    assert defaults.policy_file == DEFAULT_POLICY_FILE
    assert defaults.pause_statuses == {"awaiting_customer"}
    assert defaults.group_id == "sla-monitor"
    monkeypatch.setenv("SLA_MONITOR_HTTP_PORT", "9104")
    monkeypatch.setenv("SLA_MONITOR_PAUSE_STATUSES", "awaiting_customer, on_hold")
    monkeypatch.setenv("SWITCHBOARD_TOPIC_PREFIX", "t1.")
    monkeypatch.setenv("SLA_MONITOR_EVALUATION_INTERVAL", "0.5")
    configured = SlaMonitorSettings.load()
    assert configured.http_port == 9104
    assert configured.pause_statuses == {"awaiting_customer", "on_hold"}
    assert configured.group_id == "t1.sla-monitor"
    assert configured.evaluation_interval == 0.5


def test_the_fingerprint_changes_with_targets_and_holidays_only() -> None:
    from switchboard_devtools.testing.sla_monitor import simple_policies

    assert simple_policies(first="1h").fingerprint == simple_policies(first="1h").fingerprint
    assert simple_policies(first="1h").fingerprint != simple_policies(first="2h").fingerprint
    holiday = {"always_open": True, "holidays": ["2026-12-25"]}
    assert simple_policies(calendar=holiday).fingerprint != simple_policies().fingerprint
