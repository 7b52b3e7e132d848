"""CPU time and memory of a process, read from Linux's /proc (no dependencies)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Sample:
    cpu_seconds: float  # user + system, all threads
    rss_bytes: int


def cpu_seconds(pid: int | str = "self") -> float:
    """User plus system CPU seconds of every thread of the process so far."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        return _stat_cpu(stat.read().rsplit(b")", 1)[1])


def _stat_cpu(after_name: bytes) -> float:
    """User plus system CPU seconds from a /proc stat line's fields after the command name."""
    fields = after_name.split()
    # After the command name: state is field 3, utime 14 and stime 15 (1-based), so 11 and 12 here.
    return (int(fields[11]) + int(fields[12])) / _TICKS


def thread_cpu_seconds(pid: int) -> dict[int, tuple[str, float]]:
    """Each thread of the process now: its id -> (its kernel name, or "main" for the first thread; its CPU
    seconds so far). Empty if the process has ended."""
    threads: dict[int, tuple[str, float]] = {}
    try:
        tids = [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return threads
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", "rb") as stat:
                head, tail = stat.read().rsplit(b")", 1)
        except OSError:  # ended meanwhile
            continue
        name = "main" if tid == pid else head.split(b"(", 1)[1].decode(errors="replace")
        threads[tid] = (name, _stat_cpu(tail))
    return threads


def cpu_by_thread_name(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], process_cpu: float
) -> dict[str, float]:
    """CPU seconds between two `thread_cpu_seconds` readings, summed by each thread's name in `after` (a
    pool's threads share one; a thread that named itself meanwhile counts under its new name). A thread
    that started meanwhile counts from zero. What threads that ended meanwhile used, which no reading holds,
    is "other": the rest of `process_cpu`, the whole process's CPU over the same interval."""
    by_name: dict[str, float] = {}
    for tid, (name, cpu) in after.items():
        start = before[tid][1] if tid in before and before[tid][1] <= cpu else 0.0  # else: a reused thread id
        by_name[name] = by_name.get(name, 0.0) + cpu - start
    rest = process_cpu - sum(by_name.values())
    if rest > 0:
        by_name["other"] = by_name.get("other", 0.0) + rest
    return by_name


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of the process and of its child processes now (`epsync serve --workers`)."""
    total = cpu_seconds(pid)
    for child in children(pid):
        with contextlib.suppress(OSError):  # ended meanwhile
            total += cpu_seconds(child)
    return total


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size now (VmRSS)."""
    return _status_kib(pid, b"VmRSS:") * 1024


def peak_rss_bytes(pid: int | str = "self") -> int:
    """The largest resident set size so far (VmHWM)."""
    return _status_kib(pid, b"VmHWM:") * 1024


def children(pid: int) -> list[int]:
    """The process's child processes now (empty if it has ended)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children", "rb") as listed:
            return [int(child) for child in listed.read().split()]
    except OSError:
        return []


def socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets the process has open (empty if it has ended)."""
    inodes: set[int] = set()
    try:
        descriptors = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in descriptors:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def accepted_connections(port: int) -> set[int]:
    """The inodes of the established TCP sockets whose local port is `port` (a server's side of its connections)."""
    inodes = set()
    for table in ("tcp", "tcp6"):  # gRPC listens on dual-stack IPv6 sockets, even for 127.0.0.1
        with open(f"/proc/net/{table}") as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":  # ESTABLISHED
                    inodes.add(int(fields[9]))
    return inodes


def connections_by_process(pids: list[int], port: int) -> dict[int, set[int]]:
    """For each of a server's processes, the client connections on `port` it holds."""
    accepted = accepted_connections(port)
    return {pid: socket_inodes(pid) & accepted for pid in pids}


def sample(pid: int | str = "self") -> Sample:
    return Sample(cpu_seconds(pid), rss_bytes(pid))


def sample_if_running(pid: int) -> Sample | None:
    """The process's sample, or None if it has ended meanwhile."""
    try:
        return sample(pid)
    except OSError:
        return None


def _status_kib(pid: int | str, field: bytes) -> int:
    with open(f"/proc/{pid}/status", "rb") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1])
    return 0
