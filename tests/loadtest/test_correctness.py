"""Scenario 6's comparison of every watcher's view with the store, and that it catches a wrong view."""

from __future__ import annotations

import sys
from pathlib import Path

from bench.loadtest.control import Child
from bench.loadtest.fleet import Fleet
from bench.loadtest.scenarios import s6_correctness
from bench.loadtest.sut import EpsyncProcess, python_env
from bench.population import Shape, membership, node_name

SHAPE = Shape(nodes=6, per_node=4, namespaces=3)


def specs(selectors: int) -> list[dict[str, object]]:
    m = membership(SHAPE, selectors)
    return [{"id": n, "cls": "node", "node": node_name(n)} for n in range(SHAPE.nodes)] + [
        {"id": SHAPE.nodes + s, "cls": "selector", "selector": m.selectors[s]} for s in range(selectors)
    ]


def test_expected_views_follow_nodes_and_selectors() -> None:
    m = membership(SHAPE, 3)
    store: s6_correctness.Store = {m.keys[j]: (node_name(j // SHAPE.per_node), 100 + j) for j in range(SHAPE.endpoints)}
    expected = s6_correctness.expected_views(store, specs(3), m)
    assert expected[0] == {m.keys[j]: 100 + j for j in range(4)}
    for s in range(3):
        assert expected[SHAPE.nodes + s] == {m.keys[j]: 100 + j for j in m.selector_members[s]}
    assert s6_correctness.differences(expected, expected) == []


def test_differences_name_missing_extra_and_stale_keys() -> None:
    expected = {1: {"ns/a": 5, "ns/b": 6}, 2: {"ns/c": 7}, 3: {}}
    views = {1: {"ns/a": 5, "ns/b": 4, "ns/x": 9}, 2: {}}
    found = s6_correctness.differences(views, expected)
    assert "watcher 1: ns/b at version 4, store has 6" in found
    assert "watcher 1: holds ns/x at version 9, which it should not hold" in found
    assert "watcher 2: missing ns/c (store has version 7)" in found
    assert "watcher 3: no view reported" in found
    assert len(s6_correctness.differences(views, expected, limit=1)) == 2  # one, then the count of the rest


async def test_views_of_real_watchers_equal_the_store_and_a_tampered_one_is_caught(tmp_path: Path) -> None:
    server = EpsyncProcess(tmp_path / "data", tmp_path / "server.log")
    await server.start()
    writer = fleet = None
    try:
        argv = [sys.executable, "-m", "bench.loadtest.writer", "--mode", "epsync", "--target", server.target,
                "--nodes", str(SHAPE.nodes), "--per-node", str(SHAPE.per_node), "--namespaces", "3"]  # fmt: skip
        writer = await Child.start("writer", argv, tmp_path, python_env())
        await writer.call("load", within=60)
        fleet = Fleet("epsync", server.target, 2, tmp_path)
        watchers = specs(4)
        await fleet.start(watchers, within=60)
        await writer.call("run", rate=200, duration=1.0, within=60)
        m = membership(SHAPE, 4)
        target = server.target

        async def store() -> s6_correctness.Store:
            return await s6_correctness.epsync_store(target)

        result = await s6_correctness.check("test", "epsync", store, fleet.views, watchers, m)
        assert result.ok, result.differences
        assert result.keys >= SHAPE.endpoints

        selector = SHAPE.nodes + next(k for k in range(4) if m.selector_members[k])

        async def tampered() -> dict[int, dict[str, int]]:
            views = {ident: dict(view) for ident, view in (await fleet.views()).items()}
            key = next(iter(views[2]))
            views[2][key] -= 1
            del views[selector][next(iter(views[selector]))]  # a selector watcher with members loses one
            return views

        wrong = await s6_correctness.check("test", "epsync", store, tampered, watchers, m, settle_seconds=0.5)
        assert not wrong.ok
        assert any(line.startswith("watcher 2: ") and "store has" in line for line in wrong.differences)
        assert any(line.startswith(f"watcher {selector}: missing") for line in wrong.differences)
        assert wrong.row()["result"] == "FAILED"
    finally:
        if fleet is not None:
            await fleet.stop()
        if writer is not None:
            await writer.stop()
        await server.stop()
