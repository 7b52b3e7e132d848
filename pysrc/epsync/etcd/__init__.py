"""etcd's v3 API, generated from its own protos (vendored in proto/epsync/etcd/v3) by `make proto`.

The client that uses it is `epsync.store.etcd.client`; this package holds only generated code,
as `epsync.v1` does for epsync's own API."""
