"""Datastores: the interface in etcd v3's terms (`base`), what every backend's change feed and group
commit share (`feed`), the embedded SQLite backend (`sqlite`) and the etcd backend (`etcd`). Values
are opaque bytes; the layers above decide what they mean."""
