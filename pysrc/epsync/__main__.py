"""`python -m epsync`: the same as the `epsync` command."""

from epsync.main import main

main()
