"""`python -m bench.loadtest`: the load test (`make bench`); `--help` lists every size."""

from bench.loadtest.run import standalone

standalone()
