"""How `epsync watch` prints events: a line each, or one YAML document / JSON line each."""

from __future__ import annotations

import json
import sys
from typing import Any

import yaml

from epsync.cli.manifest import to_manifest_dict
from epsync.client.view import WatchEvent
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint


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
