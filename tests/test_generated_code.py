"""The checked-in protobuf code must be exactly what `make proto` generates from proto/: Python and Go."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Every package `make proto` generates into, relative to pysrc/: our API, the vendored etcd v3 API and
# the internal protocol between the processes of one server.
GENERATED = ["epsync/v1", "epsync/etcd/v3", "epsync/internal/v1"]
# The Go package `make proto` generates (buf generate, buf.gen.yaml), relative to the repository.
GO_GENERATED = "clients/go/epsyncv1"


def test_generated_protobuf_code_is_up_to_date(tmp_path: Path) -> None:
    python_out = tmp_path / "python"
    go_out = tmp_path / "go"
    python_out.mkdir()
    # The very target a developer runs, pointed at scratch directories.
    subprocess.run(
        ["make", "--no-print-directory", "proto", f"PROTO_OUT={python_out}", f"GO_PROTO_OUT={go_out}"],
        cwd=REPO,
        check=True,
    )
    for package in GENERATED:
        fresh = {p.name: p.read_bytes() for p in (python_out / package).iterdir()}
        checked_in = {p.name: p.read_bytes() for p in (REPO / "pysrc" / package).iterdir() if "_pb2" in p.name}
        assert sorted(fresh) == sorted(checked_in), (
            f"{package}: generated file set differs: run `make proto` and commit"
        )
        stale = [name for name in fresh if fresh[name] != checked_in[name]]
        assert not stale, f"{package}: stale generated code {stale}: run `make proto` and commit"
    fresh_go = {p.name: p.read_bytes() for p in (go_out / GO_GENERATED).iterdir()}
    checked_in_go = {p.name: p.read_bytes() for p in (REPO / GO_GENERATED).iterdir()}
    assert sorted(fresh_go) == sorted(checked_in_go), (
        f"{GO_GENERATED}: generated file set differs: run `make proto` and commit"
    )
    stale_go = [name for name in fresh_go if fresh_go[name] != checked_in_go[name]]
    assert not stale_go, f"{GO_GENERATED}: stale generated code {stale_go}: run `make proto` and commit"
