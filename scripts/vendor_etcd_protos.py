"""Vendor etcd's v3 API protos (rpc.proto and what it imports) into proto/epsync/etcd/v3/, annotation-free.

Usage: python scripts/vendor_etcd_protos.py VERSION   (`make etcd-protos` runs it with the pinned version)

The sources come from the Go module go.etcd.io/etcd/api/v3@VERSION, fetched with `go mod download`
(the Go module proxy, checked against sum.golang.org). Only what protoc needs changes:
- the gogoproto and google.api (grpc-gateway) imports and options go, so no third-party protos are needed;
- imports point at the vendored paths, which mirror the Python package the code is generated into
  (epsync.etcd.v3), as protoc derives module paths from proto paths.
Messages, fields, services and comments are etcd's, so the wire format and method names
(/etcdserverpb.KV/Range, ...) are unchanged. etcd is Apache-2.0: its LICENSE is copied alongside.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

MODULE = "go.etcd.io/etcd/api/v3"
OUT = Path(__file__).resolve().parent.parent / "proto" / "epsync" / "etcd" / "v3"
IMPORT_PREFIX = "epsync/etcd/v3"
# Vendored name -> path inside the module. rpc.proto imports the other two.
FILES = {"rpc.proto": "etcdserverpb/rpc.proto", "kv.proto": "mvccpb/kv.proto", "auth.proto": "authpb/auth.proto"}


def drop_http_options(text: str) -> str:
    """`rpc X(A) returns (B) { option (google.api.http) = {...}; }` -> `rpc X(A) returns (B) {}`."""
    opening = re.compile(r"\{\s*option \(google\.api\.http\) = \{")
    while match := opening.search(text):
        depth, end = 1, match.end()
        while depth:  # the option's value may nest (additional_bindings { ... })
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            end += 1
        closing = re.compile(r"\s*;\s*\}").match(text, end)
        if closing is None:
            raise SystemExit(f"unexpected text after a google.api.http option: {text[end : end + 80]!r}")
        text = text[: match.start()] + "{}" + text[closing.end() :]
    return text


def strip(text: str) -> str:
    text = drop_http_options(text)
    text = re.sub(r'^import "(gogoproto/gogo|google/api/annotations)\.proto";\n', "", text, flags=re.MULTILINE)
    text = re.sub(r"^// for grpc-gateway\n", "", text, flags=re.MULTILINE)
    text = re.sub(r"^option \(gogoproto\.\w+\) = \w+;\n", "", text, flags=re.MULTILINE)
    text = re.sub(r"\s*\[\(gogoproto\.[^]]*\]", "", text)  # field options, e.g. [(gogoproto.nullable) = false]
    for name, path in FILES.items():
        text = text.replace(f'import "etcd/api/{path}";', f'import "{IMPORT_PREFIX}/{name}";')
    text = re.sub(r"\n{3,}", "\n\n", text)
    leftover = re.findall(r".*(?:gogoproto|google\.api|import \"etcd/).*", text)
    if leftover:
        raise SystemExit(f"annotations or imports left after stripping (etcd changed its protos?): {leftover}")
    return text


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    version = sys.argv[1]
    info = json.loads(
        subprocess.run(
            ["go", "mod", "download", "-json", f"{MODULE}@{version}"], check=True, capture_output=True, text=True
        ).stdout
    )
    source = Path(info["Dir"])
    OUT.mkdir(parents=True, exist_ok=True)
    for name, path in FILES.items():
        header = (
            f"// Vendored from {MODULE}@{version} {path} by scripts/vendor_etcd_protos.py; do not edit.\n"
            f"// gogoproto and google.api annotations are stripped; nothing else is changed.\n"
            f"// Copyright The etcd Authors. Licensed under the Apache License, Version 2.0 (see LICENSE here).\n\n"
        )
        (OUT / name).write_text(header + strip((source / path).read_text()))
    (OUT / "LICENSE").write_bytes((source / "LICENSE").read_bytes())
    print(f"vendored {', '.join(FILES)} from {MODULE}@{version} ({info['Sum']}) into {OUT}")


if __name__ == "__main__":
    main()
