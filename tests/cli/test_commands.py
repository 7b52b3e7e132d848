"""The `epsync` client commands against a real server, through the real entry point run in-process."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
import yaml

from epsync.cli.manifest import load_manifests
from epsync.client import Client
from epsync.server.app import EpsyncServer
from tests.cli.runner import against, epsync
from tests.conftest import free_port, server_config
from tests.factories import endpoint, k8s_endpoint, profile

SEED = Path(__file__).parent.parent / "data" / "seed-sample.yaml"
SEED_NAME = "node1-k8s-my--nginx--b1337a-eth0"
HEADER = "apiVersion: projectcalico.org/v3\n"


def profile_doc(name: str) -> str:
    return HEADER + f"kind: Profile\nmetadata:\n  name: {name}\n"


def k8s_doc(namespace: str, pod: str, *, mac: str = "") -> str:
    return HEADER + (
        f"kind: WorkloadEndpoint\nmetadata:\n  namespace: {namespace}\nspec:\n  node: n1\n  orchestrator: k8s\n"
        f"  pod: {pod}\n  endpoint: eth0\n  interfaceName: cali1\n  ipNetworks: [10.0.0.1/32]\n"
        + (f"  mac: {mac}\n" if mac else "")
    )


def address(server: EpsyncServer) -> str:
    return f"127.0.0.1:{server.port}"


# --- apply, create, replace ---------------------------------------------------------------------------------


async def test_apply_then_get_as_yaml_round_trips_the_seed_sample(server: EpsyncServer) -> None:
    applied = await against(server, "apply", "-f", str(SEED))
    assert applied.code == 0, applied.err
    assert applied.out.startswith(f"workloadendpoint default/{SEED_NAME} applied (resource version ")

    got = await against(server, "get", "wep", SEED_NAME, "-o", "yaml")
    assert got.code == 0, got.err
    (stored,) = load_manifests(got.out)
    (original,) = load_manifests(SEED.read_text())
    assert yaml.safe_load(got.out)["kind"] == "WorkloadEndpoint"  # one named resource: itself, not a list
    assert stored.spec == original.spec


async def test_the_current_v3_fields_apply_and_show_in_get_yaml(server: EpsyncServer) -> None:
    manifest = (
        HEADER
        + """kind: WorkloadEndpoint
metadata:
  name: web
  annotations: {example.com/owner: net-team}
spec:
  node: n1
  workload: web
  endpoint: eth0
  interfaceName: cali0
  serviceAccountName: builder
  allowSpoofedSourcePrefixes: [10.9.8.7/16]
  ports: [{name: dns, protocol: 17, port: 53}]
  qosControls: {ingressBandwidth: 1000000, dscp: EF}
"""
    )
    applied = await against(server, "apply", "-f", "-", stdin=manifest.encode())
    assert applied.code == 0, applied.err
    got = await against(server, "get", "wep", "web", "-o", "yaml")
    assert got.code == 0, got.err
    doc = yaml.safe_load(got.out)
    assert doc["metadata"]["annotations"] == {"example.com/owner": "net-team"}
    assert doc["spec"]["serviceAccountName"] == "builder"
    assert doc["spec"]["allowSpoofedSourcePrefixes"] == ["10.9.0.0/16"]
    assert doc["spec"]["ports"] == [{"name": "dns", "protocol": 17, "port": 53}]
    assert doc["spec"]["qosControls"] == {"ingressBandwidth": 1000000, "dscp": "EF"}


async def test_apply_takes_the_files_resource_version_as_a_precondition(server: EpsyncServer, tmp_path: Path) -> None:
    assert (await against(server, "apply", "-f", str(SEED))).code == 0
    edited = tmp_path / "edited.yaml"
    edited.write_text((await against(server, "get", "wep", SEED_NAME, "-o", "yaml")).out.replace("node1", "node1"))
    # Someone else changes the endpoint after our `get`.
    assert (await against(server, "label", "wep", SEED_NAME, "team=blue")).code == 0

    refused = await against(server, "apply", "-f", str(edited))
    assert refused.code == 1
    line = refused.error_line
    assert f"workloadendpoint default/{SEED_NAME}" in line
    assert "conflict" in line
    assert "--force" in line
    async with Client(address(server)) as client:
        assert client_labels(await client.get_endpoint(SEED_NAME)).get("team") == "blue"  # not overwritten

    forced = await against(server, "apply", "-f", str(edited), "--force")
    assert forced.code == 0, forced.err
    async with Client(address(server)) as client:
        assert "team" not in client_labels(await client.get_endpoint(SEED_NAME))


def client_labels(obj: object) -> dict[str, str]:
    return dict(obj.metadata.labels)  # type: ignore[attr-defined]


async def test_apply_without_a_resource_version_is_last_writer_wins(server: EpsyncServer) -> None:
    manifest = profile_doc("web").encode() + b"spec: {}\n"
    assert (await against(server, "apply", "-f", "-", stdin=manifest)).code == 0
    assert (await against(server, "label", "profile", "web", "team=blue")).code == 0
    applied = await against(server, "apply", "-f", "-", stdin=manifest)
    assert applied.code == 0, applied.err
    assert applied.out.startswith("profile web applied")
    async with Client(address(server)) as client:
        assert "team" not in (await client.get_profile("web")).metadata.labels


async def test_replace_needs_the_resource_to_exist(server: EpsyncServer, tmp_path: Path) -> None:
    manifest = tmp_path / "p.yaml"
    manifest.write_text(profile_doc("web") + "spec:\n  labelsToApply: {role: web}\n")
    missing = await against(server, "replace", "-f", str(manifest))
    assert missing.code == 1
    assert "NOT_FOUND" in missing.error_line
    assert "profile web" in missing.error_line
    assert (await against(server, "create", "-f", str(manifest))).code == 0
    manifest.write_text(profile_doc("web") + "spec:\n  labelsToApply: {role: api}\n")
    replaced = await against(server, "replace", "-f", str(manifest))
    assert replaced.code == 0, replaced.err
    assert replaced.out.startswith("profile web replaced (resource version ")
    async with Client(address(server)) as client:
        assert dict((await client.get_profile("web")).spec.labels_to_apply) == {"role": "api"}


async def test_create_refuses_what_exists(server: EpsyncServer) -> None:
    assert (await against(server, "create", "-f", "-", stdin=profile_doc("web").encode())).code == 0
    again = await against(server, "create", "-f", "-", stdin=profile_doc("web").encode())
    assert again.code == 1
    assert "ALREADY_EXISTS" in again.error_line


async def test_a_bad_document_names_itself_its_resource_and_what_was_not_applied(server: EpsyncServer) -> None:
    manifest = "---\n".join(
        [profile_doc("first"), k8s_doc("prod", "web"), k8s_doc("prod", "db", mac="zz"), profile_doc("last")]
    )
    result = await against(server, "apply", "-f", "-", stdin=manifest.encode())
    assert result.code == 1
    assert [line.rpartition(" (")[0] for line in result.out.splitlines()] == [
        "profile first applied",
        "workloadendpoint prod/n1-k8s-web-eth0 applied",
    ]
    line = result.error_line
    assert line.startswith("epsync: error: applied 2 of 4; document 3 (workloadendpoint prod/n1-k8s-db-eth0): ")
    assert "spec.mac" in line
    assert line.endswith("; the 1 after it not applied")
    assert "NOT_FOUND" in (await against(server, "get", "profile", "last")).err


async def test_a_file_that_does_not_load_sends_nothing(server: EpsyncServer) -> None:
    manifest = profile_doc("first") + "---\n" + profile_doc("second") + "  bogus: 1\n"
    result = await against(server, "apply", "-f", "-", stdin=manifest.encode())
    assert result.code == 1
    assert 'document 2: unknown field "metadata.bogus"; nothing was sent to the server' in result.error_line
    assert (await against(server, "get", "profiles", "-o", "name")).out == ""


async def test_a_directory_means_its_manifests_in_name_order(server: EpsyncServer, tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(profile_doc("from-b"))
    (tmp_path / "a.yml").write_text(profile_doc("from-a"))
    (tmp_path / "c.json").write_text(json.dumps({**yaml.safe_load(profile_doc("from-c"))}))
    (tmp_path / "notes.txt").write_text("not a manifest")
    result = await against(server, "apply", "-f", str(tmp_path))
    assert result.code == 0, result.err
    assert [line.split()[1] for line in result.out.splitlines()] == ["from-a", "from-b", "from-c"]

    (tmp_path / "d.yaml").write_text(profile_doc("from-d") + "spec:\n  labelsToApply: {'': x}\n")
    failed = await against(server, "apply", "-f", str(tmp_path))
    assert failed.code == 1
    assert f"applied 3 of 4; {tmp_path / 'd.yaml'} document 1 (profile from-d): " in failed.error_line


# --- bad input: one line, no traceback, nothing changed -------------------------------------------------------

DEEP_YAML = HEADER + "kind: Profile\nmetadata: {name: a}\nspec: {labelsToApply: " + "[" * 5000 + "]" * 5000 + "}\n"
DEEP_JSON = '{"apiVersion": "projectcalico.org/v3", "kind": "Profile", "spec": ' + '{"a": ' * 5000 + "1" + "}" * 5001


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (profile_doc("a\0b").encode(), "a NUL byte at line 4"),
        (profile_doc("caf\xe9").encode("latin-1"), "not UTF-8 text: byte 0xe9 at line 4"),
        (
            HEADER.encode() + b"kind: Profile\nmetadata: {name: a, resourceVersion: " + b"9" * 5000 + b"}\n",
            "5,000-digit",
        ),
        (DEEP_YAML.encode(), "nested too deeply"),
        (DEEP_JSON.encode(), "nested too deeply"),
        (b"- just\n- a list\n", "expected a mapping"),
        (b"kind: [unclosed\n", "invalid YAML at line"),
        (b"# nothing\n", "no resources"),
    ],
    ids=["nul", "not-utf8", "5000-digits", "deep-yaml", "deep-json", "a-list", "bad-yaml", "empty"],
)
async def test_bad_files_get_one_line_and_change_nothing(
    server: EpsyncServer, tmp_path: Path, content: bytes, expected: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(content)
    for command in ("apply", "create", "replace", "delete"):
        result = await against(server, command, "-f", str(bad))
        assert result.code == 1
        assert expected in result.error_line
        assert str(bad) in result.error_line
    async with Client(address(server)) as client:
        assert [p async for p in client.list_profiles()] == []


async def test_missing_files_and_bad_usage_are_one_line(server: EpsyncServer, tmp_path: Path) -> None:
    assert "cannot read" in (await against(server, "apply", "-f", str(tmp_path / "missing.yaml"))).error_line
    assert "no .yaml" in (await against(server, "apply", "-f", str(tmp_path))).error_line
    assert "unknown kind 'pods'" in (await against(server, "get", "pods", "x")).error_line
    assert "not a reference" in (await against(server, "get", "profile/a/b")).error_line
    assert "NOT_FOUND" in (await against(server, "get", "wep", "nope")).error_line
    assert "label_selector" in (await against(server, "get", "weps", "-l", "app ==")).error_line
    assert (
        "--node applies to workload endpoints only"
        in (await against(server, "get", "profiles", "--node", "n")).error_line
    )


async def test_a_server_that_is_not_there_is_one_line() -> None:
    result = await epsync("get", "weps", "--server", f"127.0.0.1:{free_port()}")
    assert result.code == 1
    assert "UNAVAILABLE" in result.error_line


# --- get and list ---------------------------------------------------------------------------------------------


async def make_endpoints(server: EpsyncServer) -> None:
    async with Client(address(server)) as client:
        await client.create_profile(profile("web", {"role": "web"}))
        await client.create_endpoint(endpoint("a", namespace="prod", node="n1", labels={"app": "x"}, profiles=["web"]))
        await client.create_endpoint(endpoint("b", namespace="prod", node="n2"))
        await client.create_endpoint(endpoint("c", namespace="default", node="n1"))


async def test_get_without_a_name_lists_as_kubectl_does(server: EpsyncServer) -> None:
    await make_endpoints(server)
    listed = await against(server, "get", "weps", "-n", "prod")
    assert listed.code == 0, listed.err
    lines = listed.out.splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "NODE", "NETWORKS", "INTERFACE", "VERSION"]
    assert [line.split()[1] for line in lines[1:]] == ["a", "b"]
    assert (await against(server, "list", "weps", "-n", "prod")).out == listed.out  # `list` is the same

    every = await against(server, "get", "weps", "-A", "-l", "role == 'web'")
    assert [line.split()[1] for line in every.out.splitlines()[1:]] == ["a"]
    on_node = await against(server, "get", "weps", "-A", "--node", "n1", "-o", "name")
    assert on_node.out.splitlines() == ["workloadendpoint/default/c", "workloadendpoint/prod/a"]

    none = await against(server, "get", "weps", "-n", "empty")
    assert (none.code, none.out, none.err) == (0, "", "No workloadendpoints found in namespace empty.\n")


async def test_wide_output_shows_labels_profiles_and_addresses(server: EpsyncServer) -> None:
    await make_endpoints(server)
    wide = await against(server, "get", "wep", "a", "-n", "prod", "-o", "wide")
    header, row = wide.out.splitlines()
    assert header.split() == [
        "NAMESPACE", "NAME", "WORKLOAD", "NODE", "NETWORKS", "NATS", "INTERFACE", "PROFILES", "LABELS", "VERSION"
    ]  # fmt: skip
    cells = dict(zip(header.split(), row.split(), strict=True))
    assert cells["PROFILES"] == "web"
    assert "app=x" in cells["LABELS"].split(",")
    assert cells["NETWORKS"] != "<none>"
    assert cells["NATS"] == "<none>"
    profiles = await against(server, "get", "profiles", "-o", "wide")
    assert profiles.out.splitlines()[0].split() == ["NAME", "LABELS-TO-APPLY", "LABELS", "VERSION"]
    assert profiles.out.splitlines()[1].split()[:3] == ["web", "role=web", "<none>"]


@pytest.mark.parametrize("fmt", ["json", "yaml"])
async def test_a_listing_in_json_or_yaml_is_always_a_list(server: EpsyncServer, fmt: str) -> None:
    for count in (0, 1, 2):
        result = await against(server, "get", "weps", "-o", fmt)
        assert result.code == 0, result.err
        listed = json.loads(result.out) if fmt == "json" else yaml.safe_load(result.out)
        assert listed["kind"] == "WorkloadEndpointList"
        assert len(listed["items"]) == count
        async with Client(address(server)) as client:
            await client.create_endpoint(endpoint(f"ep-{count}"))
    profiles = await against(server, "list", "profiles", "-o", fmt)
    parsed = json.loads(profiles.out) if fmt == "json" else yaml.safe_load(profiles.out)
    assert parsed == {"apiVersion": "projectcalico.org/v3", "kind": "ProfileList", "items": []}
    # Named: one is itself, several are a list.
    one = await against(server, "get", "wep", "ep-0", "-o", fmt)
    assert (json.loads(one.out) if fmt == "json" else yaml.safe_load(one.out))["kind"] == "WorkloadEndpoint"
    two = await against(server, "get", "wep", "ep-0", "ep-1", "-o", fmt)
    assert (json.loads(two.out) if fmt == "json" else yaml.safe_load(two.out))["kind"] == "WorkloadEndpointList"


async def test_names_from_o_name_are_taken_back(server: EpsyncServer) -> None:
    await make_endpoints(server)
    names = (await against(server, "get", "weps", "-A", "-o", "name")).out.split()
    got = await against(server, "get", *names, "-o", "name")
    assert got.out.split() == names
    deleted = await against(server, "delete", *names)
    assert deleted.code == 0, deleted.err
    assert [line.split()[1] for line in deleted.out.splitlines()] == [n.partition("/")[2] for n in names]
    assert (await against(server, "get", "weps", "-A", "-o", "name")).out == ""


async def test_profiles_take_namespace_options_as_kubectl_takes_them_for_cluster_resources(
    server: EpsyncServer,
) -> None:
    async with Client(address(server)) as client:
        await client.create_profile(profile("web"))
    for options in ((), ("-A",), ("-n", "prod")):
        listed = await against(server, "get", "profiles", *options, "-o", "name")
        assert listed.out == "profile/web\n", options
        watched = await against(server, "watch", "profiles", *options, "--limit", "1")
        assert watched.code == 0, watched.err
        assert "ADDED" in watched.out


# --- patch and label ------------------------------------------------------------------------------------------


async def test_patch_is_a_json_merge_patch(server: EpsyncServer) -> None:
    await make_endpoints(server)
    patched = await against(
        server, "patch", "wep", "a", "-n", "prod", "-p", '{"spec": {"node": "n9", "profiles": null}}'
    )
    assert patched.code == 0, patched.err
    assert patched.out.startswith("workloadendpoint prod/a patched (resource version ")
    async with Client(address(server)) as client:
        stored = await client.get_endpoint("a", "prod")
    assert stored.spec.node == "n9"
    assert list(stored.spec.profiles) == []
    assert dict(stored.metadata.labels)["app"] == "x"  # untouched by the patch

    same = await against(server, "patch", "workloadendpoint/prod/a", "-p", '{"spec": {"node": "n9"}}')
    assert same.out.startswith("workloadendpoint prod/a unchanged")


async def test_patch_refuses_what_it_cannot_do(server: EpsyncServer) -> None:
    await make_endpoints(server)
    async with Client(address(server)) as client:
        version = (await client.get_endpoint("a", "prod")).metadata.resource_version
    cases = {
        '{"metadata": {"name": "other"}}': "may not change metadata.name",
        '{"kind": "Profile"}': "may not change kind",
        '["not", "an", "object"]': "a merge patch is an object",
        '{"spec": {"node": ': "--patch: invalid YAML",
        '{"spec": {"ports": [{"port": 70000}]}}': "spec.ports",
        f'{{"metadata": {{"resourceVersion": "{version - 1}"}}}}': "conflict",  # pinned to a stale version: not retried
    }
    for patch, expected in cases.items():
        result = await against(server, "patch", "wep", "a", "-n", "prod", "-p", patch)
        assert result.code == 1, patch
        assert expected in result.error_line, patch
    async with Client(address(server)) as client:
        assert (await client.get_endpoint("a", "prod")).metadata.resource_version == version


async def test_label_sets_overwrites_and_removes_as_kubectl_does(server: EpsyncServer) -> None:
    await make_endpoints(server)
    assert (await against(server, "label", "wep", "a", "-n", "prod", "tier=front", "env=dev")).code == 0
    refused = await against(server, "label", "wep", "a", "-n", "prod", "tier=back")
    assert refused.code == 1
    assert "'tier' already has a value ('front'); --overwrite" in refused.error_line
    assert (await against(server, "label", "wep", "a", "-n", "prod", "tier=back", "--overwrite")).code == 0
    removed = await against(server, "label", "workloadendpoint/prod/a", "env-", "gone-")
    assert removed.code == 0, removed.err
    assert removed.out.startswith("workloadendpoint prod/a unlabeled")
    assert removed.err == "epsync: label 'gone' not found\n"
    async with Client(address(server)) as client:
        labels = dict((await client.get_endpoint("a", "prod")).metadata.labels)
    assert labels["tier"] == "back"
    assert "env" not in labels
    nothing = await against(server, "label", "wep", "a", "-n", "prod", "tier=back")
    assert nothing.out.startswith("workloadendpoint prod/a not labeled")
    assert (await against(server, "label", "profile", "web", "team=a")).code == 0
    assert "is not a label change" in (await against(server, "label", "profile", "web", "team")).error_line


# --- delete ---------------------------------------------------------------------------------------------------


async def test_a_delete_that_deletes_nothing_says_so(server: EpsyncServer) -> None:
    for kind, what in (("wep", "workloadendpoint default/never-existed"), ("profile", "profile never-existed")):
        refused = await against(server, "delete", kind, "never-existed")
        assert refused.code == 1
        assert refused.error_line == f"epsync: error: {what}: not found: nothing to delete"
        allowed = await against(server, "delete", kind, "never-existed", "--ignore-missing")
        assert (allowed.code, allowed.out, allowed.err) == (0, f"{what} not found: nothing to delete\n", "")


async def test_delete_by_file_derives_names_as_apply_does(server: EpsyncServer) -> None:
    manifest = (k8s_doc("prod", "web") + "---\n" + profile_doc("web")).encode()
    assert (await against(server, "apply", "-f", "-", stdin=manifest)).code == 0
    deleted = await against(server, "delete", "-f", "-", stdin=manifest)
    assert deleted.code == 0, deleted.err
    lines = deleted.out.splitlines()
    assert lines[0].startswith("workloadendpoint prod/n1-k8s-web-eth0 deleted (at revision ")
    assert lines[1].startswith("profile web deleted (at revision ")
    again = await against(server, "delete", "-f", "-", "--ignore-missing", stdin=manifest)
    assert again.out.splitlines() == [
        "workloadendpoint prod/n1-k8s-web-eth0 not found: nothing to delete",
        "profile web not found: nothing to delete",
    ]
    async with Client(address(server)) as client:
        await client.create_endpoint(k8s_endpoint("n1", "web", namespace="prod"))
    stale = await against(server, "delete", "wep", "n1-k8s-web-eth0", "-n", "prod", "--resource-version", "1")
    assert "conflict" in stale.error_line


# --- global options, version, help ------------------------------------------------------------------------------


async def test_connection_options_go_before_or_after_the_command(
    server: EpsyncServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Client(address(server)) as client:
        await client.create_profile(profile("web"))
    before = await epsync("--server", address(server), "get", "profiles", "-o", "name")
    after = await epsync("get", "profiles", "-o", "name", "--server", address(server))
    assert before.out == after.out == "profile/web\n"
    # A value given after the command wins over one given before it, as the last of a repeated flag does.
    wrong = f"127.0.0.1:{free_port()}"
    assert (await epsync("--server", wrong, "get", "profiles", "--server", address(server))).code == 0
    monkeypatch.setenv("EPSYNC_SERVER", address(server))
    assert (await epsync("get", "profiles", "-o", "name")).out == "profile/web\n"


async def test_version_and_help() -> None:
    from importlib.metadata import version

    result = await epsync("--version")
    assert (result.code, result.out) == (0, f"epsync {version('epsync')}\n")
    helped = await epsync("get", "--help")
    assert helped.code == 0
    assert "connection (before or after the command)" in helped.out
    assert "wide" in helped.out
    unknown = await epsync("get", "weps", "--bogus")
    assert unknown.code == 2
    assert "unrecognized arguments: --bogus" in unknown.err


# --- watch ------------------------------------------------------------------------------------------------------


async def test_watch_reports_its_connection_on_stderr_and_events_on_stdout(server: EpsyncServer) -> None:
    await make_endpoints(server)
    watched = await against(server, "watch", "weps", "-A", "--limit", "3", "-o", "json")
    assert watched.code == 0, watched.err
    events = [json.loads(line) for line in watched.out.splitlines()]
    assert [event["type"] for event in events] == ["ADDED"] * 3
    assert watched.err.splitlines() == [
        f"epsync: connecting to {address(server)}",
        "epsync: connected; receiving the current state",
    ]  # --limit 3 ends it on the third ADDED, before the SYNCED bookmark

    watching = asyncio.create_task(against(server, "watch", "profiles", "--limit", "2"))
    async with Client(address(server)) as client:
        await wait_for_watchers(client, 1)
        await client.create_profile(profile("later"))
    synced = await asyncio.wait_for(watching, 20)
    assert synced.code == 0, synced.err
    assert re.fullmatch(r"epsync: synced at revision \d+: 1 profiles; watching", synced.err.splitlines()[-1])
    assert [line.split()[0] for line in synced.out.splitlines()] == ["ADDED", "SYNCED", "ADDED"]


async def wait_for_watchers(client: Client, count: int) -> None:
    async with asyncio.timeout(20):
        while (await client.get_status()).watchers < count:  # noqa: ASYNC110 (another process's state: polled)
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # past its initial state, so that what comes next is an event


@pytest.mark.sqlite_only
async def test_watch_says_when_the_server_goes_away_and_when_it_has_resumed(tmp_path: Path) -> None:
    first = EpsyncServer(server_config(tmp_path / "data"))
    port = await first.start()
    async with Client(f"127.0.0.1:{port}") as client:
        await client.create_profile(profile("before"))
    watching = asyncio.create_task(epsync("watch", "profiles", "--server", f"127.0.0.1:{port}", "--limit", "2"))
    async with Client(f"127.0.0.1:{port}") as client:
        await wait_for_watchers(client, 1)
    await first.stop(grace=0.1)
    await asyncio.sleep(0.5)  # a reconnection attempt or two against nothing
    second = EpsyncServer(server_config(tmp_path / "data", listen=f"127.0.0.1:{port}"))
    await second.start()
    try:
        async with Client(f"127.0.0.1:{port}") as client:
            await wait_for_watchers(client, 1)
            await client.create_profile(profile("after"))
        result = await asyncio.wait_for(watching, 30)
    finally:
        await second.stop(grace=0.1)
    assert result.code == 0, result.err
    lines = result.err.splitlines()
    assert "epsync: synced at revision 1: 1 profiles; watching" in lines
    assert any(
        "went away (shutting down); reconnecting to resume after revision 1" in line or "lost the server" in line
        for line in lines
    ), lines
    assert "epsync: reconnected; resumed at revision 1: 1 profiles; watching" in lines
    assert [line.split()[0] for line in result.out.splitlines()] == ["ADDED", "SYNCED", "SYNCED", "ADDED"]


async def test_watch_against_a_wrong_address_gives_up_with_a_message() -> None:
    result = await asyncio.wait_for(
        epsync("watch", "weps", "--server", f"127.0.0.1:{free_port()}", "--connect-timeout", "0.5"), 20
    )
    assert result.code == 1
    assert result.err.splitlines()[0].startswith("epsync: connecting to 127.0.0.1:")
    assert "cannot connect to" in result.err.splitlines()[1]
    assert result.err.count("\n") == 2
