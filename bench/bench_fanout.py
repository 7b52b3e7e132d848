"""Time the watch fan-out core (`EndpointIndex.apply` and `diff`) against pure Python evaluating every watcher.

A Kubernetes-shaped cluster: 100,000 endpoints in 200 namespaces (with their kns./ksa.
profiles) on 9,000 nodes, `node-0` hosting exactly 100; a `team.shared` profile named by
10,000 endpoints. 10,000 watcher groups: one per node (node filter only) and 1,000 distinct
selector watchers (own and inherited labels, `in`, `has`, `!=`, namespace-scoped ones).

Three operations, each as the Rust core does it and as pure Python does it by evaluating
every watcher's filter (compiled closures over dicts of effective labels):

- one endpoint's label change, planned through `apply`;
- one edit of `team.shared` that moves its 10,000 endpoints out of some selector watchers
  and into others (Python is timed on a sample of the endpoints and scaled up: evaluating
  10,000 watchers for each of 10,000 endpoints takes minutes);
- a known-versions diff for `node-0` (100 endpoints, some stale); Python either scans every
  endpoint with the filter, or (a stronger baseline) uses a node -> endpoints dict.

    .venv/bin/python -m bench.bench_fanout
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench import report
from bench.population import APPS, TIERS, Shape, namespace_name, own_labels, profile_specs, traits
from epsync._core import ADDED, DELETED, MODIFIED, EndpointIndex, Selector

Labels = Mapping[str, str]
Key = tuple[str, str]
Event = tuple[str, str, int, int]

ENDPOINTS = 100_000
NAMESPACES = 200
NODES = 9_000
NODE_0_ENDPOINTS = 100
SELECTOR_WATCHERS = 1_000
SHARED_PROFILE = "team.shared"
SHARED_USERS = 10_000
# The shared profile's label: not `team`, which every endpoint already inherits from its namespace's
# profile (listed first, so it would win and the shared profile's edits would move nothing).
SHARED_LABEL = "squad"
SQUADS = ("payments", "checkout")


# ---- a tiny pure-Python selector: text for Rust, a closure for Python ----


@dataclass(frozen=True)
class Sel:
    text: str
    test: Callable[[Labels], bool]


def eq(key: str, value: str) -> Sel:
    return Sel(f"{key} == '{value}'", lambda labels: labels.get(key) == value)


def ne(key: str, value: str) -> Sel:
    return Sel(f"{key} != '{value}'", lambda labels: labels.get(key) != value)


def in_(key: str, values: tuple[str, ...]) -> Sel:
    members = frozenset(values)
    return Sel(f"{key} in {{{', '.join(repr(v) for v in values)}}}", lambda labels: labels.get(key) in members)


def has(key: str) -> Sel:
    return Sel(f"has({key})", lambda labels: key in labels)


def and_(left: Sel, right: Sel) -> Sel:
    return Sel(f"({left.text}) && ({right.text})", lambda labels: left.test(labels) and right.test(labels))


@dataclass(frozen=True)
class Watcher:
    namespace: str
    node: str
    selector: Sel | None

    def matches(self, namespace: str, node: str, labels: Labels) -> bool:
        return (
            (not self.namespace or self.namespace == namespace)
            and (not self.node or self.node == node)
            and (self.selector is None or self.selector.test(labels))
        )


def selector_watchers(rng: random.Random, count: int) -> list[Watcher]:
    """`count` distinct selector watchers in a realistic mix; about a fifth are namespace-scoped."""
    namespaces = [namespace_name(n) for n in range(NAMESPACES)]
    makers: list[tuple[int, Callable[[], Watcher]]] = [
        (20, lambda: Watcher("", "", eq("app", rng.choice(APPS)))),
        (15, lambda: Watcher("", "", and_(in_("app", tuple(rng.sample(APPS, 2))), eq("env", "prod")))),
        (10, lambda: Watcher("", "", eq("app.kubernetes.io/instance", f"{rng.choice(APPS)}-{rng.choice(namespaces)}"))),
        (
            5,
            lambda: Watcher(
                "", "", has(rng.choice([SHARED_LABEL, "canary", "app.kubernetes.io/instance", "pod-template-hash"]))
            ),
        ),
        (5, lambda: Watcher("", "", ne("tier", rng.choice(TIERS)))),
        (10, lambda: Watcher(rng.choice(namespaces), "", eq("app", rng.choice(APPS)))),
        (5, lambda: Watcher(rng.choice(namespaces), "", None)),
        (3, lambda: Watcher(rng.choice(namespaces), "", ne("tier", rng.choice(TIERS)))),
        (10, lambda: Watcher("", "", eq("projectcalico.org/name", rng.choice(namespaces)))),
        (5, lambda: Watcher("", "", and_(eq("env", "prod"), eq("tier", rng.choice(TIERS))))),
        (6, lambda: Watcher("", "", and_(eq(SHARED_LABEL, rng.choice(SQUADS)), eq("app", rng.choice(APPS))))),
        (6, lambda: Watcher(rng.choice(namespaces), "", eq(SHARED_LABEL, rng.choice(SQUADS)))),
    ]
    weights = [weight for weight, _ in makers]
    # Distinct as the core sees them: by canonical selector.
    watchers: dict[tuple[str, str, str], Watcher] = {}
    candidates = (Watcher("", "", eq(SHARED_LABEL, squad)) for squad in SQUADS)
    while len(watchers) < count:
        watcher = next(candidates, None) or rng.choices(makers, weights)[0][1]()
        canonical = str(Selector(watcher.selector.text)) if watcher.selector else ""
        watchers.setdefault((watcher.namespace, watcher.node, canonical), watcher)
    return list(watchers.values())


# ---- the cluster, in Rust and in Python ----


@dataclass
class PyState:
    """The pure-Python side: endpoints, profiles, effective labels and a profile -> users map."""

    endpoints: dict[Key, tuple[str, dict[str, str], list[str], int]] = field(default_factory=dict)
    profiles: dict[str, dict[str, str]] = field(default_factory=dict)
    effective: dict[Key, dict[str, str]] = field(default_factory=dict)
    users: dict[str, set[Key]] = field(default_factory=dict)
    by_node: dict[str, set[Key]] = field(default_factory=dict)

    def inherit(self, own: Mapping[str, str], profiles: list[str]) -> dict[str, str]:
        labels = dict(own)
        for profile in profiles:
            for key, value in self.profiles.get(profile, {}).items():
                labels.setdefault(key, value)
        return labels


@dataclass
class Cluster:
    index: EndpointIndex
    py: PyState
    watchers: list[Watcher]
    groups: list[int]  # group id of each watcher
    revision: int


def endpoint_rows(shape: Shape) -> Iterator[tuple[str, str, str, dict[str, str], list[str], int]]:
    """The population's endpoints (namespace, labels), placed on this benchmark's nodes and shared profile."""
    node_0_every = ENDPOINTS // NODE_0_ENDPOINTS
    for i in range(ENDPOINTS):
        pod = traits(i, shape)
        ns = pod.namespace
        node = "node-0" if i % node_0_every == 0 else f"node-{1 + i % (NODES - 1)}"
        profiles = [f"kns.{ns}", f"ksa.{ns}.default"]
        if i % (ENDPOINTS // SHARED_USERS) == 3:
            profiles.append(SHARED_PROFILE)
        yield ns, f"{pod.app}-{i:06d}", node, own_labels(pod), profiles, i + 1


def build(seed: int) -> Cluster:
    # The shape gives the namespaces and the seed; where endpoints live is endpoint_rows' own layout.
    shape = Shape(nodes=ENDPOINTS // NODE_0_ENDPOINTS, per_node=NODE_0_ENDPOINTS, namespaces=NAMESPACES, seed=seed)
    rng = random.Random(seed)
    profiles = [*profile_specs(shape), (SHARED_PROFILE, {SHARED_LABEL: SQUADS[0]})]
    rows = list(endpoint_rows(shape))
    index = EndpointIndex()
    index.upsert_profiles(profiles)
    index.upsert_endpoints(rows)
    revision = ENDPOINTS + len(profiles)
    index.reset_log(revision)

    py = PyState(profiles=dict(profiles))
    for ns, name, node, labels, names, version in rows:
        py.endpoints[ns, name] = (node, labels, names, version)
        py.effective[ns, name] = py.inherit(labels, names)
        py.by_node.setdefault(node, set()).add((ns, name))
        for profile in names:
            py.users.setdefault(profile, set()).add((ns, name))

    watchers = [Watcher("", f"node-{n}", None) for n in range(NODES)] + selector_watchers(rng, SELECTOR_WATCHERS)
    groups = [
        index.add_group(w.namespace, w.node, None if w.selector is None else Selector(w.selector.text))
        for w in watchers
    ]
    assert len(set(groups)) == len(watchers) == index.group_count
    return Cluster(index, py, watchers, groups, revision)


# ---- the operations in pure Python: every watcher's filter, old and new state ----


def py_events(
    watchers: list[Watcher],
    key: Key,
    old: tuple[str, Labels] | None,
    new: tuple[str, Labels] | None,
    own_change: bool,
    revision: int,
    out: dict[int, list[Event]],
) -> None:
    namespace, name = key
    for w, watcher in enumerate(watchers):
        was = old is not None and watcher.matches(namespace, old[0], old[1])
        now = new is not None and watcher.matches(namespace, new[0], new[1])
        if was != now or (was and own_change):
            kind = ADDED if now and not was else DELETED if was and not now else MODIFIED
            out.setdefault(w, []).append((namespace, name, revision, kind))


def py_endpoint_change(
    c: Cluster, key: Key, node: str, labels: dict[str, str], revision: int
) -> dict[int, list[Event]]:
    old_node, _, profiles, _ = c.py.endpoints[key]
    old_labels = c.py.effective[key]
    new_labels = c.py.inherit(labels, profiles)
    c.py.endpoints[key] = (node, labels, profiles, revision)
    c.py.effective[key] = new_labels
    out: dict[int, list[Event]] = {}
    py_events(c.watchers, key, (old_node, old_labels), (node, new_labels), True, revision, out)
    return out


def py_profile_change(
    c: Cluster, name: str, labels: dict[str, str], revision: int, sample: list[Key]
) -> dict[int, list[Event]]:
    c.py.profiles[name] = labels
    out: dict[int, list[Event]] = {}
    for key in sample:
        node, own, profiles, _ = c.py.endpoints[key]
        old = c.py.effective[key]
        new = c.py.inherit(own, profiles)
        c.py.effective[key] = new
        if new != old:
            py_events(c.watchers, key, (node, old), (node, new), False, revision, out)
    return out


def py_diff(
    c: Cluster, watcher: Watcher, known: Mapping[str, int], candidates: Iterator[Key]
) -> tuple[list[Key], list[Key], list[Key]]:
    matching = {}
    for key in candidates:
        node, _, _, version = c.py.endpoints[key]
        if watcher.matches(key[0], node, c.py.effective[key]):
            matching[key] = version
    split = {tuple(k.split("/", 1)): v for k, v in known.items()}
    added = sorted(k for k in matching if k not in split)
    modified = sorted(k for k, v in matching.items() if k in split and split[k] != v)
    deleted = sorted(k for k in split if k not in matching)
    return added, modified, deleted  # type: ignore[return-value]


# ---- measuring ----


def micros(samples: list[int]) -> tuple[float, float]:
    """Median and 99th percentile of nanosecond samples, in microseconds."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered) / 1000, p99 / 1000


def rust_deliveries(
    c: Cluster, subjects: list[Event], deliveries: list[tuple[int, list[int]]]
) -> dict[int, set[Event]]:
    """Rust's plan as watcher index -> its events, to compare with the Python plan."""
    watcher_of = {group: w for w, group in enumerate(c.groups)}
    return {watcher_of[group]: {subjects[i] for i in indices} for group, indices in deliveries}


def bench_endpoint_change(c: Cluster, rng: random.Random, runs: int, py_runs: int) -> list[report.Row]:
    keys = list(c.py.endpoints)
    rust_ns: list[int] = []
    py_ns: list[int] = []
    events = 0
    for run in range(runs + py_runs):
        key = rng.choice(keys)
        node, own, profiles, _ = c.py.endpoints[key]
        labels = dict(own, tier=TIERS[(TIERS.index(own["tier"]) + 1) % len(TIERS)])
        c.revision += 1
        change = [(c.revision, key[0], key[1], node, labels, profiles)]
        started = time.perf_counter_ns()
        subjects, deliveries = c.index.apply(change, [])
        elapsed = time.perf_counter_ns() - started
        if run < runs:  # the Rust figures come from runs not interleaved with Python's
            rust_ns.append(elapsed)
            events += sum(len(indices) for _, indices in deliveries)
            c.py.endpoints[key] = (node, labels, profiles, c.revision)
            c.py.effective[key] = c.py.inherit(labels, profiles)
        else:  # the same change in Python, checked against Rust's plan
            started = time.perf_counter_ns()
            expected = py_endpoint_change(c, key, node, labels, c.revision)
            py_ns.append(time.perf_counter_ns() - started)
            assert rust_deliveries(c, subjects, deliveries) == {w: set(e) for w, e in expected.items()}
        if run % 1000 == 999:
            c.index.trim_log(c.revision)
    rust, py = micros(rust_ns), micros(py_ns)
    return [
        row("endpoint change", "rust", rust, len(rust_ns), events / len(rust_ns), speedup=py[0] / rust[0]),
        row("endpoint change", "python", py, len(py_ns), events / len(rust_ns)),
    ]


def bench_profile_change(c: Cluster, rng: random.Random, runs: int, py_runs: int, sample: int) -> list[report.Row]:
    users = sorted(c.py.users[SHARED_PROFILE])
    assert len(users) == SHARED_USERS
    rust_ns: list[int] = []
    py_ns: list[int] = []
    moved = 0
    for run in range(runs + py_runs):
        labels = {SHARED_LABEL: SQUADS[(run + 1) % 2]}
        c.revision += 1
        started = time.perf_counter_ns()
        subjects, deliveries = c.index.apply([], [(c.revision, SHARED_PROFILE, labels)])
        rust_ns.append(time.perf_counter_ns() - started)
        moved = len(subjects)
        if run >= runs:
            chosen = rng.sample(users, sample)
            started = time.perf_counter_ns()
            expected = py_profile_change(c, SHARED_PROFILE, labels, c.revision, chosen)
            py_ns.append((time.perf_counter_ns() - started) * SHARED_USERS // sample)
            in_sample = set(chosen)
            got = {
                w: {e for e in events if (e[0], e[1]) in in_sample}
                for w, events in rust_deliveries(c, subjects, deliveries).items()
            }
            assert {w: e for w, e in got.items() if e} == {w: set(e) for w, e in expected.items()}
            rest = [k for k in users if k not in in_sample]
        else:
            c.py.profiles[SHARED_PROFILE] = labels
            rest = users
        for key in rest:  # keep the Python state current, untimed
            _, own, profiles, _ = c.py.endpoints[key]
            c.py.effective[key] = c.py.inherit(own, profiles)
        c.index.trim_log(c.revision)
    rust, py = micros(rust_ns), micros(py_ns)
    return [
        row("profile change (10k endpoints)", "rust", rust, len(rust_ns), moved, speedup=py[0] / rust[0]),
        row("profile change (10k endpoints)", f"python (x{SHARED_USERS // sample} of a {sample} sample)", py,
            len(py_ns), moved),
    ]  # fmt: skip


def bench_diff(c: Cluster, runs: int, py_runs: int) -> list[report.Row]:
    node_0 = c.groups[0]
    watcher = c.watchers[0]
    assert watcher.node == "node-0"
    on_node = sorted(c.py.by_node["node-0"])
    assert len(on_node) == NODE_0_ENDPOINTS
    # The client knows every endpoint on the node, a tenth of them at an older version, plus one gone.
    known = {f"{ns}/{name}": c.py.endpoints[ns, name][3] - (i % 10 == 0) for i, (ns, name) in enumerate(on_node)}
    known["ns-0/gone"] = 1
    expected = py_diff(c, watcher, known, iter(on_node))
    assert c.index.diff(node_0, known) == expected
    assert len(expected[1]) == NODE_0_ENDPOINTS // 10

    def timed(function: Callable[[], object], count: int) -> list[int]:
        samples = []
        for _ in range(count):
            started = time.perf_counter_ns()
            function()
            samples.append(time.perf_counter_ns() - started)
        return samples

    rust = micros(timed(lambda: c.index.diff(node_0, known), runs))
    scan = micros(timed(lambda: py_diff(c, watcher, known, iter(c.py.endpoints)), py_runs))
    by_node = micros(timed(lambda: py_diff(c, watcher, known, iter(c.py.by_node["node-0"])), runs))
    return [
        row("node-0 diff (100 known)", "rust", rust, runs, len(known), speedup=scan[0] / rust[0]),
        row("node-0 diff (100 known)", "python (scan)", scan, py_runs, len(known)),
        row("node-0 diff (100 known)", "python (node dict)", by_node, runs, len(known), speedup=scan[0] / by_node[0]),
    ]


def row(
    operation: str, implementation: str, times: tuple[float, float], runs: int, events: float, speedup: float = 0.0
) -> report.Row:
    result: dict[str, float | int | str] = {
        "operation": operation,
        "side": implementation if implementation == "python (node dict)" else implementation.split(" ")[0],
        "implementation": implementation,
        "median_us": times[0],
        "p99_us": times[1],
        "runs": runs,
        "events": events,
    }
    if speedup:
        result["x_vs_python"] = speedup
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3000, help="timed Rust endpoint changes and diffs")
    parser.add_argument("--profile-runs", type=int, default=21, help="timed Rust profile changes")
    parser.add_argument("--python-runs", type=int, default=200, help="timed Python endpoint changes")
    parser.add_argument("--python-profile-runs", type=int, default=3)
    parser.add_argument("--python-sample", type=int, default=500, help="endpoints per timed Python profile change")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=report.RESULTS)
    args = parser.parse_args()

    started = time.perf_counter()
    cluster = build(args.seed)
    # The cluster's millions of Python objects are permanent: keep the cyclic collector from
    # re-scanning them inside timed calls (a long-running server would do the same).
    gc.collect()
    gc.freeze()
    print(f"built {ENDPOINTS:,} endpoints, {len(cluster.groups):,} groups in {time.perf_counter() - started:.1f}s")
    rng = random.Random(args.seed + 1)
    rows = [
        *bench_endpoint_change(cluster, rng, args.runs, args.python_runs),
        *bench_profile_change(cluster, rng, args.profile_runs, args.python_profile_runs, args.python_sample),
        *bench_diff(cluster, args.runs, 20),
    ]
    report.print_table(rows, ["operation", "implementation", "median_us", "p99_us", "runs", "events", "x_vs_python"])
    parameters = {
        "endpoints": ENDPOINTS,
        "namespaces": NAMESPACES,
        "nodes": NODES,
        "groups": len(cluster.groups),
        "node_watchers": NODES,
        "selector_watchers": SELECTOR_WATCHERS,
        "shared_profile_users": SHARED_USERS,
        "node_0_endpoints": NODE_0_ENDPOINTS,
        **{k: v for k, v in vars(args).items() if k != "out"},
    }
    plot = report.Plot(
        x="operation", y="median_us", series="side", title="Watch fan-out: median time (log)", log_y=True
    )
    report.write("fanout", parameters, rows, plot, args.out)


if __name__ == "__main__":
    main()
