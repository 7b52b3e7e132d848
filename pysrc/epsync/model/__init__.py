"""What a resource is: kinds and keys, validation and normalisation, Calico's derived names, selector fields.

The bottom of the house: no I/O, nothing of the store, the cache or gRPC serving. The server,
the client and the CLI all build on it.
"""
