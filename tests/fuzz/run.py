"""Runs the fuzz examples of one format and prints the outcomes as JSON.

    .venv/bin/python -m tests.fuzz.run --format coco --examples 20000 [--seed 0]

Each example converts in this process (and, with --commands N, the first N also as the
`create_tfrecords.py` command, checked for one error line and no traceback). It exits 1 at
the first violation, printing the failing input.
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.fuzz.harness import Violation, argv_of, run_example, write_pool
from tests.fuzz.strategies import FORMATS

EXAMPLE_SECONDS = 60  # a conversion of a few tiny images that takes longer is a hang


def _alarm(signum, frame):
    raise TimeoutError(f"an example took longer than {EXAMPLE_SECONDS} s")


def run_command_once(example, workdir: Path, pool: Path) -> str:
    """The example through the real command line: exit 0, or 1 with one error line."""
    import shutil

    if workdir.exists():
        shutil.rmtree(workdir)
    inputs = workdir / "in"
    for relative, data in example.files.items():
        (inputs / relative).parent.mkdir(parents=True, exist_ok=True)
        (inputs / relative).write_bytes(data)
    argv = argv_of(example, inputs, pool, workdir / "out")
    result = subprocess.run([sys.executable, "data_prep/create_tfrecords.py", *argv],
                            capture_output=True, text=True, timeout=EXAMPLE_SECONDS)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    if "Traceback" in result.stderr or result.returncode not in (0, 1, 2) or (
            result.returncode == 1 and len(errors) != 1):
        raise Violation(f"command exit {result.returncode}: {result.stderr[-2000:]}")
    return f"command_exit_{result.returncode}"


def fuzz(format_name: str, examples: int, seed: int, commands: int) -> Counter:
    outcomes: Counter = Counter()
    work = Path(tempfile.mkdtemp(prefix=f"fuzz-{format_name}-"))
    pool = write_pool(work / "pool")
    signal.signal(signal.SIGALRM, _alarm)

    @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate],
              print_blob=True)
    @given(example=FORMATS[format_name], skip_errors=st.booleans())
    def one(example, skip_errors):
        signal.alarm(EXAMPLE_SECONDS)
        try:
            outcomes[run_example(example, work / "example", pool, skip_errors)] += 1
            if outcomes["command_runs"] < commands:
                outcomes["command_runs"] += 1
                outcomes[run_command_once(example, work / "command", pool)] += 1
        finally:
            signal.alarm(0)

    import random

    random.seed(seed)
    try:
        one()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return outcomes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", required=True, choices=sorted(FORMATS))
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--commands", type=int, default=0,
                        help="also run the first N examples as the command")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    import resource

    try:
        outcomes = fuzz(args.format, args.examples, args.seed, args.commands)
    except Violation as err:
        # hypothesis adds the failing example as an exception note ("Falsifying example")
        print(json.dumps({"format": args.format, "violation": str(err),
                          "input": getattr(err, "__notes__", [])}), flush=True)
        return 1
    # VmHWM, not ru_maxrss: ru_maxrss keeps the high-water mark of the process this one was
    # forked from (a pytest worker holding TensorFlow) across exec.
    status = Path("/proc/self/status").read_text() if Path("/proc/self/status").exists() else ""
    fields = {line.split(":")[0]: int(line.split()[1]) // 1024
              for line in status.splitlines() if line.startswith(("VmHWM:", "VmPeak:"))}
    peak_mb = fields.get("VmHWM", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    vm_peak = fields.get("VmPeak")
    children_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"format": args.format, "examples": args.examples,
                      "outcomes": dict(sorted(outcomes.items())),
                      "seconds": round(time.perf_counter() - start, 1),
                      "peak_rss_mb": round(peak_mb), "peak_child_rss_mb": round(children_mb),
                      "peak_virtual_mb": vm_peak}),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
