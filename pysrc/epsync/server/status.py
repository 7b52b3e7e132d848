"""Maps `EpsyncError` (and anything unexpected) to a gRPC status with rich details, in one place."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

import grpc
from grpc_status import rpc_status

from epsync._core import Selector, SelectorError
from epsync.errors import EpsyncError, FieldViolation, Internal, InvalidArgument, OutOfRange, Unavailable
from epsync.store.base import DatastoreUnavailable, RevisionCompacted, WriteFailed

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")
S = TypeVar("S")


async def abort(context: grpc.aio.ServicerContext[Any, Any], error: EpsyncError) -> None:
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
        except EpsyncError as error:
            await abort(context, error)
        except Exception as error:
            translated = from_datastore_error(error)
            if translated is None:
                log.exception("unexpected error in %s", method.__name__)
                translated = Internal("internal error; the server log has the details")
            else:
                log.warning("%s failed: %s", method.__name__, error)
            await abort(context, translated)
        raise AssertionError("abort_with_status always raises")

    return wrapper


def from_datastore_error(error: Exception) -> EpsyncError | None:
    """The status a datastore failure leaves as; None for anything that is not one."""
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
    return None


def parse_selector_field(text: str, field: str) -> Selector | None:
    """Parse a selector from a request field (None when it matches everything).

    A bad one is INVALID_ARGUMENT naming the field and the position of the error.
    """
    try:
        selector = Selector(text)
    except SelectorError as error:
        raise InvalidArgument([FieldViolation(field, str(error))]) from None
    return None if selector.is_all else selector
