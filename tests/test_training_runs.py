"""The benchmarks' reading of CPU time stolen by the host (/proc/stat), which they print
next to wall-clock figures, and of a trainer's own CPU time, which they compare trainers
by."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.training_runs import cpu_times, process_cpu_seconds, stolen_fraction


def _stat(tmp_path: Path, name: str, cpu_line: str) -> Path:
    path = tmp_path / name
    path.write_text(f"{cpu_line}\ncpu0 1 2 3 4 5 6 7 8 0 0\nintr 12345\n")
    return path


def test_steal_is_the_eighth_field_of_the_cpu_line(tmp_path):
    stat = _stat(tmp_path, "stat", "cpu  700 0 100 150 0 0 0 50 30 0")
    assert cpu_times(stat) == (50, 1000)  # guest time is already counted in user


def test_stolen_fraction_between_two_readings(tmp_path):
    before = cpu_times(_stat(tmp_path, "a", "cpu  700 0 100 150 0 0 0 50 0 0"))
    after = cpu_times(_stat(tmp_path, "b", "cpu  1300 0 200 250 0 0 0 250 0 0"))
    assert stolen_fraction(before, after) == 200 / 1000


def test_unreadable_or_foreign_stat_gives_no_figure(tmp_path):
    assert cpu_times(tmp_path / "absent") is None
    assert cpu_times(_stat(tmp_path, "odd", "intr 1 2 3")) is None
    assert stolen_fraction(None, (1, 2)) is None
    assert stolen_fraction((5, 100), (5, 100)) is None  # no time passed


def test_process_cpu_time_grows_with_the_work_of_that_process():
    before = process_cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    assert process_cpu_seconds(os.getpid()) >= before + 0.2


def test_process_cpu_time_of_a_gone_process_is_none():
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()  # reaped: its pid names no process now
    assert process_cpu_seconds(finished.pid) is None
