"""The SLA monitor's settings: one frozen object, built once at start."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, ClassVar, Self

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from switchboard_common.settings import ServiceSettings, env
from switchboard_sla_monitor.kpis import DEFAULT_FCR_WINDOW
from switchboard_sla_monitor.policy import Duration

#: The report token with ``SWITCHBOARD_ENV=dev`` when none is given; never outside dev.
DEV_REPORT_TOKEN = "dev-sla-report-token"  # noqa: S105 - a development default, dev only

#: The policy file shipped in the package, used when ``SLA_MONITOR_POLICY_FILE`` is unset.
DEFAULT_POLICY_FILE = Path(__file__).with_name("default_policy.yaml")


class SlaMonitorSettings(ServiceSettings):
    """Environment of the SLA monitor (see the service README for every variable)."""

    service_name: ClassVar[str] = "sla-monitor"

    http_port: int = Field(8004, ge=0, le=65535, validation_alias=env("SLA_MONITOR_HTTP_PORT"))
    #: YAML file with calendars and policies; validated at start (see README).
    policy_file: Path = Field(DEFAULT_POLICY_FILE, validation_alias=env("SLA_MONITOR_POLICY_FILE"))
    #: Seconds between two evaluations of the clocks that are due (at-risk, breach).
    evaluation_interval: float = Field(
        5.0, gt=0, le=3600, validation_alias=env("SLA_MONITOR_EVALUATION_INTERVAL")
    )
    #: At most this many due conversations per evaluation (the loop's cost stays bounded;
    #: the rest are taken on the next evaluation, most overdue first).
    evaluation_limit: int = Field(
        1000, ge=1, le=100_000, validation_alias=env("SLA_MONITOR_EVALUATION_LIMIT")
    )
    #: Seconds between two recomputations of the open-clock gauges from the database.
    gauge_interval: float = Field(
        15.0, gt=0, le=3600, validation_alias=env("SLA_MONITOR_GAUGE_INTERVAL")
    )
    #: A claimed emission whose publish did not complete within this many seconds (the
    #: replica crashed) is published again by the next evaluation, with the same event id.
    republish_after: float = Field(
        30.0, gt=0, le=86400, validation_alias=env("SLA_MONITOR_REPUBLISH_AFTER")
    )
    #: Conversation statuses during which clocks pause (comma-separated).
    pause_statuses: Annotated[frozenset[str], NoDecode] = Field(
        frozenset({"awaiting_customer"}), validation_alias=env("SLA_MONITOR_PAUSE_STATUSES")
    )
    #: Records per consumed batch.
    batch_max_records: int = Field(
        500, ge=1, le=10000, validation_alias=env("SLA_MONITOR_BATCH_MAX_RECORDS")
    )
    #: Consumer group (behind ``SWITCHBOARD_TOPIC_PREFIX``, so test runs stay apart).
    consumer_group: str = Field(
        "sla-monitor", min_length=1, validation_alias=env("SLA_MONITOR_CONSUMER_GROUP")
    )

    #: A reopen this long after a conversation's first resolution no longer makes it
    #: "not resolved at first contact" (``7d``, ``36h``, seconds; README says why 7 days).
    fcr_reopen_window: Duration = Field(
        DEFAULT_FCR_WINDOW, gt=timedelta(0), validation_alias=env("SLA_MONITOR_FCR_REOPEN_WINDOW")
    )
    #: Bearer token of ``GET /reports/kpis`` (also ``_FILE``). Unset outside dev: the
    #: report route answers 403 (reports are business data, off until a token is set).
    report_token: SecretStr | None = Field(None, validation_alias=env("SLA_MONITOR_REPORT_TOKEN"))
    #: Longest period one report may cover, in days.
    report_max_days: int = Field(
        400, ge=1, le=3660, validation_alias=env("SLA_MONITOR_REPORT_MAX_DAYS")
    )
    #: Most conversations one report reads; a period holding more is refused (400).
    report_max_conversations: int = Field(
        50_000, ge=1, le=1_000_000, validation_alias=env("SLA_MONITOR_REPORT_MAX_CONVERSATIONS")
    )
    #: Which team each agent is in, for the ``agent_group`` label and report grouping.
    agent_groups_file: Path | None = Field(
        None, validation_alias=env("SWITCHBOARD_AGENT_GROUPS_FILE")
    )

    @field_validator("report_token")
    @classmethod
    def _token_not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("must not be blank (unset it to turn reports off)")
        return value

    @field_validator("pause_statuses", mode="before")
    @classmethod
    def _split_statuses(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(s.strip() for s in value.split(",") if s.strip())
        return value

    @property
    def group_id(self) -> str:
        """The deployed consumer group id."""
        return f"{self.topic_prefix}{self.consumer_group}"

    def with_dev_secrets(self) -> Self:
        """As for every service, plus the development report token in dev only (outside
        dev an unset token leaves the report route off)."""
        settings = super().with_dev_secrets()
        if settings.environment == "dev" and settings.report_token is None:
            return settings.model_copy(update={"report_token": SecretStr(DEV_REPORT_TOKEN)})
        return settings
