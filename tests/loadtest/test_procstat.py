"""The load test's per-thread CPU: read from this very process's /proc, and split by thread name."""

from __future__ import annotations

import os
import threading
import time

from bench.loadtest import procstat
from hypothesis import given
from hypothesis import strategies as st


def _spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_a_named_thread_s_cpu_is_read_under_its_kernel_name() -> None:
    done = threading.Event()

    def busy() -> None:
        with open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as comm:
            comm.write("procstat-busy")
        _spin(0.3)
        done.wait(10)

    worker = threading.Thread(target=busy)
    before = procstat.thread_cpu_seconds(os.getpid())
    process_before = procstat.cpu_seconds()
    worker.start()
    time.sleep(0.05)
    while worker.is_alive() and not _named(procstat.thread_cpu_seconds(os.getpid()), "procstat-busy", 0.25):
        time.sleep(0.02)
    after = procstat.thread_cpu_seconds(os.getpid())
    process_cpu = procstat.cpu_seconds() - process_before
    done.set()
    worker.join()
    assert before[os.getpid()][0] == "main"
    split = procstat.cpu_by_thread_name(before, after, process_cpu)
    assert split["procstat-busy"] >= 0.25  # started after `before`: counted from zero
    assert "main" in split
    assert sum(split.values()) >= process_cpu - 1e-9  # what no running thread accounts for is "other"


def _named(threads: dict[int, tuple[str, float]], name: str, at_least: float) -> bool:
    return any(n == name and cpu >= at_least for n, cpu in threads.values())


def test_an_ended_process_has_no_threads() -> None:
    assert procstat.thread_cpu_seconds(2**22 + 12345) == {}


_READING = st.dictionaries(
    st.integers(1, 50), st.tuples(st.sampled_from(["main", "a", "b"]), st.floats(0, 100)), max_size=8
)


@given(_READING, _READING, st.floats(0, 500))
def test_the_split_counts_each_thread_once_and_the_rest_as_other(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], process_cpu: float
) -> None:
    split = procstat.cpu_by_thread_name(before, after, process_cpu)
    assert all(cpu >= 0 for cpu in split.values())
    assert set(split) <= {name for name, _ in after.values()} | {"other"}
    # Whatever the threads still running do not account for is the ended threads': never below the whole.
    assert sum(split.values()) >= process_cpu - 1e-6 * max(1.0, process_cpu)
    # A thread that used nothing between two readings adds nothing.
    unchanged = procstat.cpu_by_thread_name(after, after, 0.0)
    assert all(cpu == 0 for cpu in unchanged.values())
