"""Turning one or several "host:port" server addresses into one gRPC channel target.

Several replicas behind one channel: gRPC's `ipv4:`/`ipv6:` targets take a list of addresses and,
with the default pick_first policy, connect to the first that answers and move to the next when
it fails. Calls that were on the lost connection fail with UNAVAILABLE; the next ones go to a live
replica, and `MaterializedView` resumes its watch there by itself.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence


def channel_target(addresses: str | Sequence[str]) -> str:
    """A gRPC target for `addresses`: one "host:port" as it is, several (a list, or comma-separated)
    as an `ipv4:`/`ipv6:` address list. Several addresses must be IP literals (or localhost)."""
    items = [a.strip() for a in addresses.split(",")] if isinstance(addresses, str) else [a.strip() for a in addresses]
    items = [a for a in items if a]
    if not items:
        raise ValueError("no server address given")
    if len(items) == 1:
        return items[0]
    families = set()
    normalised = []
    for item in items:
        host, port = _split(item)
        try:
            ip = ipaddress.ip_address("127.0.0.1" if host == "localhost" else host)
        except ValueError:
            raise ValueError(f"{item!r}: with several servers, give each as an IP address and port") from None
        families.add(ip.version)
        normalised.append(f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}")
    if len(families) > 1:
        raise ValueError("several servers must all be IPv4 or all be IPv6")
    return f"ipv{families.pop()}:" + ",".join(normalised)


def list_authority(target: str) -> str | None:
    """The :authority to send for an address-list target: its first address. gRPC would send the whole list,
    which is no URI authority (HTTP/2 servers other than gRPC's own, such as hyper's, refuse the call);
    None for a single address, which is its own authority."""
    scheme, _, addresses = target.partition(":")
    if scheme not in ("ipv4", "ipv6") or "," not in addresses:
        return None
    return addresses.split(",")[0]


def _split(address: str) -> tuple[str, str]:
    host, separator, port = address.rpartition(":")
    if not separator or not port.isdigit():
        raise ValueError(f"{address!r} is not host:port")
    return host.strip("[]"), port
