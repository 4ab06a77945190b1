"""Shared steps of the training benchmarks: synthetic records, timed training runs, and COCO
scores of saved checkpoints. Training runs in a subprocess, as a user would run it."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHAPES_CONFIG = REPO_ROOT / "pipelines/shapes_resnet18_fpn.config"


def cpu_times(stat: Path = Path("/proc/stat")) -> tuple[int, int] | None:
    """(stolen, total) CPU time of all cores so far, in clock ticks, or None off Linux.
    Stolen time is what the hypervisor gave other machines: on a shared host it slows a
    wall-clock benchmark by as much, so the benchmark reports it next to its figures."""
    try:
        fields = stat.read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if not fields or fields[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice, already in user]
    ticks = [int(f) for f in fields[1:9]]
    return (ticks[7] if len(ticks) > 7 else 0), sum(ticks)


def stolen_fraction(before: tuple[int, int] | None, after: tuple[int, int] | None
                    ) -> float | None:
    """Share of the CPU time between two cpu_times() readings that the host took."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def process_cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system, all threads) a process has used so far; None once it is
    gone. Unlike wall time it does not count what the host steals, so two trainers timed at
    different moments on a shared host still compare."""
    import psutil  # as bench_create_tfrecords measures its processes

    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return times.user + times.system


def make_records(work: Path, splits: dict[str, int], seed: int) -> Path:
    """Synthetic shapes (128x128) converted to records in work/records; reused if present."""
    python = sys.executable
    records = work / "records"
    missing = {s: n for s, n in splits.items() if not (records / f"{s}.summary.json").exists()}
    if not missing:
        return records
    split_flags = [f for s, n in missing.items() for f in ("--split", f"{s}:{n}")]
    subprocess.run([python, "-m", "data_prep.synthetic", "--output_dir", str(work / "shapes"),
                    *split_flags, "--seed", str(seed)], cwd=REPO_ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    for split in missing:
        subprocess.run([python, "data_prep/create_tfrecords.py", "--format", "coco",
                        "--annotations", str(work / f"shapes/annotations/instances_{split}.json"),
                        "--images_dir", str(work / "shapes/images" / split), "--output_dir",
                        str(records), "--split", split, "--no_progress",
                        "--no_tfds_metadata"], cwd=REPO_ROOT, check=True,
                       stdout=subprocess.DEVNULL)
    return records


def overrides(records: Path, train_split: str, eval_split: str, num_steps: int | None,
              extra: list[str] = ()) -> list[str]:
    steps = f"num_steps: {num_steps}" if num_steps else ""
    return [f"train_config {{ {steps} checkpoint_max_to_keep: 1000 }}",
            f'train_input_reader {{ label_map_path: "{records}/label_map.pbtxt" '
            f'tf_record_input_reader {{ input_path: "{records}/{train_split}-*.tfrecord" }} }}',
            f'eval_input_reader {{ label_map_path: "{records}/label_map.pbtxt" '
            f'tf_record_input_reader {{ input_path: "{records}/{eval_split}-*.tfrecord" }} }}',
            *extra]


def _checkpoints(model_dir: Path) -> dict[int, float]:
    return {int(p.name.split("-")[1].split(".")[0]): p.stat().st_mtime
            for p in model_dir.glob("ckpt-*.index")}


def train_for(budget_s: float, model_dir: Path, config_overrides: list[str],
              checkpoint_every_n: int, config: Path = SHAPES_CONFIG) -> dict[int, float]:
    """Runs model_main_tf2.py until it ends or the budget is spent; returns
    {checkpoint step: seconds after start it was written} within the budget."""
    command = [sys.executable, "model_main_tf2.py", f"--pipeline_config_path={config}",
               f"--model_dir={model_dir}", f"--checkpoint_every_n={checkpoint_every_n}",
               "--norecord_summaries", *[f"--config_override={o}" for o in config_overrides]]
    start = time.time()
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    while process.poll() is None and time.time() - start < budget_s:
        time.sleep(1)
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    _, errors = process.communicate()
    if process.returncode not in (0, -signal.SIGKILL):
        raise RuntimeError(f"training failed:\n{errors[-3000:]}")
    return {step: written - start for step, written in _checkpoints(model_dir).items()
            if written - start <= budget_s}


def scoring_dir(model_dir: Path, config_overrides: list[str]) -> Path:
    """Where score_checkpoints keeps its evaluation files, the COCO ground truth
    (coco_groundtruth.json) among them: one directory per set of overrides."""
    return model_dir / f"scores_{abs(hash(tuple(config_overrides))) % 10 ** 8}"


def score_checkpoints(model_dir: Path, config_overrides: list[str], steps: list[int],
                      config: Path = SHAPES_CONFIG) -> dict[int, dict]:
    """COCO metrics of each checkpoint on the config's eval split, in this process."""
    from models.builders.experiment_builder import load_and_build  # TensorFlow from here on
    from models.evaluation.continuous_eval import build_evaluator, evaluate_checkpoint
    from models.training.strategy import choose_placement

    built = load_and_build(config, config_overrides, checkpoint_every_n=1)
    eval_dir = scoring_dir(model_dir, config_overrides)
    eval_dir.mkdir(parents=True, exist_ok=True)
    placement = choose_placement()
    trainer, controller = build_evaluator(built, str(eval_dir), eval_dir, placement,
                                          summaries=False)
    results = {}
    for step in steps:
        _, results[step] = evaluate_checkpoint(trainer, controller, placement,
                                               str(model_dir / f"ckpt-{step}"),
                                               built.metrics_sets)
    return results


STEPS_PER_SECOND = re.compile(r"train \| step:\s+(\d+) \| steps/sec:\s+([\d.]+)")


def step_rate(command: list[str], seconds: float) -> tuple[float, float | None]:
    """Steps/s of the last Orbit report before `seconds` (tracing excluded), and the CPU
    seconds a step took between the last two reports (None if the trainer had exited): CPU
    time does not count what the host steals, so it compares trainers timed apart."""
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})  # reports on time
    reports: list[tuple[int, float, float | None]] = []  # step, steps/s, CPU s so far
    start = time.time()
    assert process.stdout is not None
    for line in process.stdout:
        match = STEPS_PER_SECOND.search(line)
        # Orbit prints each report and logs it too (absl, to the same pipe): keep the first.
        if match and int(match.group(1)) > (reports[-1][0] if reports else 0):
            reports.append((int(match.group(1)), float(match.group(2)),
                            process_cpu_seconds(process.pid)))
        if time.time() - start > seconds and len(reports) >= 2:
            break
    process.send_signal(signal.SIGKILL)
    process.wait()
    if len(reports) < 2:
        raise RuntimeError(f"no steady step rate from {' '.join(command[:3])} ...")
    (step_before, _, cpu_before), (step, rate, cpu) = reports[-2:]  # the first has tracing
    if cpu is None or cpu_before is None:
        return rate, None
    return rate, (cpu - cpu_before) / (step - step_before)
