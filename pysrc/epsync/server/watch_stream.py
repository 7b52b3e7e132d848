"""Serving one watch stream: start the watcher, write its responses, end with its status."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from epsync._core import KnownVersions
from epsync.errors import MAX_LISTED_VIOLATIONS, FieldViolation, InvalidArgument
from epsync.model.kinds import MAX_KNOWN_VERSIONS
from epsync.server.resource_servicer import Context, require_revision
from epsync.server.status import abort, status_error
from epsync.sync.hub import WatchHub, WatchRequest
from epsync.sync.watcher import Watcher

log = logging.getLogger(__name__)

Q = TypeVar("Q", bound=WatchRequest)


async def serve_watch(
    hub: WatchHub[Any, Q],
    request: Q,
    known: KnownVersions,
    context: Context,
    wait_until_servable: Callable[[int], Awaitable[None]],
) -> None:
    try:
        _check_versions(request, known)
        hub.check_store(request)
        await wait_until_servable(request.resource_version)
        watcher = await hub.start(request, known)
    except Exception as error:
        await abort(context, status_error(error, "starting a watch"))
        return
    try:
        await _write_responses(hub, watcher, context)
    finally:
        hub.remove(watcher)
    if watcher.error is not None:
        await abort(context, watcher.error)


# MAX_KNOWN_VERSIONS: past it a client re-lists. A bigger map would cost the server more to read
# than the initial state costs to send (bench/bench_stall.py measures what one such request holds up).


def _check_versions(request: WatchRequest, known: KnownVersions) -> None:
    """Negative revisions are INVALID_ARGUMENT (a watch "from -1" is not "from now"), and so is a
    map of known versions past MAX_KNOWN_VERSIONS."""
    require_revision(request.resource_version, "resource_version")
    held = len(known)
    if held > MAX_KNOWN_VERSIONS:
        raise InvalidArgument(
            [
                FieldViolation(
                    "known_resource_versions",
                    f"{held:,} entries; at most {MAX_KNOWN_VERSIONS:,}: watch with send_initial_events and no "
                    "known versions instead (a re-list)",
                )
            ]
        )
    bad, count = known.negative(MAX_LISTED_VIOLATIONS)
    if count:
        violations = [
            FieldViolation(f"known_resource_versions[{json.dumps(key[:100])}]", "a version must be 0 or positive")
            for key in bad
        ]
        if count > MAX_LISTED_VIOLATIONS:
            violations.append(
                FieldViolation("known_resource_versions", f"{count - MAX_LISTED_VIOLATIONS} more negative versions")
            )
        raise InvalidArgument(violations)


async def _write_responses(hub: WatchHub[Any, Any], watcher: Watcher, context: Context) -> None:
    """Send responses until the watcher ends.

    A write in progress is never abandoned: grpc cannot send the closing status while a message is
    still being sent, so a cut-off watcher's status follows its last response. What a stalled
    client holds up is that one response; its buffer is dropped as soon as it is cut off.
    """
    while (response := await watcher.next_response()) is not None:
        try:
            await context.write(response)
        except Exception as error:
            # The client went away mid-write: the stream is over and there is nobody left to tell.
            log.debug("watch stream write failed: %r", error)
            watcher.cut_off_silently()
            return
        hub.responses_sent += 1
        hub.bytes_sent += len(response)
