"""Fuzzing the converter (tests/fuzz/): generated hostile COCO, VIA (1.x, 2.x, CSV), VOC and
Open Images inputs convert into records that pass --check, or stop with one error; never a
traceback, a hang or a memory blow-up.

CI runs FUZZ_EXAMPLES (default 150) examples per format; the long run is
`FUZZ_EXAMPLES=20000 make test PYTEST_ARGS=tests/test_fuzz.py` or, per format,
`.venv/bin/python -m tests.fuzz.run --format coco --examples 20000` (docs/bad_input.md).
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from tests.fuzz.strategies import FORMATS

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
MEMORY_LIMIT = 1536 * 2 ** 20  # RLIMIT_DATA of the fuzzing process: a blow-up fails fast
PEAK_RSS_BOUND_MB = 512  # measured: 80-95 MB for every format, flat in the example count
SECONDS_PER_EXAMPLE = 2.0  # measured: 10-20 ms


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_DATA, (MEMORY_LIMIT, MEMORY_LIMIT))


@pytest.mark.parametrize("format_name", sorted(FORMATS))
def test_generated_inputs_convert_or_fail_cleanly(format_name):
    result = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.run", "--format", format_name, "--examples",
         str(EXAMPLES), "--commands", "3"], cwd=REPO_ROOT, capture_output=True, text=True,
        preexec_fn=_limit_memory, timeout=60 + SECONDS_PER_EXAMPLE * EXAMPLES)
    assert result.stdout.strip(), result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert result.returncode == 0 and "violation" not in report, (report, result.stderr[-3000:])
    outcomes = report["outcomes"]
    assert outcomes.get("ok", 0) > 0 and any(k.startswith("error:") for k in outcomes), outcomes
    assert outcomes["command_runs"] == 3
    assert report["peak_rss_mb"] < PEAK_RSS_BOUND_MB, report
    assert report["peak_child_rss_mb"] < PEAK_RSS_BOUND_MB, report
