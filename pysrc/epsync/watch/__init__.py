"""Watch: per-watcher event streams fed by the store's change feed (SPEC §6)."""
