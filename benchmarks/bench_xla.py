r"""The shapes config's training step with and without XLA (train_config { use_xla }), in
one run, on this machine.

    .venv/bin/python -m benchmarks.bench_xla [--seconds 150] [--steps 300]

Each trainer runs `model_main_tf2.py` as a user would (the shipped
pipelines/shapes_resnet18_fpn.config on 200 synthetic images, its own precision): steps/s
of the last Orbit report in the window (tracing and compilation excluded) and the CPU time
a step takes (which the host's other machines cannot steal). Then both train the same
--steps from the same start and print their last total loss, a check that the compiled
step learns as the plain one does. XLA is worth making the default only where it is faster
and learns the same.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.training_runs import (
    REPO_ROOT,
    SHAPES_CONFIG,
    cpu_times,
    make_records,
    overrides,
    step_rate,
    stolen_fraction,
)

TOTAL_LOSS = re.compile(r"'Loss/total_loss': np\.float32\(([\d.]+)\)")


def command(model_dir: Path, config: list[str], xla: bool, *extra: str) -> list[str]:
    return [sys.executable, "model_main_tf2.py", f"--pipeline_config_path={SHAPES_CONFIG}",
            f"--model_dir={model_dir}", "--norecord_summaries", *extra,
            *[f"--config_override={o}" for o in config],
            f"--config_override=train_config {{ use_xla: {'true' if xla else 'false'} }}"]


def last_loss(cmd: list[str]) -> float:
    result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    return float(TOTAL_LOSS.findall(result.stdout)[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=150, help="timing window per run")
    parser.add_argument("--steps", type=int, default=300, help="steps of the loss check")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        records = make_records(work, {"train": 200, "val": 20}, seed=3)
        config = overrides(records, "train", "val", None)
        rates = {}
        for xla in (False, True):
            before = cpu_times()
            rates[xla] = step_rate(command(work / f"time_{xla}", config, xla), args.seconds)
            stolen = stolen_fraction(before, cpu_times())
            rate, cpu = rates[xla]
            print(f"{'XLA' if xla else 'plain':>6}: {rate:.2f} steps/s" +
                  (f", {cpu * 1000:.0f} ms of CPU a step" if cpu else "") +
                  (f" (steal {stolen:.0%})" if stolen is not None else ""), flush=True)
        losses = {xla: last_loss(command(work / f"loss_{xla}", config, xla,
                                         f"--num_train_steps={args.steps}",
                                         f"--checkpoint_every_n={args.steps}"))
                  for xla in (False, True)}
        (plain, plain_cpu), (xla, xla_cpu) = rates[False], rates[True]
        print(f"\nsteps/s: plain {plain:.2f}, XLA {xla:.2f}; ratio {xla / plain:.2f} "
              "(above 1: XLA is faster)")
        if plain_cpu and xla_cpu:
            print(f"CPU time a step: plain {plain_cpu * 1000:.0f} ms, XLA {xla_cpu * 1000:.0f} "
                  f"ms; ratio {plain_cpu / xla_cpu:.2f} (above 1: XLA is cheaper)")
        print(f"total loss after {args.steps} steps: plain {losses[False]:.3f}, XLA "
              f"{losses[True]:.3f}")
        faster = xla > plain and (not plain_cpu or not xla_cpu or xla_cpu < plain_cpu)
        print("XLA " + ("is faster here: worth making the default" if faster else
                        "is not faster here: the default stays off"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
