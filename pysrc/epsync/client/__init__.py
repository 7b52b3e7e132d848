"""The Python client of the epsync API: `Client`, and the self-resuming `MaterializedView` behind
`Client.watch()`. It uses only the API, `epsync.errors` and `epsync.model`."""

from epsync.client.client import DEFAULT_TARGET, Client, ClientTls
from epsync.client.view import MaterializedView, WatchEvent

__all__ = ["DEFAULT_TARGET", "Client", "ClientTls", "MaterializedView", "WatchEvent"]
