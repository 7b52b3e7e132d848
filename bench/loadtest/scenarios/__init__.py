"""The load test's scenarios, one module each, numbered as in bench/README.md.

s1_churn          steady churn: the write-rate sweep with node and selector watchers (the sweep 4, 5, 7 use)
s2_storms         every node watcher reconnects at once: with state, with state after changes, without
s3_slow_watchers  a tenth of the watchers stop reading; the others' latency, cut-offs, resuming
s4_etcd           scenarios 1 and 2 on etcd, and epsync again in etcd's shape
s5_raw            the same watchers against a bare grpc.aio server: the ceiling
s6_correctness    every watcher's view against the store, after every other scenario
s7_cluster        scenario 1's sweep on epsync replicas in front of one etcd
"""
