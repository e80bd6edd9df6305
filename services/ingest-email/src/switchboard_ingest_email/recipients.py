"""Which recipients this service accepts mail for, and which tenant each belongs to. Pure.

Never an open relay: an address is accepted only when it is one of the configured support
addresses or its domain is one of the configured support domains (exact match, no
subdomains). Addresses and domains compare case-insensitively.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


def split_list(value: str | None) -> tuple[str, ...]:
    """Comma- or whitespace-separated items, lower-cased, without empties or duplicates."""
    if not value:
        return ()
    items = (item.strip().lower() for item in value.replace(",", " ").split())
    return tuple(dict.fromkeys(item for item in items if item))


def parse_tenants(value: str | None) -> dict[str, str]:
    """``domain-or-address=tenant`` pairs, comma-separated; raises ``ValueError`` if malformed."""
    tenants: dict[str, str] = {}
    for item in (value or "").split(","):
        if not item.strip():
            continue
        target, sep, tenant = item.partition("=")
        if not sep or not target.strip() or not tenant.strip():
            raise ValueError(f"expected domain-or-address=tenant, got {item.strip()!r}")
        tenants[target.strip().lower()] = tenant.strip()
    return tenants


@dataclass(frozen=True)
class RecipientPolicy:
    """The support domains and addresses, and the tenant of each."""

    domains: frozenset[str]
    addresses: frozenset[str]
    tenants: Mapping[str, str]

    @classmethod
    def of(
        cls,
        domains: Iterable[str],
        addresses: Iterable[str] = (),
        tenants: Mapping[str, str] | None = None,
    ) -> RecipientPolicy:
        return cls(
            domains=frozenset(d.lower().strip() for d in domains if d.strip()),
            addresses=frozenset(a.lower().strip() for a in addresses if a.strip()),
            tenants={k.lower(): v for k, v in (tenants or {}).items()},
        )

    @property
    def empty(self) -> bool:
        """True when no mail at all would be accepted (the service refuses to start)."""
        return not self.domains and not self.addresses

    @property
    def reply_domains(self) -> frozenset[str]:
        """The domains replies are sent from (their Message-IDs are in them)."""
        return self.domains | {a.rpartition("@")[2] for a in self.addresses}

    def accepts(self, address: str) -> bool:
        """Whether mail for ``address`` is ours to take."""
        normalised = normalise_address(address)
        if normalised in self.addresses:
            return True
        local, at, domain = normalised.rpartition("@")
        return bool(at and local and domain in self.domains)

    def tenant_for(self, address: str) -> str | None:
        """The tenant of a support address: by address first, then by its domain."""
        normalised = normalise_address(address)
        if normalised in self.tenants:
            return self.tenants[normalised]
        return self.tenants.get(normalised.rpartition("@")[2])


def normalise_address(address: str) -> str:
    """An envelope address without angle brackets, lower-cased."""
    return address.strip().strip("<>").strip().lower()
