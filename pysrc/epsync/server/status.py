"""Every failure leaves as a gRPC status with rich details, mapped here and nowhere else.

An `EpsyncError` leaves as it is; a datastore failure or a revision this server has not reached is
translated into the status a client can act on; anything else is a bug: logged with its
traceback and answered INTERNAL, without internals in the message.
"""

from __future__ import annotations

import collections
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

import grpc
from grpc_status import rpc_status

from epsync.errors import EpsyncError, Internal, OutOfRange, ResourceExhausted, Unavailable
from epsync.store.base import DatastoreFull, DatastoreUnavailable, RevisionCompacted, WriteFailed
from epsync.store.feed import RevisionNotReached

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")
S = TypeVar("S")


# Requests answered with an error, by (status code, reason); read by the metrics (server/metrics.py).
REFUSED: collections.Counter[tuple[str, str]] = collections.Counter()


async def abort(context: grpc.aio.ServicerContext[Any, Any], error: EpsyncError) -> None:
    REFUSED[(error.code.name, error.reason or "")] += 1
    status = rpc_status.to_status(error.to_status())
    await context.abort(status.code, status.details, status.trailing_metadata)


def unary_errors(
    method: Callable[Concatenate[S, P], Awaitable[T]],
) -> Callable[Concatenate[S, P], Awaitable[T]]:
    """Decorate a unary servicer method so every failure leaves as a proper status."""

    @functools.wraps(method)
    async def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        context: grpc.aio.ServicerContext[Any, Any] = args[-1]  # type: ignore[assignment]
        try:
            return await method(self, *args, **kwargs)
        except Exception as error:
            await abort(context, status_error(error, method.__name__))
        raise AssertionError("abort always raises")

    return wrapper


def status_error(error: Exception, doing: str) -> EpsyncError:
    """The error `error` leaves as; `doing` names the call in the log ("GetWorkloadEndpoint")."""
    if isinstance(error, EpsyncError):
        return error
    translated = _translated(error)
    if translated is None:
        log.error("unexpected error in %s", doing, exc_info=error)
        return Internal("internal error; the server log has the details")
    log.warning("%s failed: %s", doing, error)
    return translated


def _translated(error: Exception) -> EpsyncError | None:
    """The status a failure of the layers below leaves as; None for anything that is not one."""
    if isinstance(error, DatastoreFull):
        return ResourceExhausted(
            f"the datastore's disk is full: {error}; nothing was written. Writes work again once there is space",
            reason="DATASTORE_FULL",
        )
    if isinstance(error, DatastoreUnavailable):
        return Unavailable(f"the datastore cannot take this request now: {error}; retry")
    if isinstance(error, WriteFailed):
        return Internal("the datastore failed this write and rolled it back; nothing was stored")
    if isinstance(error, RevisionCompacted):
        return OutOfRange(
            f"{error}; re-list and watch from the new resource_version",
            reason="RESOURCE_VERSION_TOO_OLD",
            metadata={"oldestResourceVersion": str(error.oldest)},
        )
    if isinstance(error, RevisionNotReached):
        return Unavailable(
            f"this server is at revision {error.current} and did not reach {error.wanted} within "
            f"{error.within_seconds:g}s; retry, or ask another replica"
        )
    return None
