"""Reading CPU time and memory of other processes from /proc (Linux only)."""

import os
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuSample:
    """user and system CPU seconds of a set of processes (all their threads)."""

    user: float
    system: float

    @property
    def total(self) -> float:
        return self.user + self.system

    def __sub__(self, other: "CpuSample") -> "CpuSample":
        return CpuSample(self.user - other.user, self.system - other.system)


def process_cpu(pid: int) -> CpuSample:
    """utime + stime of a process from /proc/PID/stat (covers every thread of it)."""
    return _stat_cpu(f"/proc/{pid}/stat")


def main_thread_cpu(pid: int) -> CpuSample:
    """utime + stime of a process's main thread only (for Python servers, the event loop;
    worker threads, e.g. password hashing, are the rest of process_cpu)."""
    return _stat_cpu(f"/proc/{pid}/task/{pid}/stat")


def _stat_cpu(path: str) -> CpuSample:
    with open(path, "rb") as f:
        text = f.read()
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    fields = text[text.rindex(b")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return CpuSample(int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS)


def cpu_of(pids: dict[str, int]) -> dict[str, CpuSample]:
    return {name: process_cpu(pid) for name, pid in pids.items()}


def status_kib(pid: int, key: str) -> int:
    """A ``kB`` line of /proc/PID/status (VmRSS, VmHWM, ...), in KiB; 0 if missing."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def rss_kib(pid: int) -> int:
    return status_kib(pid, "VmRSS")


def peak_rss_kib(pid: int) -> int:
    return status_kib(pid, "VmHWM")


def own_cpu() -> CpuSample:
    """This process's CPU so far (all threads), from os.times()."""
    t = os.times()
    return CpuSample(t.user, t.system)


def pids_named(name: str) -> list[int]:
    """Processes whose /proc/PID/comm is ``name`` (e.g. mariadbd, redis-server)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                if f.read().strip() == name:
                    found.append(int(entry))
        except OSError:
            continue
    return found


def machine_busy_seconds() -> tuple[float, float]:
    """CPU seconds all cores spent busy (not idle or iowait) and stolen, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice
    busy = sum(fields[:3]) + sum(fields[5:7])
    steal = fields[7] if len(fields) > 7 else 0
    return busy / CLOCK_TICKS, steal / CLOCK_TICKS
