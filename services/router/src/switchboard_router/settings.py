"""The router's settings: one frozen object, built once at start."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from switchboard_common.settings import ServiceSettings, env


class RouterSettings(ServiceSettings):
    """Environment of the router (see README for the common variables)."""

    service_name: ClassVar[str] = "router"

    http_port: int = Field(8003, ge=0, le=65535, validation_alias=env("ROUTER_HTTP_PORT"))
    #: Records per consumed batch on every stage.
    batch_max_records: int = Field(
        500, ge=1, le=10000, validation_alias=env("ROUTER_BATCH_MAX_RECORDS")
    )

    # ---------------------------------------------------------------- timeline (stages 1-2)

    # ---------------------------------------------------------------- assignment (stage 3)
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
    #: A capacity slot older than this that its conversation does not hold (a replica
    #: crashed between reserving and deciding) is released by the repair loop.
    assignment_repair_after_seconds: float = Field(
        15.0, gt=0, le=3600, validation_alias=env("ROUTER_ASSIGNMENT_REPAIR_AFTER_SECONDS")
    )
    #: Names this replica's own consumer groups (agent and decision views); random if unset.
    replica_id: str | None = Field(None, validation_alias=env("ROUTER_REPLICA_ID"))
