"""Durability: a write acknowledged by the store survives SIGKILL of the process, and revisions carry on."""

from __future__ import annotations

import asyncio
import signal
import sys
import textwrap
from pathlib import Path

from epsync.store.base import Kind
from epsync.store.sqlite import SqliteDatastore
from tests.store.conftest import put

# Writes forever from many concurrent writers, printing each acknowledged (key, revision).
WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from epsync.store.base import Kind, Put
    from epsync.store.sqlite import SqliteDatastore

    async def main() -> None:
        store = SqliteDatastore(Path(sys.argv[1]))
        await store.open()

        async def writer(w: int) -> None:
            i = 0
            while True:
                key = f"ns/w{w}-{i}"
                (result,) = await store.write([Put(Kind.WORKLOAD_ENDPOINT, key, key.encode())])
                print(key, result.revision, flush=True)
                i += 1

        await asyncio.gather(*(writer(w) for w in range(20)))

    asyncio.run(main())
    """
)


async def test_acknowledged_writes_survive_sigkill_and_revisions_continue(db_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WRITER, str(db_path), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    acknowledged: dict[str, int] = {}
    try:
        while len(acknowledged) < 500:
            line = await asyncio.wait_for(process.stdout.readline(), 30)
            assert line, (await process.stderr.read()).decode() if process.stderr else "writer exited"
            key, acked = line.decode().split()
            acknowledged[key] = int(acked)
    finally:
        process.send_signal(signal.SIGKILL)  # mid-stream: groups are in flight
        await process.communicate()
    assert process.returncode == -signal.SIGKILL

    store = SqliteDatastore(db_path)
    await store.open()
    try:
        highest = max(acknowledged.values())
        assert store.current_revision >= highest
        for key, revision in acknowledged.items():
            record = await store.get(Kind.WORKLOAD_ENDPOINT, key)
            assert record is not None, key
            assert (record.value, record.mod_revision) == (key.encode(), revision)
        history = await store.changes_since(0)
        assert [c.revision for c in history] == list(range(1, store.current_revision + 1))
        following = await put(store, "ns/after-the-crash")
        assert following.revision == store.current_revision > highest
    finally:
        await store.close()
