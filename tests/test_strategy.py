"""Which precision a config gets on which machine: bfloat16 on CPUs only where the CPU
computes it natively (elsewhere oneDNN emulates it, slower than float32)."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from models.training import strategy

INTEL_FLAGS = "fpu vme sse sse2 avx2 avx512f avx512_bf16 amx_tile"
AMD_ZEN3_FLAGS = "fpu vme sse sse2 avx avx2 fma sha_ni"


def _cpuinfo(tmp_path: Path, key: str, flags: str, processors: int = 2) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text("".join(f"processor\t: {n}\nmodel name\t: test\n{key}\t\t: {flags}\n\n"
                            for n in range(processors)))
    return path


@pytest.mark.parametrize("key,flags,expected", [
    ("flags", INTEL_FLAGS, True),
    ("flags", "fpu sse avx512f amx_bf16 amx_tile", True),
    ("Features", "fp asimd evtstrm aes sve bf16 i8mm", True),  # Arm (Graviton3)
    ("flags", AMD_ZEN3_FLAGS, False),
    ("flags", "fpu sse avx512f avx512_bf16x", False),  # whole flags only
    ("model name", "avx512_bf16", False),  # only the flags line counts
])
def test_bfloat16_support_is_read_from_the_cpu_flags(tmp_path, key, flags, expected):
    assert strategy.cpu_supports_bfloat16(_cpuinfo(tmp_path, key, flags)) is expected


def test_no_cpuinfo_means_no_bfloat16(tmp_path):
    assert strategy.cpu_supports_bfloat16(tmp_path / "absent") is False


@pytest.mark.parametrize("native,precision", [(True, "bfloat16"), (False, "float32")])
def test_use_bfloat16_on_a_cpu(monkeypatch, caplog, native, precision):
    monkeypatch.setattr(strategy, "cpu_supports_bfloat16", lambda: native)
    with caplog.at_level(logging.WARNING, logger=strategy.__name__):
        placement = strategy.choose_placement(use_bfloat16=True)
    assert (placement.kind, placement.precision) == ("cpu", precision)
    assert ("no bfloat16 instructions" in caplog.text) is not native


def test_float32_unless_asked(monkeypatch):
    monkeypatch.setattr(strategy, "cpu_supports_bfloat16", lambda: True)
    assert strategy.choose_placement().precision == "float32"
