"""The etcd v3 datastore, and the small typed asyncio etcd client it runs on.

`store` is the Datastore; `keyspace` where the data lives in etcd; `txn` packs writes into etcd
transactions; `mirror` is the change feed, kept by one etcd watch; `client` talks to etcd.
"""

from epsync.store.etcd.store import EtcdDatastore, EtcdTls

__all__ = ["EtcdDatastore", "EtcdTls"]
