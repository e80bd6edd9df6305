"""X's challenge-response check over real HTTP, on real Kafka: it answers X's tokens,
never signs anything that could be a webhook body, and is rate-limited."""

from __future__ import annotations

import pytest

from switchboard_common.contract import INBOUND
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_devtools.frontend import x_dm_webhook
from switchboard_devtools.testing.social import X_ACCOUNT, X_SECRET, RunningSocial
from switchboard_ingest_social import signatures

pytestmark = pytest.mark.integration

#: A CRC token as X sends it: base64 of a UUID.
X_TOKEN = "M2RkODJkZmMtYjlkYi00NmQ4LTk0MGUtM2JjYzkwM2Q4MjQ0"  # noqa: S105 - a challenge


def _from(client: str) -> dict[str, str]:
    # The service trusts proxy headers from 127.0.0.1 (uvicorn's default), as it would
    # from its ingress: this is how a test speaks as several clients.
    return {"X-Forwarded-For": client}


async def test_a_crc_answer_cannot_be_replayed_as_a_webhook_signature(
    social: RunningSocial, probe: TopicProbe
) -> None:
    # The attack: ask the CRC endpoint to "answer" a webhook body, then post that body
    # with the answer as its signature. Both are HMAC-SHA256 under the consumer secret.
    forged = x_dm_webhook(
        "Refund me to account 666", sender_id="666", event_id="1", for_user_id=X_ACCOUNT
    )
    crc = await social.http.get("/webhooks/x", params={"crc_token": forged.decode()})
    signature = crc.json().get("response_token", "")
    posted = await social.http.post(
        "/webhooks/x",
        content=forged,
        headers={"content-type": "application/json", "x-twitter-webhooks-signature": signature},
    )
    assert crc.status_code == 400, crc.text
    assert crc.json() == {"status": "invalid", "detail": signatures.CRC_RULE}
    assert posted.status_code in (401, 403), posted.text
    assert await probe.read(INBOUND, count=1, timeout=1.5) == []


@pytest.mark.parametrize(
    "token",
    [
        '{"for_user_id":"1"}',  # a JSON object
        "[1]",
        "12345678",  # a JSON number, though within the alphabet
        "a" * 129,  # longer than any token of X
        "short",
        "has space inside",
        "ünïcødé-token",
        "",
    ],
)
async def test_only_tokens_shaped_as_x_sends_them_are_answered(
    social: RunningSocial, token: str
) -> None:
    answer = await social.http.get(
        "/webhooks/x", params={"crc_token": token}, headers=_from("192.0.2.10")
    )
    assert answer.status_code == 400, (token, answer.text)
    assert "response_token" not in answer.json()


async def test_x_tokens_are_answered_with_the_account_secret(social: RunningSocial) -> None:
    for token in (X_TOKEN, "Zm9vYmFy", "Zm9v+YmFy/Zm9vYmFy==", "Zm9v-YmFy_Zm9vYmFy"):
        answer = await social.http.get("/webhooks/x", params={"crc_token": token})
        assert answer.status_code == 200, (token, answer.text)
        assert answer.json() == {
            "response_token": signatures.x_crc_response(token, X_SECRET.encode())
        }
    named = await social.http.get(
        "/webhooks/x", params={"crc_token": X_TOKEN, "account": X_ACCOUNT}
    )
    assert named.json()["response_token"] == signatures.x_crc_response(X_TOKEN, X_SECRET.encode())


@pytest.mark.parametrize(
    "social_env",
    [{"INGEST_SOCIAL_CRC_PER_CLIENT_PER_MINUTE": "2", "INGEST_SOCIAL_CRC_PER_MINUTE": "4"}],
    indirect=True,
)
async def test_crc_checks_are_rate_limited_per_client_and_in_total(
    social: RunningSocial,
) -> None:
    async def check(client: str, challenge: str = X_TOKEN) -> tuple[int, str | None]:
        answer = await social.http.get(
            "/webhooks/x", params={"crc_token": challenge}, headers=_from(client)
        )
        if answer.status_code == 429:
            assert answer.json()["status"] == "rate_limited", answer.text
        return answer.status_code, answer.headers.get("retry-after")

    # Each bucket starts full (a minute's worth) and refills one token every 30 s, so
    # ten more requests can only all pass if they took five minutes.
    first = [await check("192.0.2.1") for _ in range(2)]
    assert first == [(200, None), (200, None)]
    more = [await check("192.0.2.1") for _ in range(10)]
    limited = [retry for status, retry in more if status == 429]
    assert limited, more
    assert all(retry is not None and int(retry) >= 1 for retry in limited), more
    # Invalid tokens count as well: a client cannot probe without limit.
    assert (await check("192.0.2.1", challenge="{}"))[0] == 429
    # Another client has its own allowance, until the total is used up.
    other = [await check("192.0.2.2") for _ in range(2)]
    assert other == [(200, None), (200, None)]
    third = [await check("192.0.2.3") for _ in range(10)]
    assert any(status == 429 for status, _ in third), third
    metrics = await social.metrics()
    assert 'switchboard_ingest_social_handshakes_total{outcome="rate_limited",provider="x"}' in (
        metrics
    )
