"""Who am I, and agent tokens: ``GET /me`` for any token, and (admin token)
``POST /admin/agents/{agent_id}/tokens`` to sign an agent in,
``DELETE /admin/agents/{agent_id}/tokens`` to sign every session of one agent out, and
``DELETE /me/tokens`` (agent token) for an agent to do that herself."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, ConfigDict, Field

from switchboard_router.access import ADMIN_PREFIX, Caller
from switchboard_router.agent_tokens import (
    DEFAULT_TTL_SECONDS,
    MAX_AGENT_ID,
    MAX_TTL_SECONDS,
    AgentTokenError,
    AgentTokens,
)
from switchboard_router.token_revocations import RevokedTokens


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ttl_seconds: Annotated[int, Field(ge=60, le=MAX_TTL_SECONDS)] = DEFAULT_TTL_SECONDS


def sign_in_router(
    tokens: AgentTokens | None, revoked: RevokedTokens, clock: Callable[[], datetime]
) -> APIRouter:
    router = APIRouter(tags=["sign-in"])

    @router.get("/me")
    async def me(who: Caller) -> dict[str, Any]:
        """The role of the presented token, and the agent an agent token names: what a
        console asks once after sign-in."""
        return {"role": who.role, "agent_id": who.agent_id}

    @router.post(f"{ADMIN_PREFIX}/agents/{{agent_id}}/tokens", status_code=201)
    async def mint(agent_id: str, request: TokenRequest, who: Caller) -> dict[str, Any]:
        """A signed token for one agent (hand it to the agent; it is not stored)."""
        if tokens is None:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE, "ROUTER_AGENT_TOKEN_SECRET is not set"
            )
        try:
            token = tokens.mint(agent_id, now=clock(), ttl_seconds=request.ttl_seconds)
        except AgentTokenError as error:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(error)) from error
        return {
            "agent_id": agent_id,
            "token": token,
            "expires_at": AgentTokens.expiry_of(token).isoformat(),
            "minted_by": who.name,
        }

    @router.delete("/me/tokens")
    async def sign_out_everywhere(who: Caller) -> dict[str, Any]:
        """Refuse every token issued to the calling agent until now, this one included
        (a lost laptop, a shared computer): she signs in again with a new token."""
        if who.agent_id is None:  # the access rules let only an agent token write here
            raise HTTPException(status.HTTP_403_FORBIDDEN, "only an agent signs out")
        up_to = await revoked.revoke(who.agent_id)
        return {
            "agent_id": who.agent_id,
            "revoked_up_to": up_to.isoformat(),
            "revoked_by": who.name,
        }

    @router.delete(f"{ADMIN_PREFIX}/agents/{{agent_id}}/tokens")
    async def revoke(agent_id: str, who: Caller) -> dict[str, Any]:
        """Refuse every token issued to this agent until now (a token minted afterwards
        works): this replica at once, the others within
        ROUTER_AGENT_REVOCATION_REFRESH_SECONDS."""
        if len(agent_id) > MAX_AGENT_ID:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "an agent id is too long")
        up_to = await revoked.revoke(agent_id)
        return {"agent_id": agent_id, "revoked_up_to": up_to.isoformat(), "revoked_by": who.name}

    return router
