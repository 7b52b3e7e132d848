"""The whole load test at tiny sizes, for real: every scenario, every system, results on disk, exit 0.

`make bench-smoke` runs this file; a run prints its summary tables as `python -m bench.loadtest --smoke` does.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from bench.loadtest.options import SMOKE, SMOKE_TIMEOUT, Settings, add_arguments, settings_from
from bench.loadtest.run import Bench

# The run stops itself once SMOKE_TIMEOUT has passed, then still stops every process it started (each
# with a grace period) and writes its JSON and plots. pytest's own limit leaves it that long, so a slow
# run fails as the run's timeout (its errors and summary) and never as pytest's (a bare stack trace).
WIND_DOWN_SECONDS = 60.0
SMOKE_RUN_TEST_TIMEOUT = SMOKE_TIMEOUT + WIND_DOWN_SECONDS


def parse(*argv: str) -> Settings:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return settings_from(parser.parse_args(list(argv)))


def test_smoke_sizes_replace_defaults_but_not_explicit_flags(tmp_path: Path) -> None:
    settings = parse("--smoke", "--nodes", "7", "--out", str(tmp_path), "--scenarios", "1,6")
    assert settings.nodes == 7
    assert settings.per_node == SMOKE["per_node"]
    assert settings.timeout == SMOKE["timeout"]
    assert settings.scenarios == (1, 6)
    assert settings.out == tmp_path
    assert parse().nodes == 2000
    with pytest.raises(SystemExit):
        parse("--scenarios", "9")


@pytest.mark.timeout(SMOKE_RUN_TEST_TIMEOUT)
async def test_smoke_run_measures_every_scenario_and_finds_every_view_correct(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = parse("--smoke", "--out", str(tmp_path))
    status = await Bench(settings).run()
    printed, progress = capsys.readouterr()
    sys.stderr.write(progress)  # captured again: shown if the test fails
    with capsys.disabled():
        sys.stdout.write(printed)  # the summary tables, whether the test passes or fails
    assert status == 0
    for name in ("scenario1", "scenario2", "scenario3", "scenario4", "scenario5", "scenario6", "scenario7", "summary"):
        assert (tmp_path / f"{name}.json").exists(), name
    checks = json.loads((tmp_path / "scenario6.json").read_text())["results"]
    assert {(c["scenario"], c["system"]) for c in checks} >= {
        ("scenario1", "epsync"), ("scenario2", "epsync"), ("scenario3", "epsync"), ("scenario4", "epsync"),
        ("scenario4", "etcd"), ("scenario2", "etcd"), ("scenario5", "raw"), ("scenario7", "epsync x2 on etcd"),
    }  # fmt: skip
    assert all(c["result"] == "ok" for c in checks)
    storms = json.loads((tmp_path / "scenario2.json").read_text())["results"]
    assert {(r["system"], r["storm"]) for r in storms} == {(s, x) for s in ("epsync", "etcd") for x in "abc"}
    assert all(r["bytes_received"] > 0 for r in storms)
    sweep = json.loads((tmp_path / "scenario1.json").read_text())["results"]
    assert all(r["count"] > 0 and r["events_per_s"] > 0 for r in sweep)
    cluster = json.loads((tmp_path / "scenario7.json").read_text())["results"]
    assert all(r["system"] == "epsync x2 on etcd" and r["count"] > 0 for r in cluster)
    stall = json.loads((tmp_path / "scenario3.json").read_text())["results"]
    assert next(r for r in stall if r["phase"] == "stalled watchers")["cut_off_node"] > 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {row["metric"] for row in summary["results"]} >= {"peak server RSS, steady churn (MiB)"}
    assert (tmp_path / "scenario1-latency.png").exists()
    assert (tmp_path / "scenario2-completion.png").exists()
    assert (tmp_path / "summary-memory.png").exists()


def test_an_interrupted_run_leaves_no_process_behind(tmp_path: Path) -> None:
    """SIGKILL the orchestrator mid-run: its servers and agents die with it (PR_SET_PDEATHSIG)."""
    command = [sys.executable, "-m", "bench.loadtest", "--smoke", "--scenarios", "1", "--out", str(tmp_path)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    assert process.stdout is not None
    output = []
    for line in process.stdout:
        output.append(line.decode(errors="replace"))
        if b"W=" in line:  # the sweep has started: server, writer and agents are all running
            break
    children = _descendants(process.pid)
    assert len(children) >= 3, "".join(output)  # the server (one process on two cores), the writer, the agents
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    process.stdout.close()
    for pid in children:
        _wait_gone(pid)


def _descendants(pid: int) -> list[int]:
    """From /proc (no procps on a bare machine): every process whose parent chain leads to `pid`."""
    found: list[int] = []
    for child in _children(pid):
        found += [child, *_descendants(child)]
    return found


def _children(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended while we looked
        if int(fields[1]) == pid:  # the field after the state is the parent's pid
            children.append(int(stat.parent.name))
    return children


def _wait_gone(pid: int) -> None:
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} outlived the orchestrator")
