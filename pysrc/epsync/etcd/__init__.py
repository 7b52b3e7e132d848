"""etcd v3: a small asyncio client (client.py) over the generated gRPC code of etcd's API (v3/)."""
