"""epsync's Rust core: Calico selector parsing and evaluation, the endpoint label index and the
watch fan-out built on it, and the validation and normalisation of writes.

Every call does a whole batch of work (many endpoints, many label sets, a whole page of
keys, a whole committed batch of changes), so Python crosses into Rust once per operation,
never once per label or per watcher.
"""

import os
from collections.abc import Mapping, Sequence
from typing import Any, final

__all__ = [
    "ADDED",
    "CALL",
    "CANCELLED",
    "DELETED",
    "HALF_CLOSE",
    "LOG",
    "MAX_SELECTOR_DEPTH",
    "MAX_SELECTOR_LENGTH",
    "MESSAGE",
    "MODIFIED",
    "VERSION",
    "WRITABLE",
    "Call",
    "CallClosed",
    "EndpointIndex",
    "KnownVersions",
    "Selector",
    "SelectorError",
    "Transport",
    "normalize_endpoints",
    "normalize_profiles",
    "split_known_versions",
    "undecodable",
]

VERSION: str
"""The version of the Rust crate."""

MAX_SELECTOR_LENGTH: int
"""The longest selector accepted, in bytes of UTF-8 (4096)."""

MAX_SELECTOR_DEPTH: int
"""The deepest nesting accepted; each `(` and each `!` is one level (64)."""

ADDED: int
"""Event type 1 in `EndpointIndex.apply`'s subjects: the endpoint started matching."""

MODIFIED: int
"""Event type 2: the endpoint itself changed and still matches."""

DELETED: int
"""Event type 3: the endpoint stopped matching or was deleted."""

_Event = tuple[str, str, int, int]
"""`(namespace, name, revision, event_type)`: one event, the same for every group that gets it."""

_EndpointChange = tuple[int, str, str, str | None, Mapping[str, str] | None, Sequence[str] | None]
"""`(revision, namespace, name, node, own_labels, profiles)`; node None means deleted."""

_ProfileChange = tuple[int, str, Mapping[str, str] | None]
"""`(revision, name, labels_to_apply)`; labels None means deleted."""

_StoredEndpointChange = tuple[int, str, str, bytes | None, bytes | None, int]
"""`(revision, namespace, name, value, previous, previous_resource_version)`: stored bytes after and
before the change (None: absent) and the resource version of the latter."""

_StoredProfileChange = tuple[int, str, bytes | None]
"""`(revision, name, value)`: the stored bytes after the change; None means deleted."""

_Deliveries = list[tuple[int, list[tuple[int, list[bytes]]]]]
"""`(group, [(revision, [entry, ...]), ...])` for every group with events: ready-to-send entries."""

_WriteItem = tuple[bytes, str | None, tuple[int, int] | None] | tuple[bytes, bytes]
"""`(encoded message, uid, (seconds, nanos))`: a resource as a request carried it, and the uid and
creation timestamp to give it (None leaves the field as the request has it); or `(encoded message,
stored bytes)`: a resource as a request carried it, and the stored object whose uid and creation
timestamp it keeps (an update)."""

_Violations = list[tuple[str, str]]
"""`(field path, message)` pairs, e.g. `("spec.ports[1].port", "port 0 is out of range 1-65535")`."""

class SelectorError(ValueError):
    """A selector failed to parse.

    `str(e)` is the message, e.g. ``expected a label key at position 7``; `e.position` is
    the 0-based character offset of the error and `e.selector` the text that was parsed.
    """

    position: int
    selector: str

@final
class Selector:
    """A parsed Calico label selector.

    `Selector(text)` parses `text`, raising `SelectorError` with the position of the
    problem. The language: `all()`, `global()`, `k == 'v'`, `k != 'v'`, `k in {'a', 'b'}`,
    `k not in {...}`, `has(k)`, `k contains 's'`, `k starts with 's'`, `k ends with 's'`,
    `!`, `&&`, `||` and parentheses; the empty selector is `all()`. `!=` and `not in` match
    an absent label; `==`, `in` and the string operators do not.

    `str(selector)` is its canonical form, which parses back to an equal selector.
    Selectors compare and hash by canonical form.
    """

    def __new__(cls, text: str) -> Selector: ...
    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether the labels satisfy the selector."""

    def select(self, label_sets: Sequence[Mapping[str, str]]) -> list[int]:
        """The indices, ascending, of the label sets that satisfy the selector."""

    @property
    def is_all(self) -> bool:
        """True when the selector matches everything: `all()`, `global()` or empty."""

    def __eq__(self, other: object, /) -> bool: ...
    def __ne__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class EndpointIndex:
    """Endpoints' namespace, node, own labels, profiles and resource versions; profiles'
    labelsToApply; answers filtered, ordered queries; and plans the watch fan-out.

    An endpoint's effective labels are its own labels plus, for each key it lacks, the value
    from the first of its profiles (in order) that has the key. Profiles not in the index
    contribute nothing. Keys are `(namespace, name)` tuples, ordered as tuples.

    Watchers register their filters as groups (`add_group`); `apply` takes each committed
    batch of changes, updates the index and returns which events every affected group gets,
    evaluating only the groups a change can affect; every transition is logged so `replay`
    can serve a resume, and `diff` answers a client's known versions.
    """

    def __new__(cls) -> EndpointIndex: ...
    def upsert_endpoints(
        self, endpoints: Sequence[tuple[str, str, str, Mapping[str, str], Sequence[str], int]]
    ) -> None:
        """Inserts `(namespace, name, node, own_labels, profile_names, resource_version)`
        entries, each replacing any previous entry for `(namespace, name)`. For loading a
        snapshot: nothing is logged or planned. The batch is converted before any of it is
        applied, so a bad entry changes nothing."""

    def remove_endpoints(self, keys: Sequence[tuple[str, str]]) -> None:
        """Removes endpoints by `(namespace, name)`; missing keys are ignored."""

    def upsert_profiles(self, profiles: Sequence[tuple[str, Mapping[str, str]]]) -> None:
        """Inserts or replaces `(name, labels_to_apply)` profiles and re-evaluates the effective
        labels of the endpoints that name them."""

    def remove_profiles(self, names: Sequence[str]) -> None:
        """Removes profiles by name (missing names are ignored) and re-evaluates the effective
        labels of the endpoints that name them."""

    def query(
        self,
        namespace: str,
        node: str,
        selector: Selector | None,
        after: tuple[str, str] | None,
        limit: int,
    ) -> list[tuple[str, str]]:
        """Keys `(namespace, name)` in ascending tuple order, strictly after `after`, restricted
        to `namespace` and `node` when they are non-empty, matching `selector` (on effective
        labels) when it is given; at most `limit` of them (0 means no limit)."""

    def count(self, namespace: str, node: str, selector: Selector | None) -> int:
        """How many endpoints a `query` with the same filters and no paging would return."""

    def effective_labels(self, namespace: str, name: str) -> dict[str, str] | None:
        """The endpoint's effective labels, or None if it is not in the index."""

    def resource_version(self, namespace: str, name: str) -> int | None:
        """The endpoint's resource version (the revision of its last change), or None if it is
        not in the index."""

    def __len__(self) -> int: ...

    # ---- watch fan-out ----

    def add_group(self, namespace: str, node: str, selector: Selector | None) -> int:
        """Registers a watcher filter (namespace "" = any, node "" = any, selector None = any)
        and returns its group id. An identical filter (same namespace, node and canonical
        selector; a selector that `is_all` counts as None) returns the same id and takes
        another reference to it."""

    def release_group(self, group: int) -> None:
        """Drops one reference to a group; the last one removes it. Its id is never reused.
        Raises `KeyError` for an unknown id."""

    @property
    def group_count(self) -> int:
        """How many distinct groups exist."""

    @property
    def revision(self) -> int:
        """The last revision applied by `apply` or set by `reset_log` (0 at first); `apply`
        only accepts later revisions."""

    @property
    def log_start(self) -> int:
        """The oldest revision R a replay can start after: every change after R is logged."""

    @property
    def log_size(self) -> int:
        """How many endpoint transitions the log holds."""

    def reset_log(self, revision: int) -> None:
        """Empties the log and sets `log_start` and `revision` to `revision`: the index now
        holds the state at that revision (call it after loading a snapshot)."""

    def trim_log(self, up_to_revision: int) -> None:
        """Drops logged transitions of revisions up to `up_to_revision` and raises `log_start`
        to it."""

    def apply(
        self, endpoint_changes: Sequence[_EndpointChange], profile_changes: Sequence[_ProfileChange]
    ) -> tuple[list[_Event], list[tuple[int, list[int]]]]:
        """Applies a batch of committed changes and plans their watch events.

        `endpoint_changes`: `(revision, namespace, name, node, own_labels, profiles)`, node
        None for a delete. `profile_changes`: `(revision, name, labels_to_apply)`, labels
        None for a delete. Each list in ascending revision order, every revision after
        `revision` (else `ValueError`, and nothing is applied).

        Returns `(subjects, deliveries)`: subjects are distinct `(namespace, name, revision,
        event_type)` events (1 ADDED, 2 MODIFIED, 3 DELETED) in ascending revision order;
        deliveries are `(group, indices into subjects)` for every group with an event.

        Per revision, each touched endpoint (changed itself, or naming a changed profile) is
        compared before and after the whole revision: a group it starts matching gets ADDED,
        one it stops matching DELETED, and one it keeps matching MODIFIED only if the
        endpoint itself changed in that revision. Order within a revision is unspecified."""

    def load_stored(
        self, endpoints: Sequence[tuple[str, str, int, bytes]], profiles: Sequence[tuple[str, bytes]]
    ) -> None:
        """Inserts a snapshot as stored: `profiles` as `(name, stored bytes)`, then `endpoints`
        as `(namespace, name, resource_version, stored bytes)`, each replacing any previous
        entry with its key; the index reads what it needs from the bytes and keeps the bytes
        objects themselves (no copies) for `apply_stored`. Nothing is logged or planned.
        `ValueError` when a value does not decode, and nothing is inserted."""

    def apply_stored(
        self, endpoint_changes: Sequence[_StoredEndpointChange], profile_changes: Sequence[_StoredProfileChange]
    ) -> tuple[_Deliveries, int]:
        """Applies a batch of committed changes as stored, as `apply` does, and returns its
        events ready to send.

        `endpoint_changes`: `(revision, namespace, name, value, previous,
        previous_resource_version)`: the stored bytes after the change (None for a delete)
        and before it (None when the endpoint did not exist) with the resource version of
        the latter. `profile_changes`: `(revision, name, value)`, value None for a delete.
        Each list in ascending revision order, every revision after `revision`; else, or
        when a value does not decode, `ValueError` and nothing is applied.

        Returns `(deliveries, event_count)`: for every group with events (ascending ids),
        `(group, [(revision, [entry, ...]), ...])`, one chunk per revision in ascending
        order, each entry an encoded `events` entry of a watch response; each distinct event
        is one bytes object, shared by every group that gets it, and `event_count` says how
        many there are.

        ADDED and MODIFIED at r carry the endpoint as stored at r with its own
        resource_version; DELETED at r the state just before r, with resource_version r. An
        endpoint the batch does not change (a profile change moved it) is taken as
        `load_stored` or an earlier `apply_stored` left it; `RuntimeError` (after the batch
        is applied) when other writes (`upsert_endpoints`, `apply`) left it without bytes."""

    def replay(self, group: int, after_revision: int, limit: int) -> list[_Event] | None:
        """The events (as in `apply`'s subjects) `group` would have received live for every
        revision after `after_revision`, in revision order; None when `after_revision <
        log_start` or when there would be more than `limit` (0: no limit). `KeyError` for an
        unknown group."""

    def replay_part(
        self, group: int, after_revision: int, limit: int, max_visits: int
    ) -> tuple[list[_Event], int | None] | None:
        """`replay` over part of the log: it visits about `max_visits` logged changes at most
        (0: all), always whole revisions, and returns `(events, through)`: the events of the
        revisions after `after_revision` up to `through`, the revision it got through when it
        stopped short of the log's end (None: it got to the end). A long replay done part by
        part, each from the last `through`, never holds the caller for long. None as `replay`."""

    def diff(
        self, group: int, known: Mapping[str, int] | KnownVersions
    ) -> tuple[list[tuple[str, str]], list[tuple[str, str]], list[tuple[str, str]]]:
        """`(added, modified, deleted)` keys between `known` ("namespace/name" -> resource
        version) and what `group` matches now: matching endpoints not known and matching
        endpoints whose version differs, each in key order, and known keys that do not exist or
        do not match, in `known`'s order (a key without '/' comes back as `("", key)`).
        `KeyError` for an unknown group."""

    def initial_entries(self, group: int, revision: int) -> tuple[list[bytes], int]:
        """A new watcher's initial events at snapshot revision `revision` (SPEC §6.3): ADDED
        for every endpoint `group` matches now, in key order (as `query`), each the
        endpoint as stored now with its own resource version, stamped `revision`.

        Returns `(entries, encoded)`: encoded `events` entries of a watch response, and how
        many of them this call encoded. An ADDED entry is encoded once per revision: every
        call at the same revision (until the endpoints change) returns the same bytes
        object for the same key, whichever group it comes in. `KeyError` for an unknown
        group; `RuntimeError` for an endpoint whose bytes `load_stored`/`apply_stored` did
        not give."""

    def difference_entries(
        self, group: int, known: Mapping[str, int] | KnownVersions, revision: int
    ) -> tuple[list[bytes], int]:
        """The events that turn a client's `known` versions ("namespace/name" -> resource
        version) into `group`'s state at snapshot revision `revision` (SPEC §6.4), as
        `diff` finds them: ADDED for each key of `added`, then MODIFIED for each of
        `modified` (the endpoints as in `initial_entries`), then DELETED for each of
        `deleted`, an object with only `metadata {namespace, name, resource_version:
        revision}`; every event stamped `revision`. Returns, shares and raises as
        `initial_entries`."""

# ---- validation and normalisation of writes ----

def normalize_endpoints(items: Sequence[_WriteItem]) -> list[bytes | _Violations]:
    """Validates and normalises a batch of WorkloadEndpoints for storing.

    Each result, in the order of `items`, is what `epsync.model.validation.normalize_workload_endpoint`
    decides for that item: the stored bytes, exactly `WORKLOAD_ENDPOINTS.encode(normalized)` with the
    given uid and creation timestamp set, or those of the given stored object exactly (normalised,
    resource_version 0, deterministically encoded),
    or, when it would raise `InvalidArgument`, its violations as `(field, description)` pairs, in
    the same order and with the same text. Bytes that do not decode as a WorkloadEndpoint give one
    violation with field "" (the whole message), stored bytes to keep the identity of that do not
    decode one with field "metadata". Unknown fields are dropped.

    Large batches run without the GIL."""

def normalize_profiles(items: Sequence[_WriteItem]) -> list[bytes | _Violations]:
    """Validates a batch of Profiles for storing, as `epsync.model.validation.normalize_profile`
    and `PROFILES.encode` do; items and results as in `normalize_endpoints`."""

def undecodable(kind: str, values: Sequence[bytes | None]) -> list[int]:
    """The indexes of the `values` (stored bytes, or None for a deletion) that do not decode as
    `kind`'s message, "WorkloadEndpoint" or "Profile" (anything else: `ValueError`)."""

@final
class KnownVersions:
    """A watch request's known versions as the server read them from its bytes
    (`split_known_versions`): "namespace/name" -> resource version, in the order the client sent
    them. The keys stay in the request's bytes; the index's diff reads them there."""

    def __len__(self) -> int: ...
    def items(self) -> list[tuple[str, int]]:
        """`(key, version)` pairs, in the order the client sent them."""
    def negative(self, limit: int) -> tuple[list[str], int]:
        """The keys whose version is negative: at most `limit` of them, sorted, and how many there are."""

def split_known_versions(raw: bytes, field: int) -> tuple[bytes, KnownVersions]:
    """Splits an encoded watch request into its other fields' bytes and its known versions (the
    `map<string, int64>` of field number `field`), reading the map without the GIL. `ValueError`
    naming the problem when the bytes are not well-formed."""

# --- the gRPC transport (epsync.server.transport) -------------------------------------------------

CALL: int
MESSAGE: int
HALF_CLOSE: int
CANCELLED: int
WRITABLE: int
LOG: int

class CallClosed(ConnectionError):
    """The call is over: it was answered, cancelled, or its client went away."""

@final
class Call:
    """One call of the transport: its responses are queued with `send` and it ends with `finish`."""

    @property
    def id(self) -> int: ...
    @property
    def peer(self) -> str:
        """The client's address as grpc names it: `ipv4:127.0.0.1:52000`."""
    @property
    def peer_certificate(self) -> bytes | None:
        """The certificate the client showed over TLS (the first of its chain) as PEM, as grpc's auth context
        gives it (`x509_pem_cert`); None over plaintext, or when the client showed none."""
    def send(self, message: bytes) -> bool:
        """Queue one encoded response. False: queued, but wait for the call's WRITABLE event before the
        next. `CallClosed` once the call is over; `ValueError` past the message limit."""
    def finish(self, code: int, message: str, metadata: Sequence[tuple[str, str | bytes]] = ...) -> None:
        """End the call with a status after the responses queued so far; later calls change nothing."""
    def grant(self, credit: int) -> None:
        """The handler took requests whose MESSAGE events gave these credits, summed: the transport reads that
        much further ahead (at the next flush)."""

@final
class Transport:
    """A gRPC server's connections, served on threads of its own; see `epsync.server.transport`."""

    def __new__(
        cls,
        address: str,
        *,
        max_connections: int,
        max_concurrent_streams: int,
        keepalive_seconds: float,
        keepalive_timeout_seconds: float,
        handshake_timeout_seconds: float,
        max_receive_message: int,
        max_send_message: int,
        max_connection_age_seconds: float | None = None,
        max_connection_age_grace_seconds: float = 0.0,
        reuse_port: bool = False,
        threads: int = 2,
        tls_cert_file: str | os.PathLike[str] | None = None,
        tls_key_file: str | os.PathLike[str] | None = None,
        tls_client_ca_file: str | os.PathLike[str] | None = None,
        response_buffer_bytes: int = ...,
    ) -> Transport:
        """With `tls_cert_file` and `tls_key_file` it serves TLS, and with `tls_client_ca_file` mutual TLS;
        the files are read again when they change. `ValueError` when they cannot serve. A call's responses
        queue up to `response_buffer_bytes` before `Call.send` asks its handler to wait."""
    @property
    def port(self) -> int: ...
    @property
    def fd(self) -> int:
        """Readable when there are events to take (read and discard what it holds first)."""
    @property
    def connections(self) -> int: ...
    @property
    def tls_reloads(self) -> int:
        """How many times changed TLS files were loaded since start-up (0 without TLS)."""
    def set_unary_methods(self, methods: Sequence[str]) -> None: ...
    def start(self) -> None: ...
    def flush(self) -> None:
        """Do the wake-ups the calls' `send`, `finish` and `grant` left for the transport's threads, without
        the GIL; once per turn of the event loop in which any was called (until then their effects wait)."""
    def drain(self) -> None:
        """Stop accepting connections and send GOAWAY on every one; calls in progress go on."""
    def close(self) -> None:
        """Close every connection; calls still in progress are cancelled."""
    def take_events(self) -> list[tuple[Any, ...]]:
        """Everything since the last take, in order: `(CALL, call, method, metadata, request | None,
        timeout | None)`, `(MESSAGE, id, request, credit)`, `(HALF_CLOSE, id)`, `(CANCELLED, id)`, `(WRITABLE, id)`,
        `(LOG, topic, logging level, message)`: a line for the `epsync.server.<topic>` log."""
