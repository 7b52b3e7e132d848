"""Generated code for the owner's store service, from proto/epsync/internal/v1 (`make proto`; do not edit)."""
