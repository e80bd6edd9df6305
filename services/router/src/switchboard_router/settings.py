"""The router's settings: one frozen object, built once at start."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import ClassVar, Self

from pydantic import Field, SecretStr, model_validator

from switchboard_common.contract import Channel
from switchboard_common.settings import ServiceSettings, env
from switchboard_router.agent_tokens import AgentTokens

#: The tokens the router uses with ``SWITCHBOARD_ENV=dev`` when none is given (``make run``
#: prints them). Never accepted outside dev, where a read token must be set.
DEV_TOKENS = {
    "ROUTER_READ_TOKEN": "dev-router-read-token",
    "ROUTER_ADMIN_TOKEN": "dev-router-admin-token",
}
#: What agent tokens are signed with in dev when ``ROUTER_AGENT_TOKEN_SECRET`` is unset.
DEV_AGENT_TOKEN_SECRET = "dev-router-agent-token-secret"  # noqa: S105 - public dev value


#: The acknowledgement's default text; ``{reference}`` is the conversation's id.
DEFAULT_ACKNOWLEDGEMENT = (
    "Thank you for your message. We have received it and a member of our team will "
    "answer you as soon as possible; there is no need to write again.\n\n"
    "Your reference: {reference}"
)


class RouterSettings(ServiceSettings):
    """Environment of the router (see README for the common variables)."""

    service_name: ClassVar[str] = "router"
    #: Outside dev the router does not start without a read token (and names it).
    dev_secret_defaults: ClassVar[dict[str, str]] = {"read_token": DEV_TOKENS["ROUTER_READ_TOKEN"]}

    http_port: int = Field(8003, ge=0, le=65535, validation_alias=env("ROUTER_HTTP_PORT"))
    #: Records per consumed batch on every stage.
    batch_max_records: int = Field(
        500, ge=1, le=10000, validation_alias=env("ROUTER_BATCH_MAX_RECORDS")
    )

    # ---------------------------------------------------------- identity and timeline
    #: A message to a resolved conversation reopens it within this time of the resolution;
    #: later, it opens a new conversation linked to the resolved one. Seconds or ISO 8601.
    reopen_window: timedelta = Field(
        timedelta(days=3), gt=timedelta(0), validation_alias=env("ROUTER_REOPEN_WINDOW")
    )
    #: A social message joins the sender's open conversation on the channel while its last
    #: message is this recent; after that a new conversation replaces it.
    social_inactivity_window: timedelta = Field(
        timedelta(hours=24), gt=timedelta(0), validation_alias=env("ROUTER_SOCIAL_INACTIVITY")
    )
    #: An email without matching thread headers joins an open conversation with the same
    #: subject only within this time of its last message.
    email_subject_window: timedelta = Field(
        timedelta(days=7), ge=timedelta(0), validation_alias=env("ROUTER_EMAIL_SUBJECT_WINDOW")
    )
    #: A reply from a different sender to a known email thread opens its own conversation.
    email_split_by_sender: bool = Field(True, validation_alias=env("ROUTER_EMAIL_SPLIT_BY_SENDER"))
    #: Channels whose new conversations get an automatic acknowledgement (comma-separated;
    #: ``none``: none). Email by default: replies there come within a day, not minutes.
    #: A routing policy with an ``acknowledgements`` section (texts per channel, queue and
    #: language) replaces this setting and the next two.
    acknowledge_channels: str = Field("email", validation_alias=env("ROUTER_ACKNOWLEDGE_CHANNELS"))
    #: The acknowledgement's text; ``{reference}`` is replaced by the conversation's id.
    acknowledgement_text: str = Field(
        DEFAULT_ACKNOWLEDGEMENT, min_length=1, validation_alias=env("ROUTER_ACKNOWLEDGEMENT_TEXT")
    )
    #: At most one acknowledgement per customer in each period this long.
    acknowledgement_window: timedelta = Field(
        timedelta(hours=1), gt=timedelta(0), validation_alias=env("ROUTER_ACKNOWLEDGEMENT_WINDOW")
    )
    #: How long identity resolution trusts a cached identity → customer resolution (0 disables).
    identity_cache_seconds: float = Field(
        5.0, ge=0, le=3600, validation_alias=env("ROUTER_IDENTITY_CACHE_SECONDS")
    )
    #: Identities and customers each kept in identity resolution's cache.
    identity_cache_size: int = Field(
        100_000, ge=0, le=10_000_000, validation_alias=env("ROUTER_IDENTITY_CACHE_SIZE")
    )
    #: Customers whose threading state the timeline keeps in memory between batches.
    timeline_cache_size: int = Field(
        20_000, ge=0, le=1_000_000, validation_alias=env("ROUTER_TIMELINE_CACHE_SIZE")
    )
    #: Default and largest page of the timeline and conversation read API.
    timeline_page_size: int = Field(
        50, ge=1, le=1000, validation_alias=env("ROUTER_TIMELINE_PAGE_SIZE")
    )
    timeline_page_max: int = Field(
        200, ge=1, le=1000, validation_alias=env("ROUTER_TIMELINE_PAGE_MAX")
    )

    # ---------------------------------------------------------------- API tokens (access.py)
    #: Bearer token of the read routes (customers, timelines, conversations, queue,
    #: agents). Required outside dev. Also ``ROUTER_READ_TOKEN_FILE``.
    read_token: SecretStr | None = Field(None, validation_alias=env("ROUTER_READ_TOKEN"))
    #: Bearer token of the admin routes (merge, unmerge, profile, erasure) and the read
    #: routes; unset outside dev disables the admin API (403). Also ``..._FILE``.
    admin_token: SecretStr | None = Field(None, validation_alias=env("ROUTER_ADMIN_TOKEN"))
    #: Signs agent tokens (``agent_tokens``); unset outside dev, no agent can sign in and
    #: the workspace's writes answer 403. Also ``..._FILE``. Rotating it signs every
    #: agent out.
    agent_token_secret: SecretStr | None = Field(
        None, validation_alias=env("ROUTER_AGENT_TOKEN_SECRET")
    )
    #: How soon a replica refuses the tokens another replica revoked (it reads the
    #: revocations this often; the replica that revokes refuses at once).
    agent_revocation_refresh_seconds: float = Field(
        5.0, gt=0, le=300, validation_alias=env("ROUTER_AGENT_REVOCATION_REFRESH_SECONDS")
    )

    # ---------------------------------------------------------------- workspace
    #: How long a workspace write waits for Kafka's acknowledgement before answering 503.
    workspace_publish_timeout_seconds: float = Field(
        10.0, gt=0, le=120, validation_alias=env("ROUTER_WORKSPACE_PUBLISH_TIMEOUT_SECONDS")
    )
    #: Days a workspace request id is remembered; a retry after that publishes again.
    workspace_request_retention_days: float = Field(
        7.0, gt=0, le=3650, validation_alias=env("ROUTER_WORKSPACE_REQUEST_RETENTION_DAYS")
    )
    #: A comment line on every idle live stream this often, so proxies keep it open.
    live_heartbeat_seconds: float = Field(
        15.0, gt=0, le=300, validation_alias=env("ROUTER_LIVE_HEARTBEAT_SECONDS")
    )
    #: Updates queued for one live stream; a stream this far behind is dropped (``reset``).
    live_queue_size: int = Field(
        256, ge=1, le=100_000, validation_alias=env("ROUTER_LIVE_QUEUE_SIZE")
    )

    # ---------------------------------------------------------------- assignment
    #: The routing policy (YAML); unset means the default policy shipped in the package.
    routing_policy_file: Path | None = Field(None, validation_alias=env("ROUTER_POLICY_FILE"))
    #: Conversations decided concurrently within one consumed batch (per replica).
    assignment_concurrency: int = Field(
        16, ge=1, le=256, validation_alias=env("ROUTER_ASSIGNMENT_CONCURRENCY")
    )
    #: How often the timer loop looks at offer deadlines, relaxation steps and overflow.
    assignment_tick_seconds: float = Field(
        0.25, gt=0, le=60, validation_alias=env("ROUTER_ASSIGNMENT_TICK_SECONDS")
    )
    #: How often each replica re-reads agents, held capacity and the queue from the
    #: database (a safety net behind the per-replica event views, not the assignment path).
    assignment_refresh_seconds: float = Field(
        30.0, gt=0, le=3600, validation_alias=env("ROUTER_ASSIGNMENT_REFRESH_SECONDS")
    )
    #: How often the queue and load gauges are read from the database (a scrape every
    #: 15 s or more sees at most this old a figure; each read scans the waiting queue).
    gauges_seconds: float = Field(5.0, gt=0, le=3600, validation_alias=env("ROUTER_GAUGES_SECONDS"))
    #: A capacity slot older than this that its conversation does not hold (a replica
    #: crashed between reserving and deciding) is released by the repair loop.
    assignment_repair_after_seconds: float = Field(
        15.0, gt=0, le=3600, validation_alias=env("ROUTER_ASSIGNMENT_REPAIR_AFTER_SECONDS")
    )
    #: How often due surveys (the routing policy's ``surveys``) are looked for and sent.
    survey_tick_seconds: float = Field(
        5.0, gt=0, le=3600, validation_alias=env("ROUTER_SURVEY_TICK_SECONDS")
    )
    #: Which team each agent is in (YAML, shared with the SLA monitor): the label of the
    #: per-agent figures. Unset: every agent is ``other``.
    agent_groups_file: Path | None = Field(
        None, validation_alias=env("SWITCHBOARD_AGENT_GROUPS_FILE")
    )
    #: Names this replica's own consumer group (its view of the agents); random if unset.
    replica_id: str | None = Field(None, validation_alias=env("ROUTER_REPLICA_ID"))

    @model_validator(mode="after")
    def _acknowledgements_valid(self) -> Self:
        try:
            self.acknowledged_channels  # noqa: B018 - raises for an unknown channel
        except ValueError as error:
            raise ValueError(f"ROUTER_ACKNOWLEDGE_CHANNELS: {error}") from None
        if self.acknowledged_channels:
            try:
                self.acknowledgement_text.format(reference="c-1")
            except (KeyError, IndexError, ValueError) as error:
                raise ValueError(
                    "ROUTER_ACKNOWLEDGEMENT_TEXT may use {reference} only "
                    f"(and {{{{ }}}} for braces): {error!r}"
                ) from None
        return self

    @model_validator(mode="after")
    def _distinct_tokens(self) -> Self:
        tokens = [t.get_secret_value() for t in (self.read_token, self.admin_token) if t]
        if any(not t.strip() for t in tokens):
            raise ValueError("ROUTER_READ_TOKEN/ROUTER_ADMIN_TOKEN must not be blank")
        secret = self.agent_token_secret
        if secret is not None and len(secret.get_secret_value().strip()) < 16:
            raise ValueError("ROUTER_AGENT_TOKEN_SECRET must be at least 16 characters")
        if len(tokens) == 2 and tokens[0] == tokens[1]:
            # One token for both would make every reader an administrator.
            raise ValueError("ROUTER_READ_TOKEN and ROUTER_ADMIN_TOKEN must differ")
        return self

    def dev_tokens_in_use(self) -> dict[str, str]:
        """The development tokens this router accepts, by variable (only ever in dev):
        start-up prints them so ``make run`` shows what to send."""
        if self.environment != "dev":
            return {}
        current = {"ROUTER_READ_TOKEN": self.read_token, "ROUTER_ADMIN_TOKEN": self.admin_token}
        return {
            variable: token
            for variable, token in DEV_TOKENS.items()
            if (given := current[variable]) is not None and given.get_secret_value() == token
        }

    def with_dev_secrets(self) -> Self:
        """As for every service, plus the development admin token in dev only (outside
        dev an unset admin token just leaves the admin API off)."""
        settings = super().with_dev_secrets()
        if settings.environment != "dev":
            return settings
        update: dict[str, SecretStr] = {}
        if settings.admin_token is None:
            update["admin_token"] = SecretStr(DEV_TOKENS["ROUTER_ADMIN_TOKEN"])
        if settings.agent_token_secret is None:
            update["agent_token_secret"] = SecretStr(DEV_AGENT_TOKEN_SECRET)
        return settings.model_copy(update=update) if update else settings

    def agent_tokens(self) -> AgentTokens | None:
        """The signer of agent tokens, or None when agents cannot sign in."""
        secret = self.agent_token_secret
        return None if secret is None else AgentTokens(secret.get_secret_value())

    @property
    def acknowledged_channels(self) -> frozenset[Channel]:
        """The channels whose new conversations are acknowledged (may be none)."""
        names = [c.strip() for c in self.acknowledge_channels.split(",") if c.strip()]
        if names == ["none"]:
            return frozenset()
        return frozenset(Channel(name) for name in names)
