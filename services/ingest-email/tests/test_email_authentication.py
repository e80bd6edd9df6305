"""The sender check's pure parts: real DKIM verification (keys from a local table through
dkimpy's DNS hook), trusted Authentication-Results, alignment, and the verdict."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import dkim
import pytest

from switchboard_common.contract import SenderAuthentication
from switchboard_ingest_email.authentication import (
    Evidence,
    SenderChecker,
    TxtLookup,
    aligned,
    dns_txt_lookup,
    from_authentication_results,
    parse_resolver,
    verify_dkim,
)
from switchboard_ingest_email.normalise import Delivery, to_inbound

pytestmark = pytest.mark.unit

SMTP = Delivery(account="help@support.example.com", tenant=None, mail_from=None, transport="smtp")


def mail(sender: str = "ana@example.com", body: str = "Where is my order?") -> bytes:
    return (
        f"From: Ana <{sender}>\r\n"
        "To: help@support.example.com\r\n"
        "Subject: Order 1234\r\n"
        "Date: Mon, 02 Mar 2026 09:30:00 +0100\r\n"
        "Message-ID: <order-1234@mail.example.com>\r\n"
        "\r\n"
        f"{body}\r\n"
    ).encode()


def table(records: dict[str, bytes]) -> TxtLookup:
    """dkimpy's ``dnsfunc`` answered from a dict, like a zone."""

    def lookup(name: bytes | str, timeout: float = 5) -> bytes | None:
        text = name.decode() if isinstance(name, bytes) else name
        return records.get(text.rstrip(".").lower())

    return lookup


def event_of(raw: bytes, evidence: Evidence | None) -> tuple[bool | None, object]:
    event = to_inbound(raw, SMTP, received_at=datetime(2026, 3, 2, tzinfo=UTC), evidence=evidence)
    return event.event.sender_authenticated, event.event.authentication


def test_a_valid_signature_of_the_from_domain_authenticates(dkim_key: Any) -> None:
    raw = dkim_key.sign(mail(), "example.com")
    evidence = verify_dkim(raw, table({"sel._domainkey.example.com": dkim_key.txt}))
    assert evidence == Evidence("dkim", (("pass", "example.com"),))
    authenticated, authentication = event_of(raw, evidence)
    assert authenticated is True
    assert authentication == SenderAuthentication(method="dkim", dkim="pass", aligned=True)


def test_a_parent_domain_signature_aligns_but_a_foreign_one_does_not(dkim_key: Any) -> None:
    keys = table(
        {"sel._domainkey.example.com": dkim_key.txt, "sel._domainkey.evil.example": dkim_key.txt}
    )
    sub = dkim_key.sign(mail("ana@mail.example.com"), "example.com")
    assert event_of(sub, verify_dkim(sub, keys))[0] is True
    # A perfectly valid signature, but of the forger's own domain: From is not proven.
    forged = dkim_key.sign(mail("ana@example.com"), "evil.example")
    authenticated, authentication = event_of(forged, verify_dkim(forged, keys))
    assert authenticated is False
    assert authentication == SenderAuthentication(method="dkim", dkim="pass", aligned=False)


def test_a_tampered_body_missing_key_or_dead_dns_does_not_authenticate(
    dkim_key: Any,
) -> None:
    signed = dkim_key.sign(mail(), "example.com")
    tampered = signed.replace(b"Where is my order?", b"Send the refund to my new IBAN")
    keys = table({"sel._domainkey.example.com": dkim_key.txt})
    assert verify_dkim(tampered, keys).dkim == (("fail", "example.com"),)
    assert verify_dkim(signed, table({})).dkim == (("fail", "example.com"),)  # no key

    def timeout(name: bytes | str, timeout: float = 5) -> bytes | None:
        raise dkim.DnsTimeoutError("no answer")

    assert verify_dkim(signed, timeout).dkim == (("temperror", "example.com"),)
    for evidence in (verify_dkim(tampered, keys), verify_dkim(signed, timeout)):
        assert event_of(signed, evidence)[0] is False


def test_unsigned_mail_is_checked_without_dns_and_not_authenticated() -> None:
    asked: list[object] = []

    def lookup(name: bytes | str, timeout: float = 5) -> bytes | None:
        asked.append(name)
        return None

    evidence = verify_dkim(mail(), lookup)
    assert asked == []
    authenticated, authentication = event_of(mail(), evidence)
    assert authenticated is False
    assert authentication == SenderAuthentication(method="dkim", dkim="none", aligned=False)
    assert event_of(mail(), None) == (None, None)  # not checked at all


def test_a_malformed_signature_is_an_error_result_not_a_crash() -> None:
    raw = b"DKIM-Signature: v=1; a=rsa-sha256; d=\xff\r\nFrom: ana@example.com\r\n\r\nx"
    evidence = verify_dkim(raw, table({}))
    assert [result for result, _ in evidence.dkim] == ["fail"]
    assert event_of(raw, evidence)[0] is False
    unparsable = b"DKIM-Signature: ;;;\r\n\r\n"
    assert [r for r, _ in verify_dkim(unparsable, table({})).dkim] == ["permerror"]


def test_no_from_header_is_never_authenticated_whatever_the_evidence() -> None:
    raw = b"To: help@support.example.com\r\nSubject: hi\r\n\r\nhello\r\n"
    evidence = Evidence("authentication-results", (("pass", "example.com"),), None, ("pass", None))
    assert event_of(raw, evidence)[0] is False


AR = "Authentication-Results: mx.support.example.com;"


def results(raw: bytes, *headers: str) -> tuple[bool | None, object]:
    data = "".join(h + "\r\n" for h in headers).encode() + raw
    return event_of(data, from_authentication_results(data, frozenset({"mx.support.example.com"})))


def test_trusted_authentication_results_decide() -> None:
    passed = results(
        mail(),
        f"{AR} dkim=pass header.d=example.com; spf=fail smtp.mailfrom=bounce.example.net;"
        " dmarc=pass header.from=example.com",
    )
    assert passed == (
        True,
        SenderAuthentication(
            method="authentication-results", dkim="pass", spf="fail", dmarc="pass", aligned=True
        ),
    )
    failed = results(mail(), f"{AR} dkim=none; spf=softfail smtp.mailfrom=example.com; dmarc=fail")
    assert failed[0] is False
    # No DMARC verdict from the MTA: an aligned SPF pass is enough, a foreign one is not.
    assert results(mail(), f"{AR} spf=pass smtp.mailfrom=ana@example.com")[0] is True
    assert results(mail(), f"{AR} spf=pass smtp.mailfrom=evil.example")[0] is False
    # DMARC evaluated for another From than the one we read (two From headers): no.
    assert results(mail(), f"{AR} dmarc=pass header.from=evil.example")[0] is False


def test_only_the_top_most_header_of_a_trusted_authserv_id_counts() -> None:
    # The sender wrote the lower ones; the MTA prepended the top one.
    forged_below = results(
        mail(),
        f"{AR} dkim=none; dmarc=fail header.from=example.com",
        f"{AR} dkim=pass header.d=example.com; dmarc=pass header.from=example.com",
    )
    assert forged_below[0] is False
    untrusted = results(
        mail(), "Authentication-Results: attacker.example; dmarc=pass header.from=example.com"
    )
    assert untrusted == (
        False,
        SenderAuthentication(method="authentication-results", dkim="none", aligned=False),
    )
    assert results(mail(), f"{AR} dmarc=pass header.from=example.com; ((( broken")[0] is False


def test_an_internationalised_from_domain_aligns_with_its_a_label_signature() -> None:
    raw = mail("josé@exámple.com")
    evidence = Evidence("dkim", (("pass", "xn--exmple-qta.com"),))
    assert event_of(raw, evidence)[0] is True


def test_alignment_is_the_domain_or_a_subdomain_of_it() -> None:
    assert aligned("example.com", "example.com")
    assert aligned("mail.example.com", "example.com")
    assert not aligned("example.com", "mail.example.com")
    assert not aligned("evilexample.com", "example.com")
    assert not aligned("example.com", None)


@pytest.mark.parametrize(
    ("text", "address"),
    [("127.0.0.1", ("127.0.0.1", 53)), ("127.0.0.1:5353", ("127.0.0.1", 5353)),
     ("[::1]:53", ("::1", 53)), ("::1", ("::1", 53))],
)  # fmt: skip
def test_resolver_addresses(text: str, address: tuple[str, int]) -> None:
    assert parse_resolver(text) == address


@pytest.mark.parametrize(
    "text", ["dns.example.com", "127.0.0.1:0", "127.0.0.1:x", "[::1", "[::1]x"]
)
def test_bad_resolver_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="IP address"):
        parse_resolver(text)


def test_a_checker_refuses_a_mode_it_cannot_run() -> None:
    with pytest.raises(ValueError, match="authserv-id"):
        SenderChecker("authentication-results")
    with pytest.raises(ValueError, match="DNS"):
        SenderChecker("dkim")
    assert SenderChecker("off").evidence(mail()) is None
    checker = SenderChecker("dkim", lookup=dns_txt_lookup("127.0.0.1:9", 1.0))
    assert not checker.may_block(mail())  # unsigned: answered at once, no DNS
    assert checker.may_block(b"DKIM-Signature: v=1\r\n" + mail())
