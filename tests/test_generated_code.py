"""The checked-in protobuf code must be exactly what `make proto` generates from proto/."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Every package `make proto` generates into, relative to pysrc/: our API and the vendored etcd v3 API.
GENERATED = ["epsync/v1", "epsync/etcd/v3"]


def test_generated_protobuf_code_is_up_to_date(tmp_path: Path) -> None:
    # The very target a developer runs, pointed at a scratch directory.
    subprocess.run(["make", "--no-print-directory", "proto", f"PROTO_OUT={tmp_path}"], cwd=REPO, check=True)
    for package in GENERATED:
        fresh = {p.name: p.read_bytes() for p in (tmp_path / package).iterdir()}
        checked_in = {p.name: p.read_bytes() for p in (REPO / "pysrc" / package).iterdir() if "_pb2" in p.name}
        assert sorted(fresh) == sorted(checked_in), (
            f"{package}: generated file set differs: run `make proto` and commit"
        )
        stale = [name for name in fresh if fresh[name] != checked_in[name]]
        assert not stale, f"{package}: stale generated code {stale}: run `make proto` and commit"
