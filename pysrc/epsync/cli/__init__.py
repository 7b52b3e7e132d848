"""The client half of the `epsync` command: calicoctl- and kubectl-style commands, manifests, and output.

`parser` declares the commands and imports nothing heavy; each command lives in the module that runs it
(`reads`, `writes`, `edits`, `watching`, `completion`), imported only when it is chosen. They talk to a
server only through `epsync.client`; `epsync.main` joins them with `epsync serve`.
"""
