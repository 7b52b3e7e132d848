"""A store's identity: made once, kept by the store, the same for every server on it (store/base.py)."""

from __future__ import annotations

from epsync.store.base import Datastore
from tests.store.conftest import Backend


async def test_the_identity_survives_reopening_and_differs_between_stores(
    store: Datastore, backend: Backend, location: str
) -> None:
    first = store.identity
    assert len(first.store_id) == 32
    assert len(first.secret) == 32
    await store.close()
    again = backend.make(location)
    await again.open()
    try:
        assert again.identity == first
    finally:
        await again.close()
    other = backend.make(backend.location())
    await other.open()
    try:
        assert other.identity.store_id != first.store_id
        assert other.identity.secret != first.secret
    finally:
        await other.close()
    await store.open()  # the fixture closes it
