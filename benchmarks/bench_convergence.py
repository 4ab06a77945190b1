"""Convergence on this CPU: mask mAP on held-out synthetic images against wall-clock time,
and the cost of a training step next to Model Garden's own trainer.

    .venv/bin/python -m benchmarks.bench_convergence --budget_minutes 15

1. Writes the synthetic shapes (train and held-out splits) and converts them.
2. Trains pipelines/shapes_resnet18_fpn.config (its own schedule) for the wall-clock budget,
   keeping every checkpoint and when it was written.
3. Scores each checkpoint on the held-out images (COCO box and mask mAP) and prints the
   mAP-versus-time curve. Target: mask mAP@[.5:.95] of at least 0.80 within 15 minutes.
   Next to it, the ceiling: what perfect detections score under the same evaluator
   (benchmarks/mask_ceiling.py), since the round trip through a 28x28 mask alone costs
   these 20-50 px objects IoU, and for the last checkpoint how its masks compare with
   perfect masks inside its own boxes (benchmarks/mask_gap.py).
4. Times steps of `model_main_tf2.py` and of `python -m official.vision.train` on the same
   model (our experiment config, dumped to YAML) and data, and prints the ratios of their
   steps/s and of the CPU time each spends a step, which the host's stealing of CPU time
   (it drifts from minute to minute on a shared host) does not move
   (`--step_comparison_only` runs this step alone).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from benchmarks.training_runs import (
    SHAPES_CONFIG,
    cpu_times,
    make_records,
    overrides,
    score_checkpoints,
    scoring_dir,
    step_rate,
    stolen_fraction,
    train_for,
)


def compare_step_time(work: Path, records: Path, seconds: float
                      ) -> dict[str, tuple[float, float | None]]:
    import yaml

    from models.builders.experiment_builder import load_and_build
    from models.tasks.trainer import set_experiment_precision
    from models.training.strategy import choose_placement

    # The same loop for both: 100-step loops, a checkpoint every 1000 steps (none is written
    # in the timed window, so the comparison is of steps, not of checkpoint writes).
    loop = ["--checkpoint_every_n=1000"]
    config = overrides(records, "train", "heldout", 100000)
    built = load_and_build(SHAPES_CONFIG, config, checkpoint_every_n=1000)
    # The precision model_main_tf2.py chooses here (bfloat16 where the config asks and the
    # CPU has the instructions), for Model Garden's trainer too.
    train_config = built.pipeline.train_config
    placement = choose_placement(use_bfloat16=train_config.use_bfloat16,
                                 use_mixed_precision=train_config.use_mixed_precision)
    set_experiment_precision(built, placement.precision)
    experiment = built.experiment.as_dict()
    experiment["runtime"]["distribution_strategy"] = "one_device"
    assert experiment["trainer"]["steps_per_loop"] == 100, "loops differ: not comparable"
    experiment["trainer"]["checkpoint_interval"] = 1000
    yaml_path = work / "model_garden_experiment.yaml"
    yaml_path.write_text(yaml.safe_dump(experiment))
    commands = {
        "ours": [sys.executable, "model_main_tf2.py", f"--pipeline_config_path={SHAPES_CONFIG}",
                 f"--model_dir={work / 'steps_ours'}", "--norecord_summaries", *loop,
                 *[f"--config_override={o}" for o in config]],
        "theirs": [sys.executable, "-m", "official.vision.train",
                   "--experiment=maskrcnn_resnetfpn_coco", f"--config_file={yaml_path}",
                   "--mode=train", f"--model_dir={work / 'steps_model_garden'}"]}
    # One after the other: the CPU time a shared host's other machines take (steal) can
    # drift between the two windows, so each prints its share.
    timings = {}
    for name in ("ours", "theirs"):
        before = cpu_times()
        rate, cpu_per_step = timings[name] = step_rate(commands[name], seconds)
        stolen = stolen_fraction(before, cpu_times())
        print(f"{name:>6}: {rate:.2f} steps/s" +
              (f", {cpu_per_step * 1000:.0f} ms of CPU a step" if cpu_per_step else "") +
              (f" (steal {stolen:.0%})" if stolen is not None else ""), flush=True)
    return timings


def shapes_pipeline(config_overrides: list[str]):
    from pipelines.config_util import load_pipeline_config

    return load_pipeline_config(SHAPES_CONFIG, config_overrides)


def held_out_diagnosis(groundtruth: Path, checkpoint: Path | None, config: list[str],
                       mask_size: int) -> tuple[float, str]:
    """Mask mAP of perfect detections on the held-out ground truth (mask_ceiling), and
    where the checkpoint's masks lose IoU against them (mask_gap)."""
    from benchmarks.mask_ceiling import perfect_detection_metrics
    from benchmarks.mask_gap import checkpoint_mask_gap, summarize

    best = perfect_detection_metrics(groundtruth, mask_size)["mask_AP"]
    if checkpoint is None:
        return best, "no checkpoint within the budget"
    gap = checkpoint_mask_gap(str(checkpoint), SHAPES_CONFIG, config, str(groundtruth))
    return best, f"{checkpoint.name}: {summarize(gap)}"


def convergence(work: Path, records: Path, args: argparse.Namespace) -> None:
    """Trains for the budget, scores each checkpoint, prints the table and the diagnosis."""
    budget = args.budget_minutes * 60
    # The shipped config's own schedule, sized to about 15 minutes here.
    config = overrides(records, "train", "heldout", None, args.config_override)
    pipeline = shapes_pipeline(config)
    num_steps = pipeline.train_config.num_steps
    predictor = pipeline.model.faster_rcnn.second_stage_box_predictor.mask_rcnn_box_predictor
    side = predictor.mask_height  # of the masks the model predicts (28 as shipped)
    model_dir = work / "model"
    before = cpu_times()
    written = train_for(budget, model_dir, config, args.checkpoint_every_n)
    stolen = stolen_fraction(before, cpu_times())
    results = score_checkpoints(model_dir, config, sorted(written))
    last = model_dir / f"ckpt-{max(written)}" if written else None
    # the held-out ground truth that scoring wrote
    groundtruth = scoring_dir(model_dir, config) / "coco_groundtruth.json"
    best, gap = held_out_diagnosis(groundtruth, last, config, side)
    print(f"\n{args.train_images} training and {args.eval_images} held-out images of "
          f"128x128; budget {args.budget_minutes:g} min; schedule {num_steps} steps")
    print(f"{'minutes':>7} {'step':>6} {'mask mAP':>9} {'mask AP50':>9} {'box mAP':>8}")
    for step in sorted(results):
        m = results[step]
        print(f"{written[step] / 60:7.1f} {step:6d} "
              f"{m['DetectionMasks_Precision/mAP']:9.3f} "
              f"{m['DetectionMasks_Precision/mAP@.50IOU']:9.3f} "
              f"{m['DetectionBoxes_Precision/mAP']:8.3f}")
    if stolen is not None:
        print(f"CPU time taken by the host's other machines while training (steal): "
              f"{stolen:.0%}; steps ran about that much slower than on an idle host")
    print(f"ceiling: perfect detections (exact boxes and classes, ground-truth masks on "
          f"the model's {side}x{side} grid) score mask mAP {best:.3f} with this evaluator")
    print(gap)
    (work / "convergence.json").write_text(json.dumps(
        {"ceiling_mask_mAP": best, "mask_gap": gap, "cpu_steal_fraction": stolen,
         **{str(s): {"minutes": written[s] / 60, **results[s]} for s in results}},
        indent=1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget_minutes", type=float, default=15.0)
    parser.add_argument("--train_images", type=int, default=1000)
    parser.add_argument("--eval_images", type=int, default=50)
    parser.add_argument("--checkpoint_every_n", type=int, default=250)
    parser.add_argument("--step_seconds", type=float, default=150.0,
                        help="wall time per trainer when comparing step times")
    parser.add_argument("--work_dir", help="keep everything here (default: temporary)")
    parser.add_argument("--skip_step_comparison", action="store_true")
    parser.add_argument("--step_comparison_only", action="store_true",
                        help="only time our steps against Model Garden's (about 6 minutes)")
    parser.add_argument("--config_override", action="append", default=[],
                        help="extra overrides, e.g. a longer schedule")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work_dir or tmp)
        records = make_records(work, {"train": args.train_images,
                                      "heldout": args.eval_images}, seed=11)
        if not args.step_comparison_only:
            convergence(work, records, args)
        if not args.skip_step_comparison:
            timings = compare_step_time(work, records, args.step_seconds)
            (ours, ours_cpu), (theirs, theirs_cpu) = timings["ours"], timings["theirs"]
            print(f"\nsteps/s, same model and data: this project {ours:.2f}, Model Garden's "
                  f"official.vision.train {theirs:.2f}; ratio {ours / theirs:.2f}")
            if ours_cpu and theirs_cpu:
                print(f"CPU time a step (not counting what the host steals): this project "
                      f"{ours_cpu * 1000:.0f} ms, Model Garden's {theirs_cpu * 1000:.0f} ms; "
                      f"ratio {theirs_cpu / ours_cpu:.2f} (above 1: ours is cheaper)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
