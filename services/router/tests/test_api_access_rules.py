"""Who the router's settings and route classes let in (no I/O; the HTTP behaviour is in
``test_api_access``)."""

from __future__ import annotations

import pytest

from switchboard_common.settings import SettingsError
from switchboard_router.access import (
    ADMIN_CREDENTIAL,
    READ_CREDENTIAL,
    Access,
    Keyring,
    decide,
    required_access,
)
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
    read: list[dict[str, list[str]]] = [{"readToken": []}, {"adminToken": []}]
    assert security[("/customers", "get")] == read
    assert security[("/queue", "get")] == read
    assert security[("/admin/merges", "post")] == [{"adminToken": []}]
    assert all(s in (read, [{"adminToken": []}]) for s in security.values()), security
    assert all(
        (s == read) == (required_access(path) is Access.READ) for (path, _), s in security.items()
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
