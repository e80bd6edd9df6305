"""Did the From domain really send this mail? DKIM/SPF/DMARC evidence and the verdict.

Evidence comes one of two ways (``INGEST_EMAIL_SENDER_AUTH``):

- ``dkim`` (the default): ingest verifies the message's ``DKIM-Signature`` headers itself
  (dkimpy), fetching keys through ``INGEST_EMAIL_DNS_RESOLVER`` (else the system
  resolver). DNS is asked only when a message carries a signature. SPF is not checked
  here (behind a forwarder the connecting host is the forwarder) and no DMARC policy is
  looked up, so ``spf`` and ``dmarc`` stay null.
- ``authentication-results``: an MTA in front (Postfix with OpenDKIM/OpenDMARC, rspamd,
  Gmail for IMAP) already checked; its ``Authentication-Results`` header is trusted when
  its authserv-id is one of ``INGEST_EMAIL_AUTHSERV_IDS``. Only the top-most such header
  counts: the MTA prepends its own above anything the sender wrote (and should strip
  forged ones with its id).

``verdict`` (pure) decides: DMARC ``pass`` from a trusted MTA, or a DKIM/SPF pass for a
domain aligned with the From domain, authenticates the sender; a DMARC ``fail`` never
does. Alignment here is the From domain being the passing domain or a subdomain of it:
a safe subset of DMARC's relaxed alignment that needs no public-suffix list.
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import ipaddress
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import authres
import dkim
import dns.exception
import dns.resolver

from switchboard_common.contract import SenderAuthentication

Method = Literal["dkim", "authentication-results"]
#: ``name, timeout -> TXT bytes or None``: dkimpy's ``dnsfunc`` hook.
TxtLookup = Callable[..., bytes | None]

#: Signatures verified per message: each may cost a DNS lookup.
MAX_SIGNATURES = 5
#: dkimpy logs signing domains and selectors; ingest logs no sender details.
_QUIET = logging.getLogger("switchboard.ingest_email.dkim")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False
#: RFC 8601 results in order of preference when several signatures disagree.
_DKIM_RANK = ("pass", "fail", "temperror", "permerror", "neutral", "policy", "none")
_RESULT_WORD = re.compile(r"^[a-z]{1,32}$")


@dataclass(frozen=True, slots=True)
class Evidence:
    """What was checked and for which domains (the domains never leave this module's
    callers: the event carries only result words)."""

    method: Method
    #: ``(result, signing domain)`` per DKIM signature.
    dkim: tuple[tuple[str, str | None], ...] = ()
    #: ``(result, envelope sender domain)`` when SPF was checked.
    spf: tuple[str, str | None] | None = None
    #: ``(result, From domain it was evaluated for)`` from the trusted MTA.
    dmarc: tuple[str, str | None] | None = None


def _domain(value: str | None) -> str | None:
    if not value:
        return None
    domain = value.rpartition("@")[2].strip().strip("<>.").lower()
    # DKIM's d= is ASCII: an internationalised From domain compares in its A-label form
    # (one that is no valid IDN is compared as written).
    with contextlib.suppress(UnicodeError):
        domain = domain.encode("idna").decode("ascii")
    return domain or None


def aligned(from_domain: str, domain: str | None) -> bool:
    """The From domain is ``domain`` or a subdomain of it."""
    return domain is not None and (from_domain == domain or from_domain.endswith("." + domain))


def _word(result: str | None) -> str | None:
    word = (result or "").strip().lower()
    return word if _RESULT_WORD.match(word) else None


def _best(results: Iterable[str]) -> str:
    found = [r for r in results if r]
    if not found:
        return "none"
    rank = {word: index for index, word in enumerate(_DKIM_RANK)}
    return min(found, key=lambda r: rank.get(r, len(rank)))


def verdict(
    evidence: Evidence | None, from_address: str | None
) -> tuple[bool | None, SenderAuthentication | None]:
    """``sender_authenticated`` and ``authentication`` of the event.

    Null and null when nothing was checked. A message whose sender does not come from
    ``From`` (no usable From header) is never authenticated.
    """
    if evidence is None:
        return None, None
    from_domain = _domain(from_address)
    dkim_pass = [domain for result, domain in evidence.dkim if result == "pass"]
    spf_result, spf_domain = evidence.spf or (None, None)
    is_aligned = from_domain is not None and (
        any(aligned(from_domain, d) for d in dkim_pass)
        or (spf_result == "pass" and aligned(from_domain, spf_domain))
    )
    dmarc, dmarc_domain = evidence.dmarc or (None, None)
    # The MTA's DMARC pass counts only for this very From domain.
    dmarc_pass = dmarc == "pass" and from_domain is not None and dmarc_domain in (None, from_domain)
    if dmarc_pass:
        authenticated = True
    elif dmarc == "fail":
        authenticated = False  # e.g. the domain asks for strict alignment
    else:
        authenticated = is_aligned
    return authenticated, SenderAuthentication(
        method=evidence.method,
        dkim=_best(result for result, _ in evidence.dkim),
        spf=_word(spf_result),
        dmarc=_word(dmarc),
        aligned=is_aligned or dmarc_pass,
    )


# --------------------------------------------------------------------------- Authentication-Results


def _header_values(raw: bytes, name: str) -> list[str]:
    headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)
    return [str(value) for value in headers.get_all(name) or []]


def from_authentication_results(raw: bytes, authserv_ids: frozenset[str]) -> Evidence:
    """The evidence of the top-most ``Authentication-Results`` header of a trusted
    authserv-id; empty evidence (nothing passes) when there is none or it is unreadable."""
    features = authres.all_features()
    for value in _header_values(raw, "Authentication-Results"):
        tokens = value.split(";", 1)[0].split()
        if not tokens or tokens[0].strip('"').lower() not in authserv_ids:
            continue  # not ours: skip authres's parser, which is slow (milliseconds)
        try:
            header = features.parse_value(re.sub(r"\s+", " ", value))
        except Exception:  # noqa: BLE001, S112 - authres raises many kinds; unreadable: no evidence
            continue
        if str(header.authserv_id).lower() not in authserv_ids:
            continue
        dkim_results: list[tuple[str, str | None]] = []
        spf: tuple[str, str | None] | None = None
        dmarc: tuple[str, str | None] | None = None
        for result in header.results:
            method, word = str(result.method).lower(), _word(str(result.result)) or "permerror"
            props = {f"{p.type}.{p.name}".lower(): str(p.value) for p in result.properties}
            if method == "dkim":
                dkim_results.append((word, _domain(props.get("header.d") or props.get("header.i"))))
            elif method == "spf" and spf is None:
                spf = (word, _domain(props.get("smtp.mailfrom") or props.get("smtp.helo")))
            elif method == "dmarc" and dmarc is None:
                dmarc = (word, _domain(props.get("header.from")))
        return Evidence("authentication-results", tuple(dkim_results), spf, dmarc)
    return Evidence("authentication-results")


# --------------------------------------------------------------------------- DKIM


def dns_txt_lookup(resolver_address: str | None, timeout: float) -> TxtLookup:
    """dkimpy's ``dnsfunc`` through one resolver (see ``parse_resolver``; ``None``: the
    system's, read at the first lookup so that a host without one still starts)."""
    resolvers: list[dns.resolver.Resolver] = []

    def resolver() -> dns.resolver.Resolver:
        if not resolvers:
            if resolver_address:
                host, port = parse_resolver(resolver_address)
                chosen = dns.resolver.Resolver(configure=False)
                chosen.nameservers = [host]
                chosen.port = port
            else:
                chosen = dns.resolver.Resolver()
            chosen.lifetime = timeout
            resolvers.append(chosen)
        return resolvers[0]

    def lookup(name: bytes | str, timeout: float = timeout) -> bytes | None:
        qname = name.decode("ascii", errors="replace") if isinstance(name, bytes) else name
        try:
            answer = resolver().resolve(qname, "TXT", lifetime=timeout, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return None  # no such key
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as error:
            raise dkim.DnsTimeoutError(type(error).__name__) from error
        except dns.resolver.NoResolverConfiguration as error:
            raise dkim.DnsTimeoutError("no DNS resolver configured") from error
        for rrset in answer.response.answer:
            for record in rrset:
                strings = getattr(record, "strings", None)
                if strings:
                    return b"".join(strings)
        return None

    return lookup


def parse_resolver(address: str) -> tuple[str, int]:
    """``(ip, port)`` from ``ip``, ``ip:port`` or ``[v6]:port``; raises ``ValueError``."""
    host, port = address, "53"
    if address.startswith("["):
        host, bracket, rest = address[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ("53" if bracket and not rest else "")
    elif address.count(":") == 1:
        host, _, port = address.partition(":")
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        number = 0
    if not 0 < number < 65536:
        raise ValueError("a DNS resolver is an IP address, ip:port or [v6]:port")
    return host, number


def has_signature(raw: bytes) -> bool:
    """Whether the header section mentions ``DKIM-Signature`` (cheap, before parsing)."""
    head = re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0]
    return b"dkim-signature" in head.lower()


def verify_dkim(raw: bytes, lookup: TxtLookup, *, timeout: float = 5.0) -> Evidence:
    """Verify every ``DKIM-Signature`` (the first ``MAX_SIGNATURES``). Blocking (DNS)."""
    if not has_signature(raw):
        return Evidence("dkim")  # nothing to verify, no DNS
    try:
        checker = dkim.DKIM(raw, logger=_QUIET, timeout=int(max(1, timeout)))
    except Exception:  # noqa: BLE001 - dkimpy raises assorted errors on malformed mail
        return Evidence("dkim", (("permerror", None),))
    count = sum(1 for name, _ in checker.headers if name.lower() == b"dkim-signature")
    results: list[tuple[str, str | None]] = []
    for index in range(min(count, MAX_SIGNATURES)):
        checker.domain = None
        timed_out = False

        def noting(name: bytes | str, timeout: float = timeout) -> bytes | None:
            # dkimpy turns a DNS timeout into a plain "does not verify"; keep it apart.
            nonlocal timed_out
            try:
                return lookup(name, timeout=timeout)
            except dkim.DnsTimeoutError:
                timed_out = True
                raise

        try:
            verified = checker.verify(idx=index, dnsfunc=noting)
            result = "pass" if verified else ("temperror" if timed_out else "fail")
        except dkim.DnsTimeoutError:
            result = "temperror"
        except dkim.ValidationError:
            result = "fail"  # e.g. the body no longer matches its hash
        except Exception:  # noqa: BLE001 - malformed signature or key: cannot be verified
            result = "permerror"
        signer = checker.domain
        domain = signer.decode("ascii", errors="replace") if isinstance(signer, bytes) else None
        results.append((result, _domain(domain)))
    return Evidence("dkim", tuple(results))


class SenderChecker:
    """The configured way of getting evidence for one message (``None``: not checked)."""

    def __init__(
        self,
        mode: Literal["dkim", "authentication-results", "off"],
        *,
        authserv_ids: Iterable[str] = (),
        lookup: TxtLookup | None = None,
        timeout: float = 5.0,
    ) -> None:
        ids = frozenset(a.strip().lower() for a in authserv_ids if a.strip())
        if mode == "dkim" and lookup is None:
            raise ValueError("DKIM verification needs a DNS lookup")
        if mode == "authentication-results" and not ids:
            raise ValueError("trusting Authentication-Results needs an authserv-id")
        self.mode = mode
        self._authserv_ids = ids
        self._lookup = lookup
        self._timeout = timeout

    def may_block(self, raw: bytes) -> bool:
        """Whether ``evidence`` may take long for this message (DNS, or parsing the
        header, a few milliseconds): the caller runs it in a worker thread."""
        if self.mode == "dkim":
            return has_signature(raw)
        return self.mode == "authentication-results"

    def evidence(self, raw: bytes) -> Evidence | None:
        if self.mode == "dkim" and self._lookup is not None:
            return verify_dkim(raw, self._lookup, timeout=self._timeout)
        if self.mode == "authentication-results":
            return from_authentication_results(raw, self._authserv_ids)
        return None
