"""The load test: epsync against etcd and a raw grpc.aio server (bench/README.md)."""
