"""Who is asking: the client's address behind configured proxies, and the key limits count it under.

``X-Forwarded-For`` is read from the right: each trusted proxy appends the address it
saw, so the first hop from the right that is not a trusted proxy is the client. The
leftmost entries are whatever the client wrote and are never believed. Per-address
limits key IPv6 clients by their /64 (one subscriber's prefix), IPv4 by address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_address(text: str | None) -> Address | None:
    """An IP address from text (IPv4-mapped IPv6 becomes IPv4), or None."""
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_networks(prefixes: Iterable[str]) -> list[Network]:
    """CIDR prefixes as networks; raises ValueError naming a bad one (configuration errors)."""
    return [ipaddress.ip_network(prefix, strict=False) for prefix in prefixes]


def in_networks(address: Address | None, networks: Iterable[Network]) -> bool:
    return address is not None and any(address.version == n.version and address in n for n in networks)


class ClientAddresses:
    """Resolves a request's client address, believing ``X-Forwarded-For`` only from trusted proxies."""

    def __init__(self, trusted_proxies: Iterable[str] = ()) -> None:
        self.trusted = parse_networks(trusted_proxies)

    def address_of(self, request: web.Request) -> str:
        """The client's IP address as text (``unknown`` when the socket has none)."""
        peer = parse_address(request.remote)
        if peer is None:
            return "unknown"
        if not in_networks(peer, self.trusted):
            return str(peer)
        hops = [hop for header in request.headers.getall("X-Forwarded-For", []) for hop in header.split(",")]
        client = peer
        for hop in reversed(hops):
            address = parse_address(hop)
            if address is None:  # a trusted proxy never writes garbage: stop at the last hop we can vouch for
                break
            client = address
            if not in_networks(address, self.trusted):
                break
        return str(client)

    def from_trusted_proxy(self, request: web.Request) -> bool:
        """Whether the request's own socket peer is a trusted proxy (headers it sets may be believed)."""
        return in_networks(parse_address(request.remote), self.trusted)


def limit_key(address: str) -> str:
    """The key per-address limits count under: an IPv6 address's /64, an IPv4 address itself."""
    parsed = parse_address(address)
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network(f"{parsed}/64", strict=False))
    return str(parsed) if parsed is not None else address


def is_loopback(address: str | None) -> bool:
    parsed = parse_address(address)
    return parsed is not None and parsed.is_loopback


class RegionPrefixes:
    """Client region by the longest configured IP prefix (``{"10.1.0.0/16": "eu-west"}``)."""

    def __init__(self, prefixes: dict[str, str]) -> None:
        self.table = sorted(
            ((ipaddress.ip_network(p, strict=False), region) for p, region in prefixes.items()),
            key=lambda row: -row[0].prefixlen,
        )

    def region_of(self, address: str | None) -> str | None:
        parsed = parse_address(address)
        if parsed is None:
            return None
        for network, region in self.table:
            if parsed.version == network.version and parsed in network:
                return region
        return None
