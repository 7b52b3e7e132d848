"""The `epsync` CLI against a real server, run as a user runs it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import yaml

from epsync.cli.manifest import load_manifests
from epsync.client import Client
from epsync.server.app import EpsyncServer
from tests.conftest import epsync_command, free_port, run_command
from tests.factories import endpoint

SEED = Path(__file__).parent.parent / "data" / "seed-sample.yaml"


async def cli(server: EpsyncServer, *args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    command, *rest = args
    return await run_command(*epsync_command(command, "--server", f"127.0.0.1:{server.port}", *rest), stdin=stdin)


async def test_apply_seed_sample_then_get_it_as_yaml(server: EpsyncServer) -> None:
    code, out, err = await cli(server, "apply", "-f", str(SEED))
    assert code == 0, err
    assert "workloadendpoint default/node1-k8s-my--nginx--b1337a-eth0 applied" in out

    code, out, err = await cli(server, "get", "wep", "node1-k8s-my--nginx--b1337a-eth0", "-o", "yaml")
    assert code == 0, err
    doc = yaml.safe_load(out)
    # Read both through the schema-aware loader: containerID is a string even where YAML would see a number.
    (stored,) = load_manifests(out)
    (original,) = load_manifests(SEED.read_text())
    assert doc["kind"] == "WorkloadEndpoint"
    assert int(doc["metadata"]["resourceVersion"]) > 0
    assert doc["metadata"]["labels"]["projectcalico.org/namespace"] == "default"
    assert doc["metadata"]["labels"]["projectcalico.org/orchestrator"] == "k8s"
    assert stored.spec == original.spec


async def test_the_current_v3_fields_apply_and_show_in_get_yaml(server: EpsyncServer) -> None:
    manifest = """
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
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
    code, _, err = await cli(server, "apply", "-f", "-", stdin=manifest.encode())
    assert code == 0, err
    code, out, err = await cli(server, "get", "wep", "web", "-o", "yaml")
    assert code == 0, err
    doc = yaml.safe_load(out)
    assert doc["metadata"]["annotations"] == {"example.com/owner": "net-team"}
    assert doc["spec"]["serviceAccountName"] == "builder"
    assert doc["spec"]["allowSpoofedSourcePrefixes"] == ["10.9.0.0/16"]
    assert doc["spec"]["ports"] == [{"name": "dns", "protocol": 17, "port": 53}]
    assert doc["spec"]["qosControls"] == {"ingressBandwidth": 1000000, "dscp": "EF"}


async def test_apply_twice_replaces(server: EpsyncServer) -> None:
    first = await cli(server, "apply", "-f", str(SEED))
    second = await cli(server, "apply", "-f", str(SEED))
    assert first[0] == second[0] == 0
    code, out, _ = await cli(server, "list", "weps", "-A")
    assert code == 0
    assert out.count("node1-k8s-my--nginx--b1337a-eth0") == 1


async def test_create_from_stdin_with_several_documents_and_list_filters(server: EpsyncServer) -> None:
    manifest = """
apiVersion: projectcalico.org/v3
kind: Profile
metadata:
  name: web
spec:
  labelsToApply:
    role: web
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: a
  namespace: prod
spec:
  node: n1
  workload: a
  endpoint: eth0
  profiles: [web]
  ipNetworks: [10.0.0.1]
  interfaceName: cali1
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: b
  namespace: prod
spec:
  node: n2
  workload: b
  endpoint: eth0
  ipNetworks: [10.0.0.2]
  interfaceName: cali2
"""
    code, out, err = await cli(server, "create", "-f", "-", stdin=manifest.encode())
    assert code == 0, err
    assert out.count("created") == 3

    code, out, _ = await cli(server, "list", "wep", "-n", "prod", "-l", "role == 'web'")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["NAMESPACE", "NAME", "NODE"]
    assert [line.split()[1] for line in lines[1:]] == ["a"]

    code, out, _ = await cli(server, "list", "wep", "-A", "--node", "n2", "-o", "json")
    assert code == 0
    assert '"name": "b"' in out
    assert '"name": "a"' not in out


async def test_errors_are_one_line_and_exit_non_zero(server: EpsyncServer, tmp_path: Path) -> None:
    code, _out, err = await cli(server, "get", "wep", "nope")
    assert code == 1
    assert err.strip().count("\n") == 0
    assert "NOT_FOUND" in err
    assert "nope" in err

    bad = tmp_path / "bad.yaml"
    bad.write_text(SEED.read_text().replace("ca:fe:1d:52:bb:e9", "not-a-mac").replace("port: 1234", "port: 70000"))
    code, _, err = await cli(server, "apply", "-f", str(bad))
    assert code == 1
    assert err.strip().count("\n") == 0
    assert "spec.mac" in err
    assert "spec.ports[0].port" in err

    code, _, err = await cli(server, "list", "wep", "-l", "app ==")
    assert code == 1
    assert "label_selector" in err
    assert "position" in err

    code, _, err = await cli(server, "apply", "-f", str(tmp_path / "missing.yaml"))
    assert code == 1
    assert "cannot read" in err

    code, _, err = await cli(server, "get", "pods", "x")
    assert code == 1
    assert "unknown kind" in err


async def test_delete_by_name_and_by_file(server: EpsyncServer) -> None:
    assert (await cli(server, "apply", "-f", str(SEED)))[0] == 0
    code, out, err = await cli(server, "delete", "-f", str(SEED))
    assert code == 0, err
    assert "deleted" in out
    code, _, err = await cli(server, "delete", "wep", "node1-k8s-my--nginx--b1337a-eth0")
    assert code == 1
    assert "NOT_FOUND" in err
    code, _, _ = await cli(server, "delete", "wep", "node1-k8s-my--nginx--b1337a-eth0", "--ignore-missing")
    assert code == 0


async def test_list_as_json_is_always_a_list(server: EpsyncServer) -> None:
    for count in (0, 1, 2):
        code, out, err = await cli(server, "list", "wep", "-o", "json")
        assert code == 0, err
        listed = json.loads(out)
        assert listed["kind"] == "WorkloadEndpointList"
        assert len(listed["items"]) == count
        await Client(f"127.0.0.1:{server.port}").create_endpoint(endpoint(f"ep-{count}"))
    code, out, _ = await cli(server, "list", "profile", "-o", "json")
    assert json.loads(out) == {"apiVersion": "projectcalico.org/v3", "kind": "ProfileList", "items": []}


async def test_deleting_nothing_with_ignore_missing_says_so(server: EpsyncServer) -> None:
    code, out, err = await cli(server, "delete", "wep", "never-existed", "--ignore-missing")
    assert code == 0, err
    assert out.strip() == "workloadendpoint default/never-existed not found: nothing deleted (--ignore-missing)"
    code, out, _ = await cli(server, "delete", "profile", "never-existed", "--ignore-missing")
    assert out.strip() == "profile never-existed not found: nothing deleted (--ignore-missing)"


async def test_a_reader_that_goes_away_ends_the_command_quietly(server: EpsyncServer) -> None:
    async with Client(f"127.0.0.1:{server.port}") as client:
        for i in range(3):
            await client.create_endpoint(endpoint(f"ep-{i}"))
    # `epsync list ... | head -1` once head has gone: stdout is a pipe nobody reads any more.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        process = await asyncio.create_subprocess_exec(
            *epsync_command("list", "--server", f"127.0.0.1:{server.port}", "wep", "-o", "yaml"),
            stdout=write_end,
            stderr=asyncio.subprocess.PIPE,
        )
    finally:
        os.close(write_end)
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 128 + signal.SIGPIPE
    assert b"Traceback" not in err, err.decode()
    assert b"Exception ignored" not in err, err.decode()


async def test_a_watch_that_cannot_reach_its_server_says_so() -> None:
    process = await asyncio.create_subprocess_exec(
        *epsync_command("watch", "--server", f"127.0.0.1:{free_port()}", "wep"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        line = await asyncio.wait_for(process.stderr.readline(), 20)
    finally:
        process.kill()
        await process.wait()
    assert b"watch stream ended" in line
    assert b"retrying" in line
