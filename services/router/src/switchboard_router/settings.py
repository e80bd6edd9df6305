"""The router's settings: one frozen object, built once at start."""

from __future__ import annotations

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
