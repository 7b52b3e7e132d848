"""Keeping watchers in sync: the cache every read is served from, the recent history, watch events
encoded once as wire bytes, the hubs that turn a committed batch into events, and each watcher's
bounded buffer (SPEC §6). Fed by the store's change feed; knows nothing of gRPC servicers."""
