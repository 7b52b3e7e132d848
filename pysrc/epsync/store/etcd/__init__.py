"""The etcd v3 datastore, and the small typed asyncio etcd client it runs on."""

from epsync.store.etcd.store import EtcdDatastore, EtcdTls

__all__ = ["EtcdDatastore", "EtcdTls"]
