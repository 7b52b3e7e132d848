"""Generated protobuf code for the epsync.v1 API (`make proto` regenerates it; do not edit)."""
