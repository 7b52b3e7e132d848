"""Errors with a gRPC status code and rich details, raised anywhere and mapped to the wire in one place.

Every failure a client can act on is an `EpsyncError`; the server turns it into a `google.rpc.Status`
(code, message, `ErrorInfo` reason, `BadRequest` field violations) and the client library turns a
status back into the same exception, so both sides speak one vocabulary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "epsync.projectcalico.org"

# A status travels in trailing metadata, and gRPC clients refuse metadata past 8 KiB by default
# (grpc-go and grpcio alike): an error that echoed a client's whole bad input would reach it as
# RESOURCE_EXHAUSTED "metadata size exceeds hard limit" instead of itself. So every status this
# package builds is bounded: its message, each violation's field and description, and how many
# violations are listed (the rest are counted) keep the status, details and all, under 6 KiB.
MAX_MESSAGE_CHARS = 1000
MAX_FIELD_CHARS = 160
MAX_DESCRIPTION_CHARS = 240
MAX_LISTED_VIOLATIONS = 8


def bounded(text: str, limit: int) -> str:
    """`text`, cut to about `limit` characters with what was cut said at the end."""
    if len(text) <= limit:
        return text
    return f"{text[: limit - 40]}... ({len(text):,} characters in all)"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One problem with one field of a request; `field` is a path such as `spec.ports[1].port`."""

    field: str
    description: str


class EpsyncError(Exception):
    """Base of every error that reaches a client; subclasses fix the status code."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, *, reason: str | None = None, metadata: Mapping[str, str] | None = None) -> None:
        message = bounded(message, MAX_MESSAGE_CHARS)
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.metadata = dict(metadata or {})

    def details(self) -> list[any_pb2.Any]:
        """The `google.rpc` detail messages this error carries."""
        if self.reason is None:
            return []
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=ERROR_DOMAIN, metadata=self.metadata)
        packed = any_pb2.Any()
        packed.Pack(info)
        return [packed]

    def to_status(self) -> status_pb2.Status:
        return status_pb2.Status(code=self.code.value[0], message=self.message, details=self.details())


class InvalidArgument(EpsyncError):
    """The request is malformed; `violations` names every offending field at once."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, violations: Sequence[FieldViolation], message: str | None = None) -> None:
        self.violations = _listed(violations)
        if message is None:
            message = "; ".join(f"{v.field}: {v.description}" for v in self.violations) or "invalid argument"
        super().__init__(message)

    def details(self) -> list[any_pb2.Any]:
        request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in self.violations
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(request)
        return [packed, *super().details()]


def _listed(violations: Sequence[FieldViolation]) -> list[FieldViolation]:
    """The violations a status carries: each bounded, the first MAX_LISTED_VIOLATIONS of many, then a count."""
    listed = [
        FieldViolation(bounded(v.field, MAX_FIELD_CHARS), bounded(v.description, MAX_DESCRIPTION_CHARS))
        for v in violations
    ]
    if len(listed) > MAX_LISTED_VIOLATIONS + 1:  # + 1: a list that already ends in the count stays as it is
        more = len(listed) - MAX_LISTED_VIOLATIONS
        listed = [*listed[:MAX_LISTED_VIOLATIONS], FieldViolation("", f"{more:,} more violations not listed")]
    return listed


class NotFound(EpsyncError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(EpsyncError):
    code = grpc.StatusCode.ALREADY_EXISTS


class Aborted(EpsyncError):
    """A resource_version or uid precondition did not hold: re-read and retry."""

    code = grpc.StatusCode.ABORTED


class FailedPrecondition(EpsyncError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class PermissionDenied(EpsyncError):
    code = grpc.StatusCode.PERMISSION_DENIED


class OutOfRange(EpsyncError):
    code = grpc.StatusCode.OUT_OF_RANGE


class ResourceExhausted(EpsyncError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.retry_after = retry_after  # seconds; sent as google.rpc.RetryInfo

    def details(self) -> list[any_pb2.Any]:
        found = super().details()
        if self.retry_after is not None:
            retry = error_details_pb2.RetryInfo()
            retry.retry_delay.FromNanoseconds(int(self.retry_after * 1e9))
            packed = any_pb2.Any()
            packed.Pack(retry)
            found.append(packed)
        return found


class Unavailable(EpsyncError):
    code = grpc.StatusCode.UNAVAILABLE


class Internal(EpsyncError):
    code = grpc.StatusCode.INTERNAL


class UsageError(Exception):
    """A command-line mistake (a bad flag, an unreadable file), reported in one line, never a traceback."""


@dataclass(slots=True)
class ViolationCollector:
    """Gathers every violation of a request so that all are reported in one error."""

    violations: list[FieldViolation] = field(default_factory=list)

    def add(self, path: str, description: str) -> None:
        self.violations.append(FieldViolation(path, description))

    def raise_if_any(self) -> None:
        if self.violations:
            raise InvalidArgument(self.violations)


_BY_CODE: dict[grpc.StatusCode, type[EpsyncError]] = {
    cls.code: cls
    for cls in (
        NotFound,
        AlreadyExists,
        Aborted,
        FailedPrecondition,
        PermissionDenied,
        OutOfRange,
        ResourceExhausted,
        Unavailable,
        Internal,
    )
}


def error_from_status(code: grpc.StatusCode, status: status_pb2.Status | None, message: str) -> EpsyncError:
    """Rebuild the exception a server raised from the status (and rich details) a client received."""
    violations: list[FieldViolation] = []
    reason: str | None = None
    metadata: dict[str, str] = {}
    for detail in status.details if status is not None else []:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            request = error_details_pb2.BadRequest()
            detail.Unpack(request)
            violations.extend(FieldViolation(v.field, v.description) for v in request.field_violations)
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, metadata = info.reason, dict(info.metadata)
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(violations, message)
    error_class = _BY_CODE.get(code, EpsyncError)
    error = error_class(message, reason=reason, metadata=metadata)
    error.code = code
    return error


def rpc_error(error: grpc.aio.AioRpcError) -> EpsyncError:
    """The `EpsyncError` a failed call carries (code, message, and its google.rpc details)."""
    # AioRpcError has the code, details and trailing metadata that from_call reads; the stubs only know grpc.Call.
    status = rpc_status.from_call(cast(grpc.Call, error))
    return error_from_status(error.code(), status, error.details() or "")
