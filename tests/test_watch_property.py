"""SPEC §6.1, the materialised-view property, against a real server under random histories.

Random creates, updates (labels, node, profiles) and deletes of endpoints and edits of the
profiles they inherit labels from; random watchers on random filters (namespace, node, and
selectors over effective labels), some slow; some watchers are cut off by the server mid-way and
resume, and the server restarts in the middle of some runs. At the end every watcher's view must
equal the store's matching objects, computed here independently (a pure-Python reference of
selectors and label inheritance), and each watcher must have seen its events in revision order
with no (object, revision) pair twice.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from epsync.client import Client
from epsync.client.view import Backoff, MaterializedView, WatchEvent
from epsync.errors import Unavailable
from epsync.server.app import EpsyncServer
from epsync.v1.profile_pb2 import Profile
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint
from epsync.v1.workload_endpoint_service_pb2 import WatchWorkloadEndpointsRequest
from tests.conftest import server_config
from tests.factories import endpoint, profile
from tests.selector_reference import All, And, Compare, Has, InSet, Node, Not, Or, evaluate, render

NAMESPACES = ("ns1", "ns2")
NODES = ("n1", "n2", "n3")
NAMES = ("e0", "e1", "e2", "e3", "e4")
PROFILES = ("p1", "p2")
KEYS = st.sampled_from(["app", "tier"])
VALUES = st.sampled_from(["a", "b"])
LABELS = st.dictionaries(KEYS, VALUES, max_size=2)

LEAVES: st.SearchStrategy[Node] = st.one_of(
    st.builds(All, st.just(False)),
    st.builds(Has, KEYS),
    st.builds(Compare, KEYS, st.sampled_from(["==", "!="]), VALUES),
    st.builds(InSet, KEYS, st.lists(VALUES, min_size=1, max_size=2).map(tuple), st.booleans()),
)
SELECTORS: st.SearchStrategy[Node] = st.recursive(
    LEAVES,
    lambda inner: st.one_of(st.builds(Not, inner), st.builds(And, inner, inner), st.builds(Or, inner, inner)),
    max_leaves=4,
)


@dataclass(frozen=True)
class UpsertEndpoint:
    namespace: str
    name: str
    node: str
    labels: dict[str, str]
    profiles: tuple[str, ...]


@dataclass(frozen=True)
class DeleteEndpoint:
    namespace: str
    name: str


@dataclass(frozen=True)
class UpsertProfile:
    name: str
    labels: dict[str, str]


@dataclass(frozen=True)
class DeleteProfile:
    name: str


@dataclass(frozen=True)
class CutOff:
    """The server cuts one watcher off (as if it were too slow); it must resume by itself."""

    which: int


@dataclass(frozen=True)
class Restart:
    """The server restarts on the same data and port; every watcher must resume."""


Op = UpsertEndpoint | DeleteEndpoint | UpsertProfile | DeleteProfile | CutOff | Restart

UPSERT_ENDPOINT = st.builds(
    UpsertEndpoint,
    st.sampled_from(NAMESPACES),
    st.sampled_from(NAMES),
    st.sampled_from(NODES),
    LABELS,
    st.lists(st.sampled_from(PROFILES), max_size=2, unique=True).map(tuple),
)
DELETE_ENDPOINT = st.builds(DeleteEndpoint, st.sampled_from(NAMESPACES), st.sampled_from(NAMES))
# Listed more than once to weigh them: mostly endpoint writes, some profile edits, a few cut-offs.
OPS: st.SearchStrategy[Op] = st.one_of(
    UPSERT_ENDPOINT,
    UPSERT_ENDPOINT,
    UPSERT_ENDPOINT,
    DELETE_ENDPOINT,
    DELETE_ENDPOINT,
    st.builds(UpsertProfile, st.sampled_from(PROFILES), LABELS),
    st.builds(DeleteProfile, st.sampled_from(PROFILES)),
    st.builds(CutOff, st.integers(0, 20)),
)


@dataclass(frozen=True)
class WatcherSpec:
    namespace: str
    node: str
    selector: Node
    slow: bool


WATCHERS = st.builds(
    WatcherSpec,
    st.sampled_from(["", "ns1"]),
    st.sampled_from(["", "n1", "n2"]),
    SELECTORS,
    st.booleans(),
)


def effective_labels(wep: WorkloadEndpoint, profiles: dict[str, Profile]) -> dict[str, str]:
    labels = dict(wep.metadata.labels)
    for name in wep.spec.profiles:
        if name in profiles:
            for key, value in profiles[name].spec.labels_to_apply.items():
                labels.setdefault(key, value)
    return labels


def expected_view(
    spec: WatcherSpec, endpoints: dict[str, WorkloadEndpoint], profiles: dict[str, Profile]
) -> dict[str, WorkloadEndpoint]:
    return {
        key: wep
        for key, wep in endpoints.items()
        if (not spec.namespace or wep.metadata.namespace == spec.namespace)
        and (not spec.node or wep.spec.node == spec.node)
        and evaluate(spec.selector, effective_labels(wep, profiles))
    }


async def consume(
    view: MaterializedView[WorkloadEndpoint, WatchWorkloadEndpointsRequest],
    seen: list[WatchEvent[WorkloadEndpoint]],
    slow: bool,
) -> None:
    async for event in view:
        seen.append(event)
        if slow:
            await asyncio.sleep(0.002)  # paces a slow reader: its buffer may fill and the server cut it off


async def run_history(ops: list[Op], specs: list[WatcherSpec], data_dir: Path) -> None:
    config = server_config(
        data_dir,
        history_window=12,  # small, so some resumes fall back to the known-versions difference
        watcher_max_events=8,
        bookmark_interval_seconds=0.05,
        bookmark_tick_seconds=0.02,
    )
    running = [EpsyncServer(config)]  # the server of the moment: a Restart replaces it
    await running[0].start()
    try:
        await watch_history(ops, specs, running)
    finally:
        await running[0].stop(grace=0)


async def watch_history(ops: list[Op], specs: list[WatcherSpec], running: list[EpsyncServer]) -> None:
    port = running[0].port
    endpoints: dict[str, WorkloadEndpoint] = {}
    profiles: dict[str, Profile] = {}
    async with Client(f"127.0.0.1:{port}", timeout=10) as client:
        views = [
            client.watch(
                namespace=spec.namespace,
                node=spec.node,
                selector=render(spec.selector),
                backoff=Backoff(initial=0.01, maximum=0.1),
            )
            for spec in specs
        ]
        seen: list[list[WatchEvent[WorkloadEndpoint]]] = [[] for _ in specs]
        tasks = [asyncio.create_task(consume(v, s, spec.slow)) for v, s, spec in zip(views, seen, specs, strict=True)]
        try:
            for op in ops:
                await apply(op, client, running, endpoints, profiles)
                await asyncio.sleep(0)  # lets the watchers read between writes: varies the interleaving
            final = running[0].cache.revision
            async with asyncio.timeout(20):
                # Polled: "every view has reached the final revision" is no single event to wait on.
                while not all(v.synced and v.revision >= final for v in views):  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            for spec, view, events in zip(specs, views, seen, strict=True):
                assert view.objects == expected_view(spec, endpoints, profiles), (spec, render(spec.selector))
                check_order(events)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def apply(
    op: Op,
    client: Client,
    running: list[EpsyncServer],
    endpoints: dict[str, WorkloadEndpoint],
    profiles: dict[str, Profile],
) -> None:
    # After a restart the client's channel reconnects with backoff; these writes are idempotent, so retry.
    async with asyncio.timeout(10):
        while True:
            try:
                await apply_once(op, client, running, endpoints, profiles)
                return
            except Unavailable:
                await asyncio.sleep(0.05)  # paces the retries while the channel reconnects


async def apply_once(
    op: Op,
    client: Client,
    running: list[EpsyncServer],
    endpoints: dict[str, WorkloadEndpoint],
    profiles: dict[str, Profile],
) -> None:
    match op:
        case UpsertEndpoint() | DeleteEndpoint() | UpsertProfile() | DeleteProfile():
            await apply_edit(op, client, endpoints, profiles)
        case CutOff(which):
            watchers = list(running[0].endpoint_hub._group_of)
            if watchers:
                watchers[which % len(watchers)].cut_off(Unavailable("cut off by the test", reason="TEST"))
        case Restart():
            # The same port, which the first server picked: the client and the watchers reconnect to it.
            config = running[0].config.model_copy(update={"listen": f"127.0.0.1:{running[0].port}"})
            await running[0].stop(grace=0)
            running[0] = EpsyncServer(config)
            await running[0].start()


async def apply_edit(
    edit: UpsertEndpoint | DeleteEndpoint | UpsertProfile | DeleteProfile,
    client: Client,
    endpoints: dict[str, WorkloadEndpoint],
    profiles: dict[str, Profile],
) -> None:
    """Make one edit through `client` and record in the model what the server answered."""
    match edit:
        case UpsertEndpoint(namespace, name, node, labels, profile_names):
            wep = endpoint(name, namespace=namespace, node=node, labels=labels, profiles=profile_names)
            endpoints[f"{namespace}/{name}"] = await client.update_endpoint(wep, allow_missing=True)
        case DeleteEndpoint(namespace, name):
            await client.delete_endpoint(name, namespace, allow_missing=True)
            endpoints.pop(f"{namespace}/{name}", None)
        case UpsertProfile(name, labels):
            profiles[name] = await client.update_profile(profile(name, labels), allow_missing=True)
        case DeleteProfile(name):
            await client.delete_profile(name, allow_missing=True)
            profiles.pop(name, None)


def check_order(events: list[WatchEvent[WorkloadEndpoint]]) -> None:
    """SPEC §6.1: revisions never decrease, and no (object, revision) pair repeats."""
    revisions = [e.resource_version for e in events]
    assert revisions == sorted(revisions), revisions
    pairs = [(e.object.metadata.namespace, e.object.metadata.name, e.resource_version) for e in events if e.object]
    assert len(pairs) == len(set(pairs)), pairs


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(OPS, min_size=10, max_size=50),
    specs=st.lists(WATCHERS, min_size=1, max_size=5),
    restart=st.one_of(st.none(), st.integers(0, 49)),
)
def test_every_watcher_holds_exactly_its_matching_endpoints(
    ops: list[Op], specs: list[WatcherSpec], restart: int | None
) -> None:
    if restart is not None:
        ops = [*ops[:restart], Restart(), *ops[restart:]]
    with tempfile.TemporaryDirectory(prefix="epsync-property-") as tmp:
        asyncio.run(run_history(ops, specs, Path(tmp)))
