"""Generated protobuf code for etcd's v3 API, from proto/epsync/etcd/v3 (`make proto` regenerates it; do not edit)."""
