"""What `-f` names, read and loaded: files, directories and stdin, each resource with where it came from.

Every bad input ends in one `UsageError` line naming the file (and, from the loader, the document):
an unreadable file, bytes that are not UTF-8, a NUL byte, a file too large to be a manifest. Nothing is
sent to a server before every file has loaded, so a bad file changes nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from epsync.cli.manifest import ManifestError, Resource, load_positioned_manifests
from epsync.errors import UsageError
from epsync.model.kinds import DEFAULT_NAMESPACE
from epsync.model.naming import derived_name
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint

# Far more than any manifest of endpoints and profiles (the server takes 16 MiB a message); a larger
# file is almost certainly the wrong file, and reading it whole would only cost memory.
MAX_FILE_BYTES = 64 << 20
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True, slots=True)
class Loaded:
    """One resource of a file, with where it stands: `source` "a.yaml" or "-", `position` "document 2"."""

    resource: Resource
    source: str
    position: str

    def where(self, *, several_sources: bool) -> str:
        return f"{self.source} {self.position}" if several_sources else self.position


def describe(obj: Resource) -> str:
    """`workloadendpoint prod/web-eth0` or `profile web`, the name derived as the server derives it."""
    if isinstance(obj, WorkloadEndpoint):
        return f"workloadendpoint {obj.metadata.namespace or DEFAULT_NAMESPACE}/{endpoint_name(obj)}"
    return f"profile {obj.metadata.name}"


def endpoint_name(obj: WorkloadEndpoint) -> str:
    """The endpoint's name: as written, or derived from its spec as Calico (and the server) derive it."""
    return obj.metadata.name or derived_name(obj.spec) or "(no name)"


def manifest_paths(filenames: Sequence[str]) -> list[str]:
    """The files `-f` names: a directory stands for its manifests (not recursively), sorted by name."""
    paths: list[str] = []
    for name in filenames:
        path = Path(name)
        if name != "-" and path.is_dir():
            found = sorted(str(p) for p in path.iterdir() if p.suffix in MANIFEST_SUFFIXES and p.is_file())
            if not found:
                raise UsageError(f"{name}: a directory with no .yaml, .yml or .json files")
            paths += found
        else:
            paths.append(name)
    return paths


def read_text(name: str) -> str:
    """A manifest file's text, checked: readable, bounded, UTF-8, no NUL bytes."""
    try:
        if name == "-":
            data = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
        else:
            with open(name, "rb") as file:
                data = file.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise UsageError(f"cannot read {name}: {error.strerror or error}") from None
    if len(data) > MAX_FILE_BYTES:
        raise UsageError(f"{name}: larger than {MAX_FILE_BYTES >> 20} MiB; not a manifest")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise UsageError(
            f"{name}: not UTF-8 text: byte 0x{data[error.start]:02x} at line {line} (offset {error.start})"
        ) from None
    nul = text.find("\0")
    if nul >= 0:
        raise UsageError(f"{name}: a NUL byte at line {text.count(chr(10), 0, nul) + 1}: not a text manifest")
    return text.removeprefix("\ufeff")  # a byte-order mark is not part of the YAML


def load_files(filenames: Sequence[str]) -> list[Loaded]:
    """Every resource of every file `-f` names, in order; the first problem is an error naming its file."""
    if filenames.count("-") > 1:
        raise UsageError("'-' (stdin) may be given once")
    loaded: list[Loaded] = []
    for name in manifest_paths(filenames):
        try:
            positioned = load_positioned_manifests(read_text(name))
        except ManifestError as error:
            raise UsageError(f"{name}: {error}; nothing was sent to the server") from None
        loaded += [Loaded(resource, name, position) for position, resource in positioned]
    if not loaded:
        raise UsageError(f"{', '.join(filenames)}: no resources")
    return loaded
