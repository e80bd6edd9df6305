"""Bearer tokens on the router's HTTP API, through real HTTP against the router wired to
real Kafka and FerretDB: who may read, who may administer, what the audit trail names,
and how the router refuses to start without a read token outside development."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pymongo import AsyncMongoClient

from switchboard_common.contract import INBOUND
from switchboard_common.mongo import Document
from switchboard_devkit.running.inprocess import free_port, running
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_devtools.testing.router_timeline import (
    ADMIN_TOKEN,
    AGENT_TOKEN_SECRET,
    READ_TOKEN,
    TOKEN_ENV,
    RunningRouter,
    agent_token,
    bearer,
    eventually,
    inbound,
    router_process,
    running_router,
)
from switchboard_router.agent_tokens import AgentTokens
from switchboard_router.app import build
from switchboard_router.settings import DEV_TOKENS, RouterSettings
from switchboard_router.timeline.identity import identity_of

pytestmark = pytest.mark.integration

SECRET_TEXT = "my card ends in 4242"  # noqa: S105 - message text, not a password
ADDRESS = "ana@example.com"
WRONG = bearer("not-the-token")


@pytest.fixture
async def router(service_env: dict[str, str], probe: TopicProbe) -> AsyncIterator[RunningRouter]:
    """A router holding one customer with one conversation."""
    async with running_router(service_env) as handle:
        message = inbound("e-1", sender=ADDRESS, subject="Card", text=SECRET_TEXT)
        await probe.send(INBOUND, message, key=identity_of(message))
        yield handle


async def read_routes(router: RunningRouter) -> list[str]:
    """Every read route, with ids that exist (so a 200 shows real data)."""
    customer = await eventually(lambda: router.customer_of(f"email:{ADDRESS}"))
    cid = customer["customer_id"]
    items = await eventually(lambda: router.timeline(cid))
    return [
        f"/customers?identity=email:{ADDRESS}",
        f"/customers/{cid}",
        f"/customers/{cid}/timeline",
        f"/conversations/{items[0]['conversation_id']}",
        "/queue",
        "/agents",
    ]


ADMIN_ROUTES = [
    ("POST", "/admin/customers/cu-x/profile", {"phones": ["+34600111222"]}),
    ("POST", "/admin/merges", {"survivor_customer_id": "cu-a", "absorbed_customer_id": "cu-b"}),
    ("GET", "/admin/merges?customer_id=cu-x", None),
    ("GET", "/admin/merges/mg-x", None),
    ("POST", "/admin/merges/mg-x/undo", {}),
    ("POST", "/admin/customers/cu-x/erasure", {"reason": "request 1"}),
    ("GET", "/admin/erasures/er-x", None),
]


async def test_read_routes_want_the_read_or_the_admin_token(router: RunningRouter) -> None:
    routes = await read_routes(router)
    seen: dict[str, list[int]] = {}
    async with httpx.AsyncClient(base_url=router.url, timeout=30) as http:
        for route in routes:
            anonymous = await http.get(route)
            wrong = await http.get(route, headers=WRONG)
            for refused in (anonymous, wrong):
                assert refused.headers["www-authenticate"] == "Bearer", route
                assert SECRET_TEXT not in refused.text
                assert ADDRESS not in refused.text
            read = await http.get(route, headers=bearer(READ_TOKEN))
            admin = await http.get(route, headers=bearer(ADMIN_TOKEN))
            seen[route] = [r.status_code for r in (anonymous, wrong, read, admin)]
        # The data the tokens protect is really behind them.
        for token in (READ_TOKEN, ADMIN_TOKEN):
            assert SECRET_TEXT in (await http.get(routes[2], headers=bearer(token))).text
    assert seen == {route: [401, 401, 200, 200] for route in routes}


async def test_admin_routes_want_the_admin_token(router: RunningRouter) -> None:
    seen: dict[str, list[int]] = {}
    async with httpx.AsyncClient(base_url=router.url, timeout=30) as http:
        for method, route, body in ADMIN_ROUTES:
            answers = [
                await http.request(method, route, json=body, headers=headers)
                for headers in ({}, WRONG, bearer(READ_TOKEN), bearer(ADMIN_TOKEN))
            ]
            seen[route] = [a.status_code for a in answers]
    # With the admin token each reaches its handler (these ids do not exist).
    expected_admin = {"/admin/merges?customer_id=cu-x": 200}
    assert seen == {
        route: [401, 401, 403, expected_admin.get(route, 404)] for _, route, _ in ADMIN_ROUTES
    }


async def test_only_the_probes_are_open_and_unknown_routes_look_like_real_ones(
    router: RunningRouter,
) -> None:
    async with httpx.AsyncClient(base_url=router.url, timeout=30) as http:
        for probe_route in ("/healthz", "/readyz", "/metrics"):
            assert (await http.get(probe_route)).status_code == 200, probe_route
        # Without a token nobody learns which routes exist.
        for route in ("/nope", "/customers/x/nope", "/openapi.json", "/docs", "/admin/nope"):
            assert (await http.get(route)).status_code == 401, route
        assert (await http.get("/nope", headers=bearer(READ_TOKEN))).status_code == 404
        assert (await http.get("/admin/nope", headers=bearer(READ_TOKEN))).status_code == 403
        spec = await http.get("/openapi.json", headers=bearer(READ_TOKEN))
        assert spec.status_code == 200
        assert set(spec.json()["components"]["securitySchemes"]) == {
            "readToken",
            "adminToken",
            "agentToken",
        }
        # The scheme word is case-insensitive; a bare token is not a bearer token.
        lower = {"Authorization": f"bearer {READ_TOKEN}"}
        assert (await http.get("/queue", headers=lower)).status_code == 200
        bare = {"Authorization": READ_TOKEN}
        assert (await http.get("/queue", headers=bare)).status_code == 401


async def test_an_agent_token_reads_and_acts_as_its_agent_and_nothing_more(
    router: RunningRouter,
) -> None:
    routes = await read_routes(router)
    ana = bearer(agent_token("agent-ana"))
    async with httpx.AsyncClient(base_url=router.url, timeout=30) as http:
        for route in routes:
            assert (await http.get(route, headers=ana)).status_code == 200, route
        assert (await http.get("/me", headers=ana)).json() == {
            "role": "agent",
            "agent_id": "agent-ana",
        }
        assert (await http.get("/me", headers=bearer(READ_TOKEN))).json() == {
            "role": "read",
            "agent_id": None,
        }
        # An agent is no administrator; a reader or administrator is no agent.
        assert (await http.get("/admin/merges?customer_id=x", headers=ana)).status_code == 403
        for token in (READ_TOKEN, ADMIN_TOKEN):
            answer = await http.post("/conversations/c-x/notes", json={}, headers=bearer(token))
            assert answer.status_code == 403, token
            assert answer.json() == {"detail": "only an agent token acts in the workspace"}
        # A token that expired, or that another secret signed, is no token.
        expired = AgentTokens(AGENT_TOKEN_SECRET).mint(
            "agent-ana", now=datetime.now(UTC) - timedelta(hours=2), ttl_seconds=3600
        )
        forged = AgentTokens("another-secret-of-16").mint("agent-ana", now=datetime.now(UTC))
        for token in (expired, forged):
            assert (await http.get("/queue", headers=bearer(token))).status_code == 401


async def test_the_admin_signs_an_agent_in(router: RunningRouter) -> None:
    async with httpx.AsyncClient(base_url=router.url, timeout=30) as http:
        route = "/admin/agents/agent-ben/tokens"
        assert (await http.post(route, json={}, headers=bearer(READ_TOKEN))).status_code == 403
        assert (
            await http.post(route, json={"ttl_seconds": 5}, headers=bearer(ADMIN_TOKEN))
        ).status_code == 422
        minted = await http.post(route, json={"ttl_seconds": 600}, headers=bearer(ADMIN_TOKEN))
        assert minted.status_code == 201
        body = minted.json()
        assert body["agent_id"] == "agent-ben"
        assert body["minted_by"] == "token:admin"
        expires = datetime.fromisoformat(body["expires_at"])
        assert timedelta(seconds=590) < expires - datetime.now(UTC) <= timedelta(seconds=600)
        me = await http.get("/me", headers=bearer(body["token"]))
        assert me.json() == {"role": "agent", "agent_id": "agent-ben"}


async def test_the_admin_revokes_one_agents_tokens_on_every_replica(
    service_env: dict[str, str],
) -> None:
    async with (
        running_router(service_env, agent_revocation_refresh_seconds=0.2) as first,
        running_router(service_env, agent_revocation_refresh_seconds=0.2) as second,
    ):
        route = "/admin/agents/agent-ana/tokens"
        ana, ben = bearer(agent_token("agent-ana")), bearer(agent_token("agent-ben"))
        for replica in (first, second):
            assert (await replica.http.get("/me", headers=ana)).status_code == 200
        # Only an administrator revokes; an agent cannot, not even her own.
        for headers, expected in ((ana, 403), (bearer(READ_TOKEN), 403), ({}, 401)):
            answer = await first.http.request("DELETE", route, headers={
                "Authorization": "", **headers})  # fmt: skip
            assert answer.status_code == expected, headers
        assert (await first.http.get("/me", headers=ana)).status_code == 200

        revoked = await first.http.delete(route, headers=bearer(ADMIN_TOKEN))
        assert revoked.status_code == 200
        assert revoked.json()["agent_id"] == "agent-ana"
        assert revoked.json()["revoked_by"] == "token:admin"
        # The replica that revoked refuses her token at once, the other one shortly.
        assert (await first.http.get("/me", headers=ana)).status_code == 401

        async def refused_by_second() -> bool:
            return (await second.http.get("/me", headers=ana)).status_code == 401

        await eventually(refused_by_second)
        write = await second.http.post("/conversations/c-x/notes", headers=ana, json={})
        assert write.status_code == 401
        # An agent signs herself out everywhere (a lost laptop); readers cannot.
        assert (await first.http.delete("/me/tokens")).status_code == 403
        assert (await second.http.delete("/me/tokens", headers=ben)).status_code == 200
        assert (await second.http.get("/me", headers=ben)).status_code == 401
        await asyncio.sleep(0.01)  # a token issued in the revoking millisecond is refused
        ben = bearer(agent_token("agent-ben"))
        # Ben's new token works, and a token minted for ana now works everywhere.
        minted = await first.http.post(route, json={}, headers=bearer(ADMIN_TOKEN))
        again = bearer(minted.json()["token"])
        for replica in (first, second):
            assert (await replica.http.get("/me", headers=ben)).status_code == 200
            assert (await replica.http.get("/me", headers=again)).json()["agent_id"] == (
                "agent-ana"
            )


def test_the_command_line_signs_an_agent_in(service_env: dict[str, str]) -> None:
    environment = {**os.environ, **service_env, **TOKEN_ENV, "SWITCHBOARD_ENV": "test"}
    command = [sys.executable, "-m", "switchboard_router", "agent-token", "agent-chloe"]
    done = subprocess.run(  # noqa: S603
        command, env=environment, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert AgentTokens(AGENT_TOKEN_SECRET).verify(token, now=datetime.now(UTC)) == "agent-chloe"
    refused = subprocess.run(  # noqa: S603
        [*command[:-1], ""],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2
    assert "agent id" in refused.stderr


async def test_the_audit_trail_names_the_credential_not_the_request_body(
    router: RunningRouter, probe: TopicProbe, mongo_client: AsyncMongoClient[Document]
) -> None:
    other = inbound("w-1", sender="bob@example.com", text="hello")
    await probe.send(INBOUND, other, key=identity_of(other))
    ana = await eventually(lambda: router.customer_of(f"email:{ADDRESS}"))
    bob = await eventually(lambda: router.customer_of("email:bob@example.com"))
    merge_body = {
        "survivor_customer_id": ana["customer_id"],
        "absorbed_customer_id": bob["customer_id"],
    }
    claimed = await router.http.post(
        "/admin/merges", json={**merge_body, "actor": "somebody-else"}, headers=router.admin
    )
    assert claimed.status_code == 422  # an actor is not the caller's to claim

    merged = await router.http.post("/admin/merges", json=merge_body, headers=router.admin)
    assert merged.status_code == 201, merged.text
    merge_id = merged.json()["merge_id"]
    undone = await router.http.post(
        f"/admin/merges/{merge_id}/undo", json={"note": "wrong person"}, headers=router.admin
    )
    assert undone.status_code == 200, undone.text
    database = mongo_client[router.ctx.settings.mongodb_database]
    stored = await database["customer_merges"].find_one({"_id": merge_id})
    assert stored is not None
    assert (stored["by"], stored["undone_by"]) == ("token:admin", "token:admin")


async def test_tokens_come_from_mounted_files(
    service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "read").write_text("read-from-a-file\n")
    (tmp_path / "admin").write_text("admin-from-a-file\n")
    for key, value in {
        **service_env,
        "ROUTER_HTTP_PORT": str(free_port()),
        "ROUTER_READ_TOKEN_FILE": str(tmp_path / "read"),
        "ROUTER_ADMIN_TOKEN_FILE": str(tmp_path / "admin"),
    }.items():
        monkeypatch.setenv(key, value)
    runtime = build(RouterSettings.load()).runtime
    async with running(runtime) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        assert (await http.get("/queue", headers=bearer("read-from-a-file"))).status_code == 200
        assert (await http.get("/queue", headers=bearer("admin-from-a-file"))).status_code == 200
        merges = "/admin/merges?customer_id=cu-x"
        assert (await http.get(merges, headers=bearer("read-from-a-file"))).status_code == 403
        assert (await http.get(merges, headers=bearer("admin-from-a-file"))).status_code == 200
        assert (await http.get("/queue")).status_code == 401


def router_exit(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``python -m switchboard_router`` with exactly the router variables given."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("ROUTER_", "SWITCH"))}
    return subprocess.run(
        [sys.executable, "-m", "switchboard_router"],
        env={**inherited, **env, "ROUTER_HTTP_PORT": str(free_port())},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_outside_dev_the_router_does_not_start_without_a_read_token(
    service_env: dict[str, str],
) -> None:
    refused = router_exit({**service_env, "SWITCHBOARD_ENV": "production"})
    assert refused.returncode == 2
    assert "missing secrets: ROUTER_READ_TOKEN" in refused.stderr
    unreadable = router_exit({**service_env, "ROUTER_READ_TOKEN_FILE": "/nonexistent/read"})
    assert unreadable.returncode == 2
    assert "ROUTER_READ_TOKEN_FILE=/nonexistent/read: cannot read" in unreadable.stderr


async def test_in_dev_the_router_takes_and_prints_its_development_tokens(
    service_env: dict[str, str],
) -> None:
    # What `make run` does: SWITCHBOARD_ENV=dev and no tokens given.
    router = router_process(
        {**service_env, "SWITCHBOARD_ENV": "dev"}, ROUTER_READ_TOKEN="", ROUTER_ADMIN_TOKEN=""
    )
    router.start()
    try:
        await asyncio.to_thread(router.wait_ready, 120)
        printed = router.tail()
        async with httpx.AsyncClient(base_url=router.base_url, timeout=30) as http:
            for variable, token in DEV_TOKENS.items():
                assert f"{variable}={token}" in printed
                assert (await http.get("/agents", headers=bearer(token))).status_code == 200
            assert (await http.get("/agents")).status_code == 401
    finally:
        await asyncio.to_thread(router.stop)
