"""Running a command while measuring its whole process tree: wall time, CPU time and peak
memory (RSS and PSS summed over the command and every process below it)."""
from __future__ import annotations

import dataclasses
import resource
import subprocess
import threading
import time
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class Measured:
    seconds: float
    cpu_seconds: float  # user + system of the process and every descendant it waited for
    peak_tree_mb: float  # the largest sum of RSS over the process and its descendants
    peak_root_mb: float  # the largest RSS of the process itself
    peak_pss_mb: float  # the largest sum of PSS (shared pages divided among their users)


def run_measured(command: list[str]) -> Measured:
    """Runs `command`, sampling the RSS of its process tree every 50 ms (PSS every 0.5 s:
    forked workers count the pages they share with their parent in their RSS too), and the
    CPU time of every process of the tree: the converter's workers are children of its fork
    server, not of the command, so the command's resource usage does not include them."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    peaks = [0.0, 0.0, 0.0]
    own_cpu: dict[int, float] = {}  # pid -> its own user + system seconds, last sampled

    def sample() -> None:
        root = psutil.Process(process.pid)
        ticks = 0
        while process.poll() is None:
            try:
                procs = [root] + root.children(recursive=True)
                own = root.memory_info().rss
                tree = own + sum(p.memory_info().rss for p in procs[1:])
                peaks[0] = max(peaks[0], tree / 2 ** 20)
                peaks[1] = max(peaks[1], own / 2 ** 20)
                for p in procs:
                    times = p.cpu_times()
                    own_cpu[p.pid] = times.user + times.system
                if ticks % 10 == 0:
                    pss = sum(p.memory_full_info().pss for p in procs)
                    peaks[2] = max(peaks[2], pss / 2 ** 20)
            except psutil.Error:
                pass
            ticks += 1
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = process.communicate()
    elapsed = time.perf_counter() - start
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{output[-3000:]}")
    waited = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # The larger of: what the command and the children it waited for used (exact), the sum
    # over every process sampled (includes the fork server's workers; misses each one's
    # last 50 ms).
    cpu = max(waited, sum(own_cpu.values()))
    return Measured(elapsed, cpu, *peaks)
