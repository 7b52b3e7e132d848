"""Server addresses to channel targets: one as it is, several as a failover list."""

from __future__ import annotations

import pytest

from epsync.client.targets import channel_target


@pytest.mark.parametrize(
    ("addresses", "target"),
    [
        ("127.0.0.1:50051", "127.0.0.1:50051"),
        ("epsync.example:50051", "epsync.example:50051"),
        ("127.0.0.1:1, 127.0.0.2:2", "ipv4:127.0.0.1:1,127.0.0.2:2"),
        (["localhost:1", "127.0.0.1:2"], "ipv4:127.0.0.1:1,127.0.0.1:2"),
        (["[::1]:1", "[::1]:2"], "ipv6:[::1]:1,[::1]:2"),
    ],
)
def test_targets(addresses: str | list[str], target: str) -> None:
    assert channel_target(addresses) == target


@pytest.mark.parametrize(
    ("addresses", "message"),
    [
        ("", "no server address"),
        ("a.example:1,b.example:2", "IP address"),
        ("127.0.0.1:1,[::1]:2", "all be IPv4 or all be IPv6"),
        ("127.0.0.1,127.0.0.2:2", "not host:port"),
    ],
)
def test_bad_targets(addresses: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        channel_target(addresses)
