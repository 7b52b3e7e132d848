"""How many cores this process may run on: the default of `epsync serve --workers`.

Its own module, with nothing but `os`, because `epsync --help` shows the default and must not import the server.
"""

from __future__ import annotations

import os


def default_workers() -> int:
    """One serving process per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)
