"""The client half of the `epsync` command: calicoctl-style commands, manifests, and output.

It talks to a server only through `epsync.client`; `epsync.main` joins it with `epsync serve`.
"""
