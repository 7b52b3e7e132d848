"""How the commands print resources and watch events.

Resources: `table` (the default), `wide` (also workload, NATs, profiles and labels), `name` (one
`KIND/NAMESPACE/NAME` or `KIND/NAME` line each, which `delete`, `get`, `label` and `patch` take back),
`yaml` and `json`. A listing in YAML or JSON is always a `<Kind>List` with `items`, however many there
are (0 and 1 included), so that `jq '.items[]'` always works; one named resource is printed as itself.
An empty cell in a table is `<none>`, so that the columns split on whitespace.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from epsync.cli.manifest import dump_manifests, to_manifest_dict
from epsync.client.view import WatchEvent
from epsync.model.kinds import DEFAULT_NAMESPACE
from epsync.v1.profile_pb2 import Profile
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint

Resource = WorkloadEndpoint | Profile
NONE = "<none>"
_HEADERS = {
    ("workloadendpoint", False): ("NAMESPACE", "NAME", "NODE", "NETWORKS", "INTERFACE", "VERSION"),
    ("workloadendpoint", True): (
        "NAMESPACE",
        "NAME",
        "WORKLOAD",
        "NODE",
        "NETWORKS",
        "NATS",
        "INTERFACE",
        "PROFILES",
        "LABELS",
        "VERSION",
    ),
    ("profile", False): ("NAME", "LABELS-TO-APPLY", "VERSION"),
    ("profile", True): ("NAME", "LABELS-TO-APPLY", "LABELS", "VERSION"),
}


def print_resources(objects: Sequence[Resource], output: str, kind: str, *, listing: bool) -> None:
    """Print `objects` of `kind` ("workloadendpoint" or "profile"); `listing`: a list, not named ones."""
    if output in ("json", "yaml"):
        as_list = listing or len(objects) != 1
        list_kind = ("WorkloadEndpoint" if kind == "workloadendpoint" else "Profile") if as_list else None
        sys.stdout.write(dump_manifests(objects, "json" if output == "json" else "yaml", list_kind=list_kind))
        return
    if output == "name":
        for obj in objects:
            print(reference(obj))
        return
    wide = output == "wide"
    rows = [_row(obj, wide=wide) for obj in objects]
    header = _HEADERS[kind, wide]
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    for line in (header, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


def reference(obj: Resource) -> str:
    """`workloadendpoint/NAMESPACE/NAME` or `profile/NAME`: what `-o name` prints and the commands take."""
    if isinstance(obj, WorkloadEndpoint):
        return f"workloadendpoint/{obj.metadata.namespace or DEFAULT_NAMESPACE}/{obj.metadata.name}"
    return f"profile/{obj.metadata.name}"


def _cell(values: Sequence[str] | str) -> str:
    text = values if isinstance(values, str) else ",".join(values)
    return text or NONE


def _labels(labels: Any) -> str:
    return _cell([f"{k}={v}" for k, v in sorted(labels.items())])


def _row(obj: Resource, *, wide: bool) -> tuple[str, ...]:
    meta, version = obj.metadata, str(obj.metadata.resource_version)
    if isinstance(obj, WorkloadEndpoint):
        spec = obj.spec
        if not wide:
            return (
                meta.namespace,
                meta.name,
                _cell(spec.node),
                _cell(spec.ip_networks),
                _cell(spec.interface_name),
                version,
            )
        nats = [f"{nat.internal_ip}->{nat.external_ip}" for nat in spec.ip_nats]
        return (
            meta.namespace,
            meta.name,
            _cell(spec.workload),
            _cell(spec.node),
            _cell(spec.ip_networks),
            _cell(nats),
            _cell(spec.interface_name),
            _cell(spec.profiles),
            _labels(meta.labels),
            version,
        )
    if not wide:
        return (meta.name, _labels(obj.spec.labels_to_apply), version)
    return (meta.name, _labels(obj.spec.labels_to_apply), _labels(meta.labels), version)


# --- watch events -------------------------------------------------------------------------------------------


def print_event(event: WatchEvent[Any], output: str) -> None:
    """Print one event to stdout at once (a watch is read as it happens)."""
    if output == "table":
        line = _table_line(event)
        if line:
            print(line, flush=True)
        return
    document: dict[str, Any] = {"type": event.type, "resourceVersion": str(event.resource_version)}
    if event.initial_events_end:
        document["initialEventsEnd"] = True
    if event.object is not None:
        document["object"] = to_manifest_dict(event.object)
    if output == "json":
        print(json.dumps(document), flush=True)
    else:
        sys.stdout.write("---\n" + yaml.safe_dump(document, sort_keys=False))
        sys.stdout.flush()


def _table_line(event: WatchEvent[Any]) -> str | None:
    if event.object is None:
        # Periodic bookmarks are progress only; the one that ends the catch-up is worth saying.
        return f"{'SYNCED':<9} {event.resource_version:>8}" if event.initial_events_end else None
    meta = event.object.metadata
    if isinstance(event.object, WorkloadEndpoint):
        return f"{event.type:<9} {event.resource_version:>8}  {meta.namespace}/{meta.name}  {event.object.spec.node}"
    return f"{event.type:<9} {event.resource_version:>8}  {meta.name}"
