"""Who the router's settings and route classes let in (no I/O; the HTTP behaviour is in
``test_api_access``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from switchboard_common.settings import SettingsError
from switchboard_router.access import (
    ADMIN_CREDENTIAL,
    READ_CREDENTIAL,
    Access,
    Keyring,
    agent_credential,
    decide,
    required_access,
)
from switchboard_router.agent_tokens import AgentTokenError, AgentTokens
from switchboard_router.app import build
from switchboard_router.settings import DEV_TOKENS, RouterSettings

pytestmark = pytest.mark.unit


def test_settings_give_development_tokens_only_in_dev() -> None:
    dev = RouterSettings.load(environment="dev")
    assert dev.read_token is not None
    assert dev.admin_token is not None
    assert dev.read_token.get_secret_value() == DEV_TOKENS["ROUTER_READ_TOKEN"]
    assert dev.admin_token.get_secret_value() == DEV_TOKENS["ROUTER_ADMIN_TOKEN"]
    production = RouterSettings.load(environment="production", read_token="r" * 32)
    assert production.admin_token is None  # the admin API stays off until configured
    with pytest.raises(SettingsError, match="must differ"):
        RouterSettings.load(environment="test", read_token="same", admin_token="same")  # noqa: S106


def test_the_published_document_asks_a_token_on_every_route() -> None:
    runtime = build(RouterSettings.load(environment="dev", replica_id="r")).runtime
    document = runtime.http_app.openapi()
    security = {
        (path, method): operation.get("security")
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    }
    read: list[dict[str, list[str]]] = [{"readToken": []}, {"adminToken": []}, {"agentToken": []}]
    admin: list[dict[str, list[str]]] = [{"adminToken": []}]
    agent: list[dict[str, list[str]]] = [{"agentToken": []}]
    assert security[("/customers", "get")] == read
    assert security[("/queue", "get")] == read
    assert security[("/me", "get")] == read
    assert security[("/admin/merges", "post")] == admin
    assert all(s in (read, admin, agent) for s in security.values()), security
    assert all(
        (s == read) == (required_access(path, method.upper()) is Access.READ)
        for (path, method), s in security.items()
    )


def test_the_keyring_knows_each_token_and_nothing_else() -> None:
    from pydantic import SecretStr

    keyring = Keyring.of(read=SecretStr("r-token"), admin=SecretStr("a-token"))
    assert keyring.identify("Bearer r-token") == READ_CREDENTIAL
    assert keyring.identify("Bearer  a-token ") == ADMIN_CREDENTIAL
    for header in (None, "", "Bearer", "Bearer ", "r-token", "Basic r-token", "Bearer r-token2"):
        assert keyring.identify(header) is None, header
    assert Keyring.of(read=SecretStr("r-token"), admin=None).identify("Bearer a-token") is None


def test_the_decision_per_access_and_credential() -> None:
    assert decide(Access.PUBLIC, None) is None
    assert [decide(Access.READ, c) for c in (None, READ_CREDENTIAL, ADMIN_CREDENTIAL)] == [
        decide(Access.ADMIN, None),
        None,
        None,
    ]
    refusal = decide(Access.ADMIN, READ_CREDENTIAL)
    assert refusal is not None
    assert refusal.status == 403
    assert decide(Access.ADMIN, ADMIN_CREDENTIAL) is None
    unauthenticated = decide(Access.READ, None)
    assert unauthenticated is not None
    assert unauthenticated.status == 401


def test_writes_outside_admin_need_an_agent_and_the_console_is_open() -> None:
    assert required_access("/conversations/c-1/replies", "POST") is Access.AGENT
    assert required_access("/agents/a-1/presence", "PUT") is Access.AGENT
    assert required_access("/anything/new", "DELETE") is Access.AGENT
    assert required_access("/conversations/c-1", "GET") is Access.READ
    assert required_access("/admin/merges", "POST") is Access.ADMIN
    assert required_access("/console", "GET") is Access.PUBLIC
    assert required_access("/console/console.js", "GET") is Access.PUBLIC
    # Only reading the console's files is open; and a lookalike path is not the console.
    assert required_access("/console/x", "POST") is Access.AGENT
    assert required_access("/consoles", "GET") is Access.READ
    agent = agent_credential("a-1")
    for needed, credential, status in [
        (Access.AGENT, READ_CREDENTIAL, 403),
        (Access.AGENT, ADMIN_CREDENTIAL, 403),
        (Access.ADMIN, agent, 403),
        (Access.AGENT, None, 401),
    ]:
        refusal = decide(needed, credential)
        assert refusal is not None
        assert refusal.status == status
    assert decide(Access.AGENT, agent) is None
    assert decide(Access.READ, agent) is None


def test_an_agent_token_names_its_agent_until_it_expires() -> None:
    from pydantic import SecretStr

    now = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
    tokens = AgentTokens("s" * 32)
    token = tokens.mint("agent-ana", now=now, ttl_seconds=3600)
    moments = iter([now, now + timedelta(seconds=3599), now + timedelta(seconds=3600)])
    keyring = Keyring([(SecretStr("r-token"), READ_CREDENTIAL)], tokens, lambda: next(moments))
    assert keyring.identify(f"Bearer {token}") == agent_credential("agent-ana")
    assert keyring.identify(f"Bearer {token}") is not None
    assert keyring.identify(f"Bearer {token}") is None  # expired
    # Another secret, a changed agent or expiry, or garbage: not an agent.
    assert AgentTokens("t" * 32).verify(token, now=now) is None
    prefix, agent, issued, expiry, mac = token.split(".")
    other = AgentTokens("s" * 32).mint("agent-ben", now=now).split(".")[1]
    for forged in (
        f"{prefix}.{other}.{issued}.{expiry}.{mac}",
        f"{prefix}.{agent}.{issued}.{int(expiry) + 9999}.{mac}",
        f"{prefix}.{agent}.{int(issued) + 9999}.{expiry}.{mac}",  # dodging a revocation
        f"{prefix}.{agent}.{issued}.{expiry}",
        f"{prefix}.{agent}.{expiry}.{mac}",
        f"{prefix}.{agent}.{issued}.{expiry}.{mac}é",
        f"{prefix}.{agent}..{expiry}.{mac}",
        "sbagent.....",
    ):
        assert tokens.verify(forged, now=now) is None, forged
    for bad_id, ttl in [("", 3600), ("x" * 201, 3600), ("a\nb", 3600), ("a", 10)]:
        with pytest.raises(AgentTokenError):
            tokens.mint(bad_id, now=now, ttl_seconds=ttl)


def test_agent_tokens_are_off_outside_dev_until_a_secret_is_set() -> None:
    assert RouterSettings.load(environment="dev").agent_tokens() is not None
    production = RouterSettings.load(environment="production", read_token="r" * 32)
    assert production.agent_tokens() is None
    with pytest.raises(SettingsError, match="at least 16"):
        RouterSettings.load(environment="test", read_token="r", agent_token_secret="short")  # noqa: S106
