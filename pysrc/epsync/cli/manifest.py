"""calicoctl-shaped YAML/JSON manifests: load them into the protobuf resources and dump resources back.

The protobuf messages are the model. A small pydantic model checks the envelope (apiVersion, kind, metadata,
spec, items); `metadata` and `spec` are then walked against the message descriptors, which rejects unknown
fields with their full path and gives each field the type it wants before `json_format.ParseDict`.

YAML 1.1 guesses types from plain scalars: `containerID: 0777` would load as the int 511 and
`mac: 12:34:56:12:34:56` as a base-60 int. The loader therefore keeps such scalars as the text written
(only null is still recognised), and the descriptor walk turns text into ints where the field is an integer.
When dumping, strings that any YAML reader could take for a number or a boolean are quoted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal, TypeAlias

import yaml
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from epsync.v1.profile_pb2 import Profile
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint

__all__ = [
    "API_VERSION",
    "ManifestError",
    "Resource",
    "dump_manifests",
    "from_manifest_dict",
    "load_manifests",
    "load_positioned_manifests",
    "parse_value",
    "to_manifest_dict",
]

API_VERSION: Literal["projectcalico.org/v3"] = "projectcalico.org/v3"
Resource: TypeAlias = WorkloadEndpoint | Profile
_CLASSES: dict[str, type[Resource]] = {"WorkloadEndpoint": WorkloadEndpoint, "Profile": Profile}
_LIST_ITEM_KIND = {"WorkloadEndpointList": "WorkloadEndpoint", "ProfileList": "Profile"}


class ManifestError(ValueError):
    """A manifest that cannot be loaded; the one-line message names the document (1-based) and the field."""

    def __init__(self, detail: str, *, document: int | None = None) -> None:
        super().__init__(f"document {document}: {detail}" if document is not None else detail)
        self.document = document
        self.detail = detail


def _q(value: object) -> str:
    """A value quoted for a message (JSON-style, so odd characters stay visible)."""
    return json.dumps(value if isinstance(value, str | int | float | bool | None) else str(value), ensure_ascii=False)


# --- The envelope (pydantic) ------------------------------------------------------------------------------


class _Object(BaseModel):
    """One resource document; `metadata` and `spec` stay raw here and are checked against the protobuf."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    api_version: Literal["projectcalico.org/v3"] = Field(alias="apiVersion")
    kind: Literal["WorkloadEndpoint", "Profile"]
    metadata: dict[Any, Any] | None = None
    spec: dict[Any, Any] | None = None


class _Item(BaseModel):
    """An element of a list: apiVersion and kind may be left out, as in Kubernetes lists."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    api_version: Literal["projectcalico.org/v3"] = Field(API_VERSION, alias="apiVersion")
    kind: Literal["WorkloadEndpoint", "Profile"] | None = None
    metadata: dict[Any, Any] | None = None
    spec: dict[Any, Any] | None = None


class _List(BaseModel):
    """What `calicoctl get -o yaml` prints for several objects; `List` (as in kubectl) may mix kinds."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    api_version: Literal["projectcalico.org/v3"] = Field(alias="apiVersion")
    kind: Literal["WorkloadEndpointList", "ProfileList", "List"]
    metadata: dict[Any, Any] | None = None  # the list's own (its resourceVersion): nothing to keep
    items: list[_Item] | None = None


_DOCUMENT: TypeAdapter[_Object | _List] = TypeAdapter(Annotated[_Object | _List, Field(discriminator="kind")])


def _envelope_problem(error: ErrorDetails, kind: object) -> str:
    """One pydantic error as a sentence naming the field."""
    loc = list(error["loc"])
    if loc and loc[0] == kind:
        loc = loc[1:]  # a tagged union puts the tag (the kind) first
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    match error["type"]:
        case "union_tag_invalid":
            return f"kind {_q(kind)} is not supported (WorkloadEndpoint, Profile)"
        case "union_tag_not_found":
            return 'missing field "kind" (WorkloadEndpoint or Profile)'
        case "extra_forbidden":
            return f"unknown field {_q(path)}"
        case "missing":
            return f"missing field {_q(path)}"
        case "literal_error":
            expected = str(error.get("ctx", {}).get("expected", "")).replace("'", "")
            return f"{path} {_q(error['input'])} is not supported ({expected})"
        case _:
            return f"field {_q(path)}: {error['msg']}"


# --- metadata and spec against the protobuf descriptors ----------------------------------------------------


class _FieldProblem(Exception):
    """A problem at one field path; `load_manifests` adds the document number."""


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _text(value: Any, path: str) -> str:
    """A string field. Our YAML loader keeps scalars as text; dicts built in code may still hold numbers."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    raise _FieldProblem(f"field {_q(path)} must be a string, not a {type(value).__name__}")


_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
}


def _integer(value: Any, field: FieldDescriptor, path: str) -> int:
    """Integers come as text from our loader and, like Kubernetes' resourceVersion, may be quoted."""
    if isinstance(value, str) and re.fullmatch(r"[-+]?[0-9]+", value):
        if len(value.lstrip("+-").lstrip("0")) > 20:  # past any 64-bit range, and int() refuses 4,300 digits
            raise _FieldProblem(f"field {_q(path)}: a {len(value):,}-digit number is out of range")
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _FieldProblem(f"field {_q(path)} must be an integer, not {_q(value)}")
    low, high = _INT_RANGES[field.type]
    if not low <= value <= high:
        raise _FieldProblem(f"field {_q(path)}: {value} is out of range {low}..{high}")
    return value


def _timestamp(value: Any, path: str) -> str:
    """RFC 3339 text for a Timestamp field, from text or from a datetime built in code."""
    stamp = Timestamp()
    if isinstance(value, str):
        try:
            stamp.FromJsonString(value)  # exact to the nanosecond, which datetime is not
            return stamp.ToJsonString()
        except ValueError:
            pass
        try:
            value = datetime.fromisoformat(value)  # also YAML's own forms, such as "2024-01-02 03:04:05"
        except ValueError:
            raise _FieldProblem(f"field {_q(path)}: {_q(value)} is not an RFC 3339 timestamp") from None
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if not isinstance(value, datetime):
        raise _FieldProblem(f"field {_q(path)} must be an RFC 3339 timestamp, not {_q(value)}")
    stamp.FromDatetime(value if value.tzinfo else value.replace(tzinfo=UTC))
    return stamp.ToJsonString()


def _value(value: Any, field: FieldDescriptor, path: str) -> Any:
    """One value of `field` (an element, for repeated fields) in the form `json_format.ParseDict` takes."""
    message_type = field.message_type
    if message_type is not None:
        if message_type.full_name == Timestamp.DESCRIPTOR.full_name:
            return _timestamp(value, path)
        return _message(value, message_type, path)
    if field.type == FieldDescriptor.TYPE_STRING:
        return _text(value, path)
    if field.type in _INT_RANGES:
        return _integer(value, field, path)
    return value  # the resources have no other scalar types today; ParseDict checks them


def _message(value: Any, descriptor: Descriptor, path: str) -> dict[str, Any]:
    """A loaded mapping checked against `descriptor`; fields go by their calicoctl (proto JSON) names only."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _FieldProblem(f"field {_q(path)} must be a mapping")
    fields = {field.json_name: field for field in descriptor.fields}
    out: dict[str, Any] = {}
    for key, raw in value.items():
        field = fields.get(key) if isinstance(key, str) else None
        sub = _join(path, key)
        if field is None:
            raise _FieldProblem(f"unknown field {_q(sub)}")
        if raw is None:
            continue  # `mac:` with nothing after it leaves the field unset
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            if not isinstance(raw, Mapping):
                raise _FieldProblem(f"field {_q(sub)} must be a mapping")
            value_field = field.message_type.fields_by_name["value"]
            out[key] = {
                _text(k, sub): "" if v is None else _value(v, value_field, f"{sub}[{_q(_text(k, sub))}]")
                for k, v in raw.items()
            }
        elif field.is_repeated:
            if not isinstance(raw, list):
                raise _FieldProblem(f"field {_q(sub)} must be a list")
            out[key] = [_value(v, field, f"{sub}[{i}]") for i, v in enumerate(raw)]
        else:
            out[key] = _value(raw, field, sub)
    return out


def _section_type(message: Resource, section: str) -> Descriptor:
    descriptor = message.DESCRIPTOR.fields_by_name[section].message_type
    assert descriptor is not None, f"{message.DESCRIPTOR.name}.{section} is a message field"
    return descriptor


def _resource(kind: str, metadata: Any, spec: Any, path: str) -> Resource:
    message = _CLASSES[kind]()
    body = {
        section: _message(raw, _section_type(message, section), _join(path, section))
        for section, raw in (("metadata", metadata), ("spec", spec))
    }
    # An empty `spec: {}` leaves the field unset rather than set-but-empty, so that a loaded object equals
    # (and serialises like) the same object built in code.
    body = {key: value for key, value in body.items() if value}
    try:
        json_format.ParseDict(body, message)
    except json_format.ParseError as error:  # the walk above should leave nothing for ParseDict to refuse
        raise _FieldProblem(str(error).splitlines()[0]) from None
    return message


def _document(data: Any) -> list[Resource]:
    """The resources of one loaded document (one, or a list's items)."""
    if not isinstance(data, Mapping):
        raise _FieldProblem(f"expected a mapping with apiVersion, kind, metadata and spec, not a {type(data).__name__}")
    try:
        envelope = _DOCUMENT.validate_python(data)
    except ValidationError as error:
        raise _FieldProblem("; ".join(_envelope_problem(e, data.get("kind")) for e in error.errors())) from None
    if isinstance(envelope, _Object):
        return [_resource(envelope.kind, envelope.metadata, envelope.spec, "")]
    item_kind = _LIST_ITEM_KIND.get(envelope.kind)
    objects: list[Resource] = []
    for i, item in enumerate(envelope.items or []):
        kind = item.kind or item_kind
        if kind is None:
            raise _FieldProblem(f'missing field "items[{i}].kind" (a List may mix kinds, so each item names its own)')
        if item_kind is not None and kind != item_kind:
            raise _FieldProblem(f"items[{i}]: kind {_q(kind)} does not belong in a {envelope.kind}")
        objects.append(_resource(kind, item.metadata, item.spec, f"items[{i}]"))
    return objects


# --- YAML --------------------------------------------------------------------------------------------------

_GUESSED_TAGS = {f"tag:yaml.org,2002:{name}" for name in ("bool", "int", "float", "timestamp")}


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps plain scalars as text (except null) and refuses duplicate keys."""

    yaml_implicit_resolvers = {  # noqa: RUF012 (PyYAML's own class-level table, copied and filtered)
        first: [(tag, regexp) for tag, regexp in resolvers if tag not in _GUESSED_TAGS]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        # PyYAML lets a later key silently win; a repeated key in a manifest is almost always a mistake
        # (the seed's sample repeats `endpoint`). Merge keys (`<<`) may legitimately be overridden.
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {_q(key_node.value)}", key_node.start_mark
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep)


def _yaml_problem(error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {error.problem}"
    return f"invalid YAML: {str(error).splitlines()[0] if str(error) else type(error).__name__}"


# Text that some YAML reader would take for a number or a boolean if left unquoted: YAML 1.2 numbers
# (which PyYAML, a YAML 1.1 reader, does not always quote) and the YAML 1.1 `y`/`n` of Go's yaml.v2.
_NUMBER_OR_BOOL = re.compile(
    r"[-+]?(\.[0-9]+|[0-9][0-9_]*(\.[0-9_]*)?)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)"
    r"|0o[0-7]+|0x[0-9a-fA-F]+|[yYnN]"
)


class _Dumper(yaml.SafeDumper):
    """SafeDumper that also quotes YAML 1.2 number look-alikes, so every reader gets a string back."""


# Characters that do not survive a YAML reader as written: what PyYAML's reader refuses in a stream (its
# Reader.NON_PRINTABLE), and the line breaks YAML folds or normalises (CR, NEL, LS, PS). PyYAML's emitter writes
# them unescaped in plain and single-quoted scalars, so a value holding one (annotations may hold any text) is
# double-quoted, where they are escaped; JSON output escapes them too, since it is read back as YAML.
_UNSAFE = re.compile("[^\x09\x0a\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # With style None PyYAML still quotes whatever its own (YAML 1.1) resolver would not read back as a string.
    style = '"' if _UNSAFE.search(value) else "'" if _NUMBER_OR_BOOL.fullmatch(value) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


# --- Public API --------------------------------------------------------------------------------------------


def load_manifests(text: str) -> list[Resource]:
    """Every WorkloadEndpoint and Profile in `text`: YAML (or JSON), one or more documents, lists expanded.

    Raises ManifestError naming the (1-based) document and the field. Empty documents are skipped.
    """
    return [resource for _, resource in load_positioned_manifests(text)]


def load_positioned_manifests(text: str) -> list[tuple[str, Resource]]:
    """`load_manifests`, each resource with where it stands: "document 3", or "document 2 items[0]" in a list."""
    loader = _Loader(text)
    objects: list[tuple[str, Resource]] = []
    document = 0
    try:
        while True:
            document += 1
            try:
                if not loader.check_node():
                    break
                data = loader.construct_document(loader.get_node())
            except yaml.YAMLError as error:
                raise ManifestError(_yaml_problem(error), document=document) from None
            except RecursionError:
                # PyYAML composes nested nodes recursively: thousands of levels exhaust Python's stack.
                raise ManifestError("nested too deeply to be a manifest", document=document) from None
            if data is None:
                continue
            try:
                resources = _document(data)
            except _FieldProblem as problem:
                raise ManifestError(str(problem), document=document) from None
            except RecursionError:
                raise ManifestError("nested too deeply to be a manifest", document=document) from None
            listed = isinstance(data, Mapping) and str(data.get("kind", "")).endswith("List")
            objects += [
                (f"document {document} items[{i}]" if listed else f"document {document}", resource)
                for i, resource in enumerate(resources)
            ]
    finally:
        loader.dispose()
    return objects


def parse_value(text: str) -> Any:
    """One YAML (or JSON) value as the manifest loader reads it: scalars kept as text, null as None."""
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as error:
        raise ManifestError(_yaml_problem(error)) from None
    except RecursionError:
        raise ManifestError("nested too deeply") from None
    finally:
        loader.dispose()


def from_manifest_dict(data: Mapping[str, Any]) -> Resource:
    """One resource from a calicoctl-shaped mapping (apiVersion, kind, metadata, spec)."""
    try:
        objects = _document(data)
    except _FieldProblem as problem:
        raise ManifestError(str(problem)) from None
    if data.get("kind") not in _CLASSES:
        raise ManifestError(f"kind {_q(data.get('kind'))} is a list; expected one WorkloadEndpoint or Profile")
    return objects[0]


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()


def to_manifest_dict(obj: Resource) -> dict[str, Any]:
    """The calicoctl shape of `obj`: proto JSON names, empty fields left out, resourceVersion a string."""
    if not isinstance(obj, WorkloadEndpoint | Profile):
        raise TypeError(f"expected a WorkloadEndpoint or a Profile, not {type(obj).__name__}")
    # MessageToDict renders int64 (resourceVersion) as a string, as Kubernetes does.
    body = json_format.MessageToDict(obj)
    metadata: dict[str, Any] = body.get("metadata", {})
    spec: dict[str, Any] = body.get("spec", {})
    # Map order is not defined by protobuf: sort so that output is stable and diffable.
    for section, key in ((metadata, "labels"), (metadata, "annotations"), (spec, "labelsToApply")):
        if key in section:
            section[key] = dict(sorted(section[key].items()))
    # Calico prints qosControls' limits as integers and a numeric protocol or DSCP mark as a number
    # (numorstring): so here, rather than proto JSON's quoted int64 and the stored text.
    if "qosControls" in spec:
        spec["qosControls"] = {
            name: value if name == "dscp" and not _is_number(value) else int(value)
            for name, value in spec["qosControls"].items()
        }
    for port in spec.get("ports", []):
        if _is_number(port.get("protocol", "")):
            port["protocol"] = int(port["protocol"])
    return {"apiVersion": API_VERSION, "kind": obj.DESCRIPTOR.name, "metadata": metadata, "spec": spec}


def dump_manifests(objects: Sequence[Resource], fmt: Literal["yaml", "json"], *, list_kind: str | None = None) -> str:
    """`objects` as calicoctl prints them.

    YAML: one document per object (`---` between them); nothing at all for no objects.
    JSON: one object as itself; otherwise a `<Kind>List` (or `List` when kinds are mixed) with `items`.
    With `list_kind` (a listing: "WorkloadEndpoint", "Profile"), YAML and JSON are always a `<list_kind>List`,
    whatever the number of items (0 and 1 included), so that `jq '.items[]'` (or `yq`) always works.
    """
    documents = [to_manifest_dict(obj) for obj in objects]
    if fmt == "yaml" and list_kind is not None:
        payload = {"apiVersion": API_VERSION, "kind": f"{list_kind}List", "items": documents}
        return yaml.dump(payload, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1 << 16)
    if fmt == "yaml":
        if not documents:
            return ""
        return yaml.dump_all(
            documents, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1 << 16
        )
    if fmt == "json":
        if list_kind is not None:
            payload = {"apiVersion": API_VERSION, "kind": f"{list_kind}List", "items": documents}
        elif len(documents) == 1:
            payload = documents[0]
        else:
            kinds = {document["kind"] for document in documents}
            kind = f"{kinds.pop()}List" if len(kinds) == 1 else "List"
            payload = {"apiVersion": API_VERSION, "kind": kind, "items": documents}
        text = json.dumps(payload, indent=2, ensure_ascii=False)
        # Characters a YAML reader (ours included) would refuse or fold are escaped; they can only be in strings.
        return _UNSAFE.sub(lambda match: f"\\u{ord(match.group()):04x}", text) + "\n"
    raise ValueError(f"unknown format {fmt!r}: expected yaml or json")
