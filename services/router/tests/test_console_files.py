"""The agent console's static files: served from the installed package, versioned by
content, with a strict Content-Security-Policy, and no data in them (the page is the
same for everyone; the browser test in ``tests/test_e2e_workspace.py`` drives it)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from switchboard_router.app import build
from switchboard_router.console import CONTENT_SECURITY_POLICY, console_router
from switchboard_router.settings import RouterSettings

pytestmark = pytest.mark.unit


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(console_router())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://router") as http:
        yield http


async def test_the_page_loads_its_versioned_assets_and_nothing_inline(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/console")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-cache"
    html = page.text
    versions = set(re.findall(r'/console/console\.(?:js|css)\?v=([0-9a-f]{12})"', html))
    assert len(versions) == 1, html
    # No inline script or style: the policy below would refuse them anyway.
    assert re.findall(r"<script(?![^>]*\bsrc=)", html) == []
    assert "<style" not in html
    assert re.findall(r"\son[a-z]+\s*=", html) == []  # no onclick=...
    assert "{version}" not in html


@pytest.mark.parametrize(
    ("name", "media_type"),
    [("console.js", "text/javascript; charset=utf-8"), ("console.css", "text/css; charset=utf-8")],
)
async def test_assets_are_cacheable_and_not_sniffed(
    client: httpx.AsyncClient, name: str, media_type: str
) -> None:
    response = await client.get(f"/console/{name}?v=anything")
    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    assert response.headers["cache-control"] == "public, max-age=86400"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["etag"]
    # A browser holding this version is told so, without the file.
    again = await client.get(
        f"/console/{name}", headers={"If-None-Match": response.headers["etag"]}
    )
    assert (again.status_code, again.content) == (304, b"")
    assert again.headers["etag"] == response.headers["etag"]
    stale = await client.get(f"/console/{name}", headers={"If-None-Match": '"older"'})
    assert stale.status_code == 200


async def test_every_file_carries_the_strict_policy(client: httpx.AsyncClient) -> None:
    for path in ("/console", "/console/console.js", "/console/console.css"):
        headers = (await client.get(path)).headers
        assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY


async def test_only_the_console_files_are_served(client: httpx.AsyncClient) -> None:
    for name in ("__init__.py", "index.html", "..%2Fapp.py", "missing.js"):
        assert (await client.get(f"/console/{name}")).status_code == 404


async def test_the_script_never_writes_html_or_puts_the_token_in_a_url(
    client: httpx.AsyncClient,
) -> None:
    script = (await client.get("/console/console.js")).text
    assert "innerHTML" not in script
    assert "outerHTML" not in script
    assert "insertAdjacentHTML" not in script
    assert "document.write" not in script
    # The token travels in the Authorization header only.
    assert "Authorization" in script
    assert "?token=" not in script
    assert "access_token" not in script
    assert "EventSource" not in script  # it cannot send a header


async def test_the_router_serves_the_console_without_a_token_and_its_data_with_one() -> None:
    app = build(RouterSettings.load(environment="dev", replica_id="r")).runtime.http_app
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://router") as http:
        for path in ("/console", "/console/console.js", "/console/console.css"):
            assert (await http.get(path)).status_code == 200, path
            assert (await http.head(path)).status_code == 200, path
        # The page is open; what it shows is not.
        assert (await http.get("/me")).status_code == 401
        assert (await http.post("/console")).status_code in (401, 403, 405)
