"""The etcd store's change feed: a copy of the prefix's records, kept current by one etcd watch.

`load()` reads the whole prefix at one revision S (paged, every page at S); then one etcd watch
over the prefix from S + 1 feeds the listeners, one batch per watch response, in revision order.
Writes made by anything else (another replica, etcdctl) arrive the same way. The mirror holds the
prefix's records (key -> record as of the last delivered revision): a listener batch's `previous`
values come from there, so the watch needs no prev_kv, and the store's `snapshot()` is that map at
the feed's revision, which makes the listener handshake of base.py hold by construction (no await
between reading the map and returning it).

Faults:
- The watch fails (etcd unreachable, leader lost): it reconnects with capped, jittered exponential
  back-off and resumes from the last revision it saw + 1, so listeners get every change once.
  `healthy` is whether the watch is established; health listeners hear each change.
- etcd compacted past the watch's revision (after a long outage): the mirror re-lists the prefix at
  a new revision S and delivers ONE synthetic batch at revision S that turns the state the
  listeners have into the state at S: a Change for every key that appeared, changed (its
  mod_revision differs) or disappeared (value None), `previous` being the value the listeners last
  had (the mirror keeps it). Every change in it carries revision S, also where the object's own
  mod_revision is older; the records the mirror holds keep the true mod_revision. Downstream
  watchers receive only the difference. If nothing differs, no batch is delivered and the feed's
  revision moves to S.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

from epsync.store.base import Change, HealthListener, Kind, Record
from epsync.store.etcd.client import EtcdClient, EtcdCompacted, EtcdError, WatchBatch
from epsync.store.etcd.keyspace import Keyspace
from epsync.store.feed import ChangeFeed, HealthSignal

log = logging.getLogger(__name__)


class WatchMirror:
    """The records under the keyspace's prefix as the listeners have them, and the watch that keeps them.

    `page_size`: keys per read when listing the prefix. `reconnect_max_seconds`: the cap of the
    watch's reconnection back-off.
    """

    def __init__(self, keyspace: Keyspace, feed: ChangeFeed, *, page_size: int, reconnect_max_seconds: float) -> None:
        self.keyspace = keyspace
        self.page_size = page_size
        self.reconnect_max_seconds = reconnect_max_seconds
        self.objects: dict[tuple[Kind, str], Record] = {}  # as of the feed's revision
        self.listed_revision = 0  # of the last full read (open or re-list): history starts there
        self.last_event = 0  # revision of the last real etcd event delivered (history ends there)
        self.relists = 0  # re-reads after a compaction
        self._feed = feed
        self._watch_revision = 0  # last revision the watch saw (resume from the next)
        self._health = HealthSignal()
        self._task: asyncio.Task[None] | None = None
        self._first_attempt: asyncio.Future[None] | None = None

    @property
    def healthy(self) -> bool:
        return self._health.healthy

    def add_health_listener(self, listener: HealthListener) -> None:
        self._health.add_listener(listener)

    def records(self) -> list[Record]:
        """Every record, in (kind, key) order."""
        return sorted(self.objects.values(), key=lambda r: (r.kind.value, r.key))

    # ----------------------------------------------------------------- lifecycle

    async def load(self, client: EtcdClient) -> None:
        """Read the whole prefix at one revision and start the feed there (raises EtcdError)."""
        objects, revision = await self._read_all(client)
        self.objects = objects
        self._watch_revision = self.last_event = self.listed_revision = revision
        self._feed.reset(revision)

    async def start(self, client: EtcdClient, within: float) -> None:
        """Start the watch; return once it is established or its first attempt failed, or after `within`.

        If the watch cannot start, it keeps trying, and the mirror is unhealthy until it does.
        """
        loop = asyncio.get_running_loop()
        self._first_attempt = loop.create_future()
        self._task = loop.create_task(self._watch_loop(client), name="epsync-etcd-watch")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._first_attempt), within)

    async def stop(self) -> None:
        """Stop the watch. Stopped on purpose: not news for the health listeners."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._health.healthy = False

    # ----------------------------------------------------------------- the watch

    async def _watch_loop(self, client: EtcdClient) -> None:
        failures = 0
        while True:
            watch = client.watch(
                self.keyspace.raw_prefix, prefix=True, start_revision=self._watch_revision + 1, progress_notify=True
            )
            try:
                await watch.start()
                failures = 0
                self._health.set(True)
                self._first_attempt_done()
                async for batch in watch:
                    self._deliver(batch)
            except EtcdCompacted as error:
                log.warning(
                    "etcd at %s is compacted past revision %d (%s): re-listing %s",
                    self.keyspace.where,
                    self._watch_revision + 1,
                    error,
                    self.keyspace.prefix,
                )
                try:
                    await self._relist(client)
                    continue
                except EtcdError as relist_error:
                    self._watch_failed(relist_error, "re-listing after compaction")
            except EtcdError as error:
                self._watch_failed(error, "watching")
            except Exception as error:  # a bug; keep the feed alive rather than stop it for good
                log.exception("datastore etcd at %s: the watch failed", self.keyspace.where)
                self._watch_failed(error, "watching")
            delay = min(self.reconnect_max_seconds, 0.1 * 2**failures)
            failures = min(failures + 1, 30)
            await asyncio.sleep(random.uniform(delay / 2, delay))

    def _watch_failed(self, error: Exception, doing: str) -> None:
        if self._health.healthy:
            log.warning("etcd at %s: %s failed (%s); reconnecting with back-off", self.keyspace.where, doing, error)
        self._health.set(False)
        self._first_attempt_done()

    def _first_attempt_done(self) -> None:
        if self._first_attempt is not None and not self._first_attempt.done():
            self._first_attempt.set_result(None)

    def _deliver(self, batch: WatchBatch) -> None:
        """One watch response: update the records and hand its changes to the listeners as one batch."""
        changes: list[Change] = []
        for event in batch.events:
            kv = event.kv
            revision = kv.mod_revision
            if revision <= self._watch_revision:
                continue  # already delivered (cannot happen: the watch resumes after the last one)
            self.last_event = revision
            parsed = self.keyspace.parse(kv.key)
            if parsed is None:
                log.warning("etcd at %s: ignoring key %r under %s", self.keyspace.where, kv.key, self.keyspace.prefix)
                continue
            old = self.objects.get(parsed)
            kind, key = parsed
            if event.type == "put":
                self.objects[parsed] = Record(kind, key, kv.value, kv.create_revision, revision)
                previous, previous_revision = (old.value, old.mod_revision) if old else (None, 0)
                changes.append(Change(revision, kind, key, kv.value, previous, kv.create_revision, previous_revision))
            elif old is not None:
                del self.objects[parsed]
                changes.append(Change(revision, kind, key, None, old.value, old.create_revision, old.mod_revision))
        if batch.events:
            self._watch_revision = max(self._watch_revision, batch.events[-1].kv.mod_revision)
        elif batch.revision > self._watch_revision:
            # A progress notification: nothing under the prefix up to batch.revision. Resuming after it
            # keeps a reconnection from asking for history etcd may have compacted meanwhile.
            self._watch_revision = batch.revision
        if changes:
            self._feed.publish(changes)

    async def _relist(self, client: EtcdClient) -> None:
        """Read the prefix anew at a revision S and deliver the difference as one batch at S."""
        objects, revision = await self._read_all(client)
        changes: list[Change] = []
        for name in sorted(self.objects.keys() | objects.keys(), key=lambda k: (k[0].value, k[1])):
            old, new = self.objects.get(name), objects.get(name)
            kind, key = name
            if new is None:
                assert old is not None
                changes.append(Change(revision, kind, key, None, old.value, old.create_revision, old.mod_revision))
            elif old is None or old.mod_revision != new.mod_revision:
                previous, previous_revision = (old.value, old.mod_revision) if old else (None, 0)
                changes.append(Change(revision, kind, key, new.value, previous, new.create_revision, previous_revision))
        self.objects = objects
        self._watch_revision = self.last_event = revision
        self.listed_revision = max(self.listed_revision, revision)
        self.relists += 1
        log.warning(
            "etcd at %s: re-listed %s at revision %d, %d changes",
            self.keyspace.where,
            self.keyspace.prefix,
            revision,
            len(changes),
        )
        if changes:
            self._feed.publish(changes)
        else:
            self._feed.advance(revision)

    async def _read_all(self, client: EtcdClient) -> tuple[dict[tuple[Kind, str], Record], int]:
        """Every record under the prefix at one revision, read in pages all at that revision."""
        keyspace = self.keyspace
        for _attempt in range(5):
            objects: dict[tuple[Kind, str], Record] = {}
            try:
                page = await client.range(keyspace.raw_prefix, prefix=True, limit=self.page_size)
                revision = page.revision
                while True:
                    for kv in page.kvs:
                        parsed = keyspace.parse(kv.key)
                        if parsed is not None:
                            objects[parsed] = Record(
                                parsed[0], parsed[1], kv.value, kv.create_revision, kv.mod_revision
                            )
                    if not page.more or not page.kvs:
                        return objects, revision
                    page = await client.range(
                        page.kvs[-1].key + b"\0", range_end=keyspace.range_end, revision=revision, limit=self.page_size
                    )
            except EtcdCompacted:
                continue  # compacted while paging: read again at a newer revision
        raise EtcdError(f"etcd at {keyspace.where} kept being compacted while {keyspace.prefix} was read")
