"""Who may call which router route: bearer tokens, decided in front of every route.

Every route except ``/healthz``, ``/readyz`` and ``/metrics`` needs
``Authorization: Bearer <token>`` (CONTRACT.md):

- ``ROUTER_READ_TOKEN`` opens the read routes (customers, timelines, conversations,
  queue, agents);
- ``ROUTER_ADMIN_TOKEN`` opens ``/admin/...`` and the read routes too;
- an agent token (``switchboard_router.agent_tokens``) opens the read routes and the
  workspace's writes, as that one agent: any method other than GET/HEAD outside
  ``/admin`` is a write, and only an agent acts (a read or admin token gets 403), so
  every event a write publishes names the agent the token names. Routes about one
  agent (``/agents/{agent_id}/...``) refuse another agent's token (``require_self``).

The console's static files (``/console``) are public: they hold no customer data, and
every call they make carries the agent's token.

No token or a wrong one: 401 with ``WWW-Authenticate: Bearer``; a read token on an admin
route: 403. The decision is one ASGI middleware in front of the whole app, so it runs
before routing: a caller without a token gets the same 401 for a route that does not
exist as for one that does, and a route added later is guarded (read scope) without
anyone remembering to. The credential that passed is left in the request state for the
admin handlers, whose audit records name it (``caller``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from pydantic import SecretStr
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from switchboard_router.agent_tokens import PREFIX as AGENT_TOKEN_PREFIX
from switchboard_router.agent_tokens import AgentTokens, SignedAgent


class Access(StrEnum):
    """What a route needs."""

    PUBLIC = "public"
    READ = "read"
    ADMIN = "admin"
    AGENT = "agent"


# --------------------------------------------------------------------------- route classes

#: Probes and scraping: no token (they carry no customer data).
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
#: The reference agent console's static files.
CONSOLE_PREFIX = "/console"
#: Everything under this prefix changes or audits customers: the admin token only.
ADMIN_PREFIX = "/admin"
#: Methods that change nothing.
READ_METHODS = frozenset({"GET", "HEAD"})


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(f"{prefix}/")


def required_access(path: str, method: str = "GET") -> Access:
    """The access a request needs. Anything not public and not admin is a read route,
    or an agent's write when it is not a GET, so an unknown or future route is never
    open by default."""
    if path in PUBLIC_PATHS or (_under(path, CONSOLE_PREFIX) and method in READ_METHODS):
        return Access.PUBLIC
    if _under(path, ADMIN_PREFIX):
        return Access.ADMIN
    return Access.READ if method.upper() in READ_METHODS else Access.AGENT


# --------------------------------------------------------------------------- credentials


@dataclass(frozen=True)
class Credential:
    """A caller the router recognised: ``name`` goes into audit records as the actor."""

    name: str
    grants: frozenset[Access]
    #: The agent an agent token names (None for the read and admin tokens).
    agent_id: str | None = None

    @property
    def role(self) -> str:
        if self.agent_id is not None:
            return "agent"
        return "admin" if Access.ADMIN in self.grants else "read"


READ_CREDENTIAL = Credential("token:read", frozenset({Access.READ}))
ADMIN_CREDENTIAL = Credential("token:admin", frozenset({Access.READ, Access.ADMIN}))


def agent_credential(agent_id: str) -> Credential:
    return Credential(f"agent:{agent_id}", frozenset({Access.READ, Access.AGENT}), agent_id)


def _digest(token: str) -> bytes:
    # Comparing fixed-length digests keeps the comparison's time independent of the
    # presented token's length as well as its content.
    return hashlib.sha256(token.encode()).digest()


class Keyring:
    """The configured tokens and the credential each stands for."""

    def __init__(
        self,
        tokens: Sequence[tuple[SecretStr, Credential]],
        agents: AgentTokens | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        revoked: Callable[[SignedAgent], bool] = lambda _: False,
    ) -> None:
        self._tokens = [(_digest(secret.get_secret_value()), who) for secret, who in tokens]
        self._agents = agents
        self._clock = clock
        self._revoked = revoked

    @classmethod
    def of(
        cls,
        *,
        read: SecretStr | None,
        admin: SecretStr | None,
        agents: AgentTokens | None = None,
        revoked: Callable[[SignedAgent], bool] = lambda _: False,
    ) -> Keyring:
        """The read and admin tokens, and the agent tokens' signer and revocations; any
        may be absent (then nobody has that grant)."""
        pairs = [(read, READ_CREDENTIAL), (admin, ADMIN_CREDENTIAL)]
        granted = [(secret, who) for secret, who in pairs if secret is not None]
        return cls(granted, agents, revoked=revoked)

    def identify(self, authorization: str | None) -> Credential | None:
        """The credential an ``Authorization`` header presents, or None. Every configured
        token is compared (in constant time), whichever matches."""
        scheme, _, presented = (authorization or "").strip().partition(" ")
        presented = presented.strip()
        if scheme.lower() != "bearer" or not presented:
            return None
        if self._agents is not None and presented.startswith(f"{AGENT_TOKEN_PREFIX}."):
            signed = self._agents.check(presented, now=self._clock())
            if signed is None or self._revoked(signed):
                return None
            return agent_credential(signed.agent_id)
        digest = _digest(presented)
        found = None
        for expected, who in self._tokens:
            if hmac.compare_digest(digest, expected):
                found = who
        return found


# --------------------------------------------------------------------------- the decision


@dataclass(frozen=True)
class Refusal:
    status: int
    detail: str


UNAUTHENTICATED = Refusal(401, "missing, wrong or expired bearer token")
FORBIDDEN = {
    Access.ADMIN: Refusal(403, "this token does not grant the admin API"),
    Access.AGENT: Refusal(403, "only an agent token acts in the workspace"),
    Access.READ: Refusal(403, "this token does not grant the read API"),
}


def decide(needed: Access, credential: Credential | None) -> Refusal | None:
    """None when ``credential`` may use a route that needs ``needed``."""
    if needed is Access.PUBLIC:
        return None
    if credential is None:
        return UNAUTHENTICATED
    if needed not in credential.grants:
        return FORBIDDEN[needed]
    return None


class BearerAuth:
    """ASGI middleware applying ``decide`` to every HTTP request before routing."""

    def __init__(self, app: ASGIApp, keyring: Keyring) -> None:
        self.app = app
        self.keyring = keyring

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        needed = required_access(scope["path"], scope.get("method", "GET"))
        credential = None
        if needed is not Access.PUBLIC:
            credential = self.keyring.identify(_header(scope, b"authorization"))
        refusal = decide(needed, credential)
        if refusal is None:
            scope.setdefault("state", {})["credential"] = credential
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        else:
            # The body of a refused request is never read, so the connection cannot carry
            # another request: say so rather than let the client reuse it.
            headers = {"Connection": "close"}
            if refusal.status == 401:
                headers["WWW-Authenticate"] = "Bearer"
            response = JSONResponse({"detail": refusal.detail}, refusal.status, headers)
            await response(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def caller(request: Request) -> Credential:
    """The credential ``BearerAuth`` let through (a FastAPI dependency)."""
    credential = request.scope.get("state", {}).get("credential")
    if not isinstance(credential, Credential):
        raise TypeError("route reached without BearerAuth in front of it")
    return credential


Caller = Annotated[Credential, Depends(caller)]


def require_self(who: Credential, agent_id: str) -> None:
    """Refuse (403) an agent token on a route about another agent; the read and admin
    tokens may see every agent."""
    if who.agent_id is not None and who.agent_id != agent_id:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "an agent token acts for its own agent")


# --------------------------------------------------------------------------- OpenAPI

_SCHEMES: Mapping[Access, str] = {
    Access.READ: "readToken",
    Access.ADMIN: "adminToken",
    Access.AGENT: "agentToken",
}


def document_security(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the bearer schemes and each operation's requirement to an OpenAPI document,
    from the same ``required_access`` the middleware applies."""
    components = schema.setdefault("components", {})
    components["securitySchemes"] = {
        "readToken": {
            "type": "http",
            "scheme": "bearer",
            "description": "ROUTER_READ_TOKEN: the read routes.",
        },
        "adminToken": {
            "type": "http",
            "scheme": "bearer",
            "description": "ROUTER_ADMIN_TOKEN: /admin/... and the read routes.",
        },
        "agentToken": {
            "type": "http",
            "scheme": "bearer",
            "description": "An agent token (POST /admin/agents/{agent_id}/tokens): the "
            "read routes and the workspace's writes, as that agent.",
        },
    }
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            needed = required_access(path, method.upper())
            if needed is Access.PUBLIC:
                continue
            accepted = {
                Access.READ: [Access.READ, Access.ADMIN, Access.AGENT],
                Access.ADMIN: [Access.ADMIN],
                Access.AGENT: [Access.AGENT],
            }[needed]
            operation["security"] = [{_SCHEMES[name]: []} for name in accepted]
            responses = operation.setdefault("responses", {})
            responses["401"] = {"description": "no bearer token, or a wrong or expired one"}
            if needed is not Access.READ or path.startswith("/agents/{agent_id}"):
                responses["403"] = {"description": "a token without this role"}
    return schema
