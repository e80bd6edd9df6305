"""``GET /reports/kpis``: the KPI report over HTTP, behind a bearer token.

``parse_request`` (pure) turns the query into a period and a grouping or says, in words,
what is wrong (400). The route reads the period's conversations with one bounded query
and hands them to ``report.kpi_report``. No token: 401; a wrong token, or reports off
because no ``SLA_MONITOR_REPORT_TOKEN`` is set: 403.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query
from pydantic import SecretStr

from switchboard_common.agent_groups import AgentGroups
from switchboard_sla_monitor.report import GROUP_BY, GroupBy, KpiReport, kpi_report
from switchboard_sla_monitor.store import ConversationStore
from switchboard_sla_monitor.timesource import Clock

REPORT_ROUTE = "/reports/kpis"


class ReportRequestError(ValueError):
    """The query cannot be answered; the message says why (sent as the 400 detail)."""


@dataclass(frozen=True)
class ReportRequest:
    start: datetime
    end: datetime
    by: GroupBy | None


def parse_moment(name: str, value: str) -> datetime:
    """A date (midnight UTC) or an RFC 3339 date-time with an offset."""
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ReportRequestError(
            f"{name}: {value!r} is not a date (2026-11-01) or an RFC 3339 date-time "
            "(2026-11-01T09:00:00+01:00)"
        ) from None
    if moment.tzinfo is None:
        raise ReportRequestError(f"{name}: {value!r} needs a time zone offset (e.g. Z or +01:00)")
    return moment


def parse_request(
    from_: str | None, to: str | None, by: str | None, max_days: int
) -> ReportRequest:
    """Validate the query: both ends given, ``from`` before ``to``, at most ``max_days``."""
    if not from_ or not to:
        raise ReportRequestError("from and to are required (dates or RFC 3339 date-times)")
    start, end = parse_moment("from", from_), parse_moment("to", to)
    if start >= end:
        raise ReportRequestError("from must be before to")
    if end - start > timedelta(days=max_days):
        raise ReportRequestError(f"the period is longer than {max_days} days; ask for less")
    if by in (None, "", "none"):
        return ReportRequest(start, end, None)
    if by not in GROUP_BY:
        raise ReportRequestError(f"by: {by!r} is not one of {', '.join(GROUP_BY)} (or none)")
    return ReportRequest(start, end, by)


def check_token(authorization: str | None, token: SecretStr | None) -> None:
    """401 without a bearer token, 403 with a wrong one or while reports are off."""
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise HTTPException(
            401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"}
        )
    if token is None:
        raise HTTPException(403, "reports are off: SLA_MONITOR_REPORT_TOKEN is not set")
    if not hmac.compare_digest(given.strip().encode(), token.get_secret_value().encode()):
        raise HTTPException(403, "this token may not read reports")


def report_router(
    *,
    conversations: ConversationStore,
    token: SecretStr | None,
    groups: AgentGroups,
    fcr_window: timedelta,
    max_days: int,
    max_conversations: int,
    clock: Clock,
) -> APIRouter:
    router = APIRouter()

    @router.get(
        REPORT_ROUTE,
        response_model=KpiReport,
        response_model_by_alias=True,
        summary="Support KPIs of a period, per group",
        description=(
            "Needs `Authorization: Bearer <SLA_MONITOR_REPORT_TOKEN>` (none: 401; wrong "
            "or reports off: 403). Definitions: the SLA monitor's README."
        ),
        responses={400: {"description": "a bad period or grouping, said in `detail`"}},
    )
    async def kpis(
        from_: Annotated[
            str | None, Query(alias="from", description="a date (UTC) or RFC 3339 date-time")
        ] = None,
        to: Annotated[str | None, Query(description="the end, excluded")] = None,
        by: Annotated[str | None, Query(description="channel, queue or agent_group")] = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> KpiReport:
        check_token(authorization, token)
        try:
            request = parse_request(from_, to, by, max_days)
        except ReportRequestError as error:
            raise HTTPException(400, str(error)) from None
        records = await conversations.in_period(request.start, request.end, max_conversations + 1)
        if len(records) > max_conversations:
            raise HTTPException(
                400,
                f"the period holds more than {max_conversations} conversations; "
                "ask for a shorter one",
            )
        now = clock.now()
        figures = kpi_report(
            records,
            request.start,
            request.end,
            now,
            request.by,
            groups=groups,
            fcr_window=fcr_window,
        )
        return KpiReport(
            from_=request.start,
            to=request.end,
            by=request.by,
            generated_at=now,
            fcr_reopen_window_seconds=fcr_window.total_seconds(),
            groups=figures,
        )

    return router
