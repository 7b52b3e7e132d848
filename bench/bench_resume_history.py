"""What resuming across a restart costs: the retained history loaded at start, replays, and etcd.

A restarted server fills its cache with the store's retained history (sync/retained.py) so that a
watch from before the restart is replayed. The alternative was to read the history from the store
on demand, when a resume reaches back past what the cache holds. This measures what decides it, on
an SQLite store of `--endpoints` endpoints with `--history` history rows (the default window):

- start: seconds and resident memory to open the store and fill the cache, snapshot only (what a
  start cost before) against snapshot plus history; each in a process of its own, so that the
  memory figure is that start's alone;
- on demand: reading the window from SQLite and replanning it, which each such resume would pay
  (the read and the load, timed apart in the history start);
- replay: how long one resume holds the event loop at a time (`WatchHub.start`), for a node's
  watcher and a selector watcher (`canary == 'true'`) from the oldest retained revision, and for an
  all-endpoints watcher with a watcher buffer's worth (10,000) of events.

With `--etcd` also what etcd offers a replica that has just started: reading N changes of etcd's
own history (a watch from R + 1 with prev_kv, `changes_since`) against the known-versions
difference the replica already sends a node agent (`WatchHub.start` with the agent's versions).

    .venv/bin/python -m bench.bench_resume_history                    # 10,000 endpoints, 100,000 rows
    .venv/bin/python -m bench.bench_resume_history --etcd             # and etcd (starts one; make etcd)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench import report
from bench.bench_store import throwaway_etcd
from bench.loop_gaps import loop_gaps
from bench.population import Shape, endpoint, key_of, node_name, profiles
from epsync._core import KnownVersions, split_known_versions
from epsync.model.kinds import PROFILES, WORKLOAD_ENDPOINTS, Kind
from epsync.server import gcpolicy
from epsync.store.base import Change, Datastore, Put
from epsync.store.etcd import EtcdDatastore
from epsync.store.etcd.client import EtcdClient, endpoints_target
from epsync.store.sqlite import SqliteDatastore
from epsync.sync.cache import ResourceCache
from epsync.sync.endpoint_hub import EndpointWatchHub
from epsync.sync.hub import BookmarkPolicy
from epsync.sync.retained import retained_history
from epsync.sync.watcher import WatcherLimits
from epsync.v1.workload_endpoint_service_pb2 import WatchWorkloadEndpointsRequest

GROUP = 1000  # writes per store.write() while building the store


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def fill(store: Datastore, shape: Shape, updates: int) -> None:
    """Every endpoint and profile of `shape`, then `updates` updates of endpoints in turn."""
    puts = [Put(Kind.PROFILE, p.metadata.name, PROFILES.encode(p)) for p in profiles(shape)]
    puts += [
        Put(Kind.WORKLOAD_ENDPOINT, key_of(j, shape), WORKLOAD_ENDPOINTS.encode(endpoint(j, shape)))
        for j in range(shape.endpoints)
    ]
    for first in range(0, len(puts), GROUP):
        await store.write(puts[first : first + GROUP])
    await fill_updates(store, shape, updates)


def known_versions(versions: dict[str, int]) -> KnownVersions:
    """A request's known versions as the server reads them (server/registration.py)."""
    request = WatchWorkloadEndpointsRequest(known_resource_versions=versions)
    field = WatchWorkloadEndpointsRequest.DESCRIPTOR.fields_by_name["known_resource_versions"].number
    return split_known_versions(request.SerializeToString(), field)[1]


async def hold(
    hub: EndpointWatchHub, request: WatchWorkloadEndpointsRequest, known: KnownVersions
) -> tuple[float, float, int]:
    """Seconds one watch start takes, the longest it holds the event loop at a time (what a task that only
    yields sees between its turns), and the events it queued."""
    async with loop_gaps() as gaps:
        started = time.perf_counter()
        watcher = await hub.start(request, known)
        seconds = time.perf_counter() - started
    hub.remove(watcher)
    return seconds, gaps.longest or seconds, watcher.queued_events - 1  # less the end-of-catch-up bookmark


async def start(path: Path, mode: str, window: int) -> dict[str, Any]:
    """One start on the store at `path` (in a process of its own): its seconds and memory, and with the
    history what a replay holds the loop for."""
    before = rss_mib()
    started = time.perf_counter()
    store = SqliteDatastore(path, history_window=window)
    await store.open()
    snapshot = await store.snapshot()
    cache = ResourceCache(window)
    row: dict[str, Any] = {"mode": mode}
    if mode == "history":
        read_started = time.perf_counter()
        since, history = await retained_history(store, snapshot.revision, window)
        load_started = time.perf_counter()
        cache.load(snapshot, history, since)
        row |= {"read_s": load_started - read_started, "load_s": time.perf_counter() - load_started}
        row["history_rows"] = len(history)
        del history
    else:
        cache.load(snapshot)
    row |= {"start_s": time.perf_counter() - started, "rss_mib": rss_mib() - before}
    gcpolicy.freeze_startup()  # as `epsync serve` does once started
    row["resumable_revisions"] = cache.revision - cache.oldest_replayable
    if mode == "history":
        hub = EndpointWatchHub(cache, WatcherLimits(), BookmarkPolicy())
        # R = 0 would be "from now": the oldest resumable revision that is not.
        oldest = max(1, cache.oldest_replayable)
        node = WatchWorkloadEndpointsRequest(node=node_name(0), resource_version=oldest)
        seconds, longest, events = await hold(hub, node, known_versions({}))
        row |= {"node_replay_ms": seconds * 1000, "node_replay_hold_ms": longest * 1000, "node_replay_events": events}
        everything = WatchWorkloadEndpointsRequest(
            resource_version=max(oldest, cache.revision - WatcherLimits().max_events)
        )
        seconds, longest, events = await hold(hub, everything, known_versions({}))
        row |= {"all_replay_ms": seconds * 1000, "all_replay_hold_ms": longest * 1000, "all_replay_events": events}
        # A selector watcher's replay evaluates its selector on every change logged since its revision.
        canaries = WatchWorkloadEndpointsRequest(label_selector="canary == 'true'", resource_version=oldest)
        seconds, longest, events = await hold(hub, canaries, known_versions({}))
        row |= {
            "selector_replay_ms": seconds * 1000,
            "selector_replay_hold_ms": longest * 1000,
            "selector_replay_events": events,
        }
    await store.close()
    return row


def in_child(path: Path, mode: str, window: int) -> dict[str, Any]:
    args = [
        sys.executable,
        "-m",
        "bench.bench_resume_history",
        "--child",
        mode,
        "--db",
        str(path),
        "--window",
        str(window),
    ]
    output = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


async def etcd_rows(shape: Shape, updates: int, directory: Path) -> list[dict[str, Any]]:
    """etcd's own history against the known-versions difference, for a replica that has just started."""
    async with throwaway_etcd(directory) as endpoints:
        prefix = f"/epsync-bench/{uuid.uuid4().hex}/"
        writer = EtcdDatastore(endpoints, prefix=prefix)
        await writer.open()
        await fill(writer, shape, 0)
        known_at = writer.current_revision
        await fill_updates(writer, shape, updates)
        await writer.close()
        replica = EtcdDatastore(endpoints, prefix=prefix)  # a replica that starts after the changes
        await replica.open()
        cache = ResourceCache()
        cache.load(await replica.snapshot())
        started = time.perf_counter()
        read = await read_etcd_history(endpoints, replica, known_at)
        read_s = time.perf_counter() - started
        hub = EndpointWatchHub(cache, WatcherLimits(), BookmarkPolicy())
        agent = {key_of(j, shape): known_at for j in range(shape.per_node)}  # node 0's endpoints, as held at R
        request = WatchWorkloadEndpointsRequest(node=node_name(0), resource_version=known_at)
        difference_s, _, difference_events = await hold(hub, request, known_versions(agent))
        await replica.close()
    return [
        {
            "mode": "etcd",
            "changes": read,
            "etcd_history_read_s": read_s,
            "difference_ms": difference_s * 1000,
            "difference_events": difference_events,
        }
    ]


async def fill_updates(store: Datastore, shape: Shape, updates: int) -> None:
    """`updates` updates of the endpoints in turn, each a new container ID (a CNI re-ADD)."""
    puts = []
    for j in range(updates):
        index = j % shape.endpoints
        changed = endpoint(index, shape, generation=1 + j // shape.endpoints)
        puts.append(Put(Kind.WORKLOAD_ENDPOINT, key_of(index, shape), WORKLOAD_ENDPOINTS.encode(changed)))
    for first in range(0, len(puts), GROUP):
        await store.write(puts[first : first + GROUP])


async def read_etcd_history(endpoints: list[str], store: EtcdDatastore, since: int) -> int:
    """Every change under the store's prefix after `since`, read from etcd's own history as a replay from it
    would (a watch from since + 1 with prev_kv, as `changes_since` reads it), each decoded into a Change:
    how many."""
    count = 0
    last = store.current_revision
    async with EtcdClient(endpoints_target(endpoints)) as client:
        watch = client.watch(store.keyspace.raw_prefix, prefix=True, start_revision=since + 1, prev_kv=True)
        async with watch:
            async for batch in watch:
                for event in batch.events:
                    parsed = store.keyspace.parse(event.kv.key)
                    previous = None if event.prev_kv is None else event.prev_kv.value
                    if parsed is not None:
                        Change(event.kv.mod_revision, *parsed, event.kv.value, previous, 0)
                        count += 1
                if batch.events and batch.events[-1].kv.mod_revision >= last:
                    break
    return count


async def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    shape = Shape(nodes=args.endpoints // 100, per_node=100)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="epsync-bench-resume-") as tmp:
        path = Path(tmp) / "epsync.db"
        store = SqliteDatastore(path, history_window=args.history)
        await store.open()
        await fill(store, shape, args.history - shape.endpoints - len(profiles(shape)))
        await store.close()
        for mode in ("snapshot", "history"):
            rows.append(in_child(path, mode, args.history))
            print(rows[-1], flush=True)
        if args.etcd:
            rows += await etcd_rows(shape, args.etcd_changes, Path(tmp))
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--endpoints", type=int, default=10_000)
    parser.add_argument("--history", type=int, default=100_000, help="history rows, and the window")
    parser.add_argument("--etcd", action="store_true", help="also measure etcd's own history (starts an etcd)")
    parser.add_argument("--etcd-changes", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=report.RESULTS)
    parser.add_argument("--child", choices=["snapshot", "history"], help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--window", type=int, default=100_000, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        gcpolicy.apply()  # as the server has it
        print(json.dumps(asyncio.run(start(args.db, args.child, args.window))))
        return
    rows = asyncio.run(measure(args))
    columns = [
        "mode",
        "start_s",
        "rss_mib",
        "read_s",
        "load_s",
        "resumable_revisions",
        "node_replay_hold_ms",
        "all_replay_events",
        "all_replay_ms",
        "all_replay_hold_ms",
        "selector_replay_events",
        "selector_replay_ms",
        "selector_replay_hold_ms",
    ]
    report.print_table(rows, columns)
    parameters = {
        "endpoints": args.endpoints,
        "history": args.history,
        "etcd_changes": args.etcd_changes if args.etcd else 0,
    }
    report.write("resume-history", parameters, rows, None, args.out)


if __name__ == "__main__":
    main()
