"""Reading the datastore's retained history at start, so that watches resume across a restart.

SPEC §7 keeps revisions and history over a restart, and the embedded store keeps a history row for
every write. The cache is filled at start with that history (`ResourceCache.load`), not only the
snapshot, so a watch from any revision within the retained window is replayed as if the server had
never stopped. The alternative, reading the store's history on demand when a resume reaches back
past what the cache holds, was measured and rejected (bench/bench_resume_history.py, README
"Resuming a watch"): the history the cache holds after a restart is what it holds anyway once the
server has run for a window's worth of writes, so loading it costs start-up time and no memory the
server does not need in steady state, whereas on demand every such resume would read and replan
the whole window while holding the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from epsync.store.base import Change, Datastore, DatastoreError, RevisionCompacted

log = logging.getLogger(__name__)

# Changes per history read: one reader round trip each, and bounded memory per message for a worker
# whose store is its owner's (store/remote).
PAGE = 10_000


async def retained_history(store: Datastore, upto: int, window: int) -> tuple[int, list[Change]]:
    """(R, every change after R up to revision `upto`): the store's retained history within the last `window`
    revisions. A store that cannot give it (etcd keeps none for a replica that just started, or it fails)
    gives (`upto`, []): watches then resume from the start on, as before."""
    since = max(store.oldest_revision, upto - window, 0)
    while since < upto:
        try:
            return since, await _read(store, since, upto)
        except RevisionCompacted as error:
            since = max(error.oldest, since + 1)  # compacted meanwhile: what is left
        except DatastoreError as error:
            log.warning("cannot read the datastore's history (%s); watches resume from revision %d on", error, upto)
            break
    return upto, []


async def _read(store: Datastore, since: int, upto: int) -> list[Change]:
    changes: list[Change] = []
    after = since
    while after < upto:
        page: Sequence[Change] = await store.changes_since(after, PAGE)
        if len(page) == PAGE:
            # A revision may hold several changes (an etcd transaction): never cut one between pages.
            last = page[-1].revision
            whole = [c for c in page if c.revision < last]
            page = whole or await store.changes_since(after)
        page = [c for c in page if c.revision <= upto]
        if not page:
            break
        changes.extend(page)
        after = page[-1].revision
    return changes
