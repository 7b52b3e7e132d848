"""Correctness inside the benchmark (scenario 6): every watcher's view must equal the store.

At the end of a scenario the orchestrator reads the store itself (a full List from epsync, a
keys-only Range from etcd, the raw server's own record of what it sent), works out what each
watcher should hold (its node's endpoints; its selector's members, from the Rust selector engine
over the endpoints' effective labels), and compares that with the view each watcher built from its
events, key by key and resource_version by resource_version. Events still in flight get a few
seconds to land; after that any difference fails the run, naming the watchers and keys.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from bench.population import ETCD_PREFIX, Membership
from epsync.client import Client
from epsync.store.etcd.client import EtcdClient
from epsync.v1 import workload_endpoint_service_pb2 as wep_pb

Store = dict[str, tuple[str, int]]  # "namespace/name" -> (node, resource_version)
Views = Mapping[int, Mapping[str, int]]  # watcher id -> its view, "namespace/name" -> resource_version


class CorrectnessError(AssertionError):
    """A watcher's view differs from the store."""


@dataclass
class CheckResult:
    scenario: str
    system: str
    watchers: int
    keys: int
    seconds: float
    differences: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences

    def row(self) -> dict[str, object]:
        return {
            "scenario": self.scenario,
            "system": self.system,
            "watchers": self.watchers,
            "keys": self.keys,
            "seconds_to_converge": round(self.seconds, 2),
            "result": "ok" if self.ok else "FAILED",
            "differences": len(self.differences),
        }


async def epsync_store(target: str) -> Store:
    """Every endpoint the epsync server holds (a complete List, 5,000 per page)."""
    store: Store = {}
    async with Client(target, timeout=60) as client:
        request = wep_pb.ListWorkloadEndpointsRequest(page_size=5000)
        while True:
            page = await client.list_endpoints_page(request)
            for item in page.items:
                store[f"{item.metadata.namespace}/{item.metadata.name}"] = (
                    item.spec.node,
                    item.metadata.resource_version,
                )
            if not page.next_page_token:
                return store
            request.page_token = page.next_page_token


async def etcd_store(target: str) -> Store:
    """Every endpoint key in etcd with its mod_revision (keys only: the node is in the key)."""
    async with EtcdClient(target, timeout=60) as client:
        result = await client.range(ETCD_PREFIX.encode(), prefix=True, keys_only=True)
    store: Store = {}
    for kv in result.kvs:
        node, _, key = kv.key[len(ETCD_PREFIX) :].decode().partition("/")
        store[key] = (node, kv.mod_revision)
    return store


def expected_views(
    store: Store, specs: Sequence[Mapping[str, object]], membership: Membership
) -> dict[int, dict[str, int]]:
    """What each watcher should hold, given the store."""
    by_node: dict[str, dict[str, int]] = {}
    for key, (node, version) in store.items():
        by_node.setdefault(node, {})[key] = version
    keys = membership.keys
    expected: dict[int, dict[str, int]] = {}
    selector_index = {text: s for s, text in enumerate(membership.selectors)}
    for spec in specs:
        ident = int(str(spec["id"]))
        if spec.get("node"):
            expected[ident] = dict(by_node.get(str(spec["node"]), {}))
            continue
        members = membership.selector_members[selector_index[str(spec["selector"])]]
        view: dict[str, int] = {}
        for j in members:
            found = store.get(keys[j])
            if found is not None:
                view[keys[j]] = found[1]
        expected[ident] = view
    return expected


def differences(views: Views, expected: Mapping[int, Mapping[str, int]], limit: int = 20) -> list[str]:
    """Human-readable differences, at most `limit` of them (plus a count of the rest)."""
    found: list[str] = []
    total = 0
    for ident, want in expected.items():
        have = views.get(ident)
        if have is None:
            total += 1
            if len(found) < limit:
                found.append(f"watcher {ident}: no view reported")
            continue
        if have == want:
            continue
        for key in sorted(set(want) | set(have)):
            if have.get(key) == want.get(key):
                continue
            total += 1
            if len(found) < limit:
                if key not in have:
                    found.append(f"watcher {ident}: missing {key} (store has version {want[key]})")
                elif key not in want:
                    found.append(f"watcher {ident}: holds {key} at version {have[key]}, which it should not hold")
                else:
                    found.append(f"watcher {ident}: {key} at version {have[key]}, store has {want[key]}")
    if total > len(found):
        found.append(f"... {total - len(found)} more differences")
    return found


async def check(
    scenario: str,
    system: str,
    read_store: Callable[[], Awaitable[Store]],
    read_views: Callable[[], Awaitable[Views]],
    specs: Sequence[Mapping[str, object]],
    membership: Membership,
    *,
    settle_seconds: float = 30.0,
) -> CheckResult:
    """Compare every view with the store, retrying while events may still be in flight."""
    started = time.monotonic()
    store = await read_store()
    expected = expected_views(store, specs, membership)
    while True:
        views = await read_views()
        found = differences(views, expected)
        elapsed = time.monotonic() - started
        if not found or elapsed > settle_seconds:
            return CheckResult(scenario, system, len(specs), sum(map(len, expected.values())), elapsed, found)
        await asyncio.sleep(0.25)
