"""The gRPC server: servicers for each service, error mapping, and the process lifecycle."""
