"""Serving one watch stream: start the watcher, write its responses, end with its status."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from epsync.errors import EpsyncError, Internal
from epsync.server.resource_servicer import Context
from epsync.server.status import abort, from_datastore_error
from epsync.watch.hub import WatchHub, WatchRequest
from epsync.watch.watcher import Watcher

log = logging.getLogger(__name__)

Q = TypeVar("Q", bound=WatchRequest)


async def serve_watch(
    hub: WatchHub[Any, Q], request: Q, context: Context, wait_until_servable: Callable[[int], Awaitable[None]]
) -> None:
    try:
        await wait_until_servable(request.resource_version)
        watcher = hub.start(request)
    except EpsyncError as error:
        await abort(context, error)
        return
    except Exception as error:
        translated = from_datastore_error(error)
        if translated is None:
            log.exception("starting a watch failed")
            translated = Internal("internal error; the server log has the details")
        await abort(context, translated)
        return
    try:
        await _write_responses(watcher, context)
    finally:
        hub.remove(watcher)
    if watcher.error is not None:
        await abort(context, watcher.error)


async def _write_responses(watcher: Watcher, context: Context) -> None:
    """Send responses until the watcher ends. A write blocked by a stalled client is abandoned when
    the watcher is cut off, so the stream ends promptly and its buffer is freed."""
    ended = asyncio.ensure_future(watcher.ended.wait())
    try:
        while (response := await watcher.next_response()) is not None:
            write = asyncio.ensure_future(context.write(response))
            await asyncio.wait({write, ended}, return_when=asyncio.FIRST_COMPLETED)
            if not write.done():
                write.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await write
                return
            write.result()
    finally:
        ended.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ended
