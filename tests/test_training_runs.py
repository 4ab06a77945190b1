"""The benchmarks' reading of CPU time stolen by the host (/proc/stat), which they print
next to wall-clock figures."""
from __future__ import annotations

from pathlib import Path

from benchmarks.training_runs import cpu_times, stolen_fraction


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
