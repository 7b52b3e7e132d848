"""How many cores this process may run on: the default of `epsync serve --workers`.

Its own module, with nothing but `os`, because `epsync --help` shows the default and must not import the server.
"""

from __future__ import annotations

import os


def default_workers() -> int:
    """One serving process per two cores this process may run on (at least one).

    A serving process keeps more than one core busy under load: its Python (one core at most, the GIL) and,
    beside it, the gRPC transport's threads and the store's commits, which run without the GIL. One process
    per core left them fighting each other and the clients for the same cores (README "Every core")."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // 2)
