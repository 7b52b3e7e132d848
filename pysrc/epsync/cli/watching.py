"""`epsync watch`: the matching resources, then every change, on stdout; the connection's state on stderr.

As `kubectl get --watch` does, a watch that cannot reach its server at the start gives up: after
`--connect-timeout` seconds it says so and exits 1, so a wrong address never hangs quietly. Once it
has been connected, a lost connection is not the end: the watch says on stderr that it lost the server
(or that the server went away, shutting down) and that it is reconnecting, keeps retrying with backoff
(a line per attempt), and says when it has resumed, from the revision it held, with nothing missed and
nothing repeated. stdout carries only the events, so a script reads them unmixed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import Any

from epsync.cli.connect import client_of, resolve_kind
from epsync.cli.output import print_event
from epsync.client import MaterializedView
from epsync.errors import EpsyncError, UsageError
from epsync.model.kinds import DEFAULT_NAMESPACE


def _say(message: str) -> None:
    print(f"epsync: {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    kind = resolve_kind(args.kind)
    if args.all_namespaces and args.namespace is not None:
        raise UsageError("give -n NAMESPACE or -A, not both")
    if kind == "profile" and args.node:
        raise UsageError("--node applies to workload endpoints only")
    if args.connect_timeout <= 0:
        raise UsageError("--connect-timeout must be more than 0 seconds")
    # Profiles have no namespace: -n and -A are accepted and change nothing, as for `get`.
    namespace = "" if args.all_namespaces else args.namespace or DEFAULT_NAMESPACE
    attempts = 0  # reconnection attempts since the watch was last in sync (0: in sync)

    def stream_ended(error: EpsyncError | None, revision: int) -> None:
        nonlocal attempts
        attempts += 1
        problem = "closed by the server" if error is None else f"{error.code.name}: {error.message}"
        if attempts > 1:
            _say(f"still reconnecting (attempt {attempts}; {problem})")
        elif error is not None and error.reason == "SHUTTING_DOWN":
            _say(f"the server went away (shutting down); reconnecting to resume after revision {revision}")
        else:
            _say(f"lost the server ({problem}); reconnecting to resume after revision {revision}")

    async def follow() -> None:
        async with client_of(args) as client:
            _say(f"connecting to {args.server}")
            await client.wait_for_connection(within=args.connect_timeout)
            view: MaterializedView[Any, Any] = (
                client.watch(namespace=namespace, node=args.node, selector=args.selector, on_stream_end=stream_ended)
                if kind == "workloadendpoint"
                else client.watch_profiles(selector=args.selector, on_stream_end=stream_ended)
            )
            _say("connected; receiving the current state")
            nonlocal attempts
            seen = 0
            async for event in view:
                if event.initial_events_end:
                    state = "reconnected; resumed" if view.reconnects else "synced"
                    _say(f"{state} at revision {event.resource_version}: {len(view.objects)} {kind}s; watching")
                    attempts = 0
                print_event(event, args.output)
                if event.object is not None and event.type != "BOOKMARK":
                    seen += 1
                    if seen == args.limit:
                        return

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(follow())
    return 0
