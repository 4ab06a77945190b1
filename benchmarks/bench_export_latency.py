"""Serving latency of our export next to Model Garden's own, from the same checkpoint.

    .venv/bin/python -m benchmarks.bench_export_latency [--runs 10] [--sizes 512,1024]

1. builds the shipped CPU config's model (pipelines/shapes_resnet18_fpn.config: ResNet-18
   FPN, small heads) and saves its freshly initialized weights as a checkpoint: latency does
   not depend on training, and an untrained model scores every class near 1/5, so NMS gets
   the most candidates (a pessimistic case for both exports);
2. exports it with exporter_main_v2.py (with and without --full_image_masks) and with
   `python -m official.vision.serving.export_saved_model` (the experiment dumped to YAML);
3. for each input size S (a random uint8 image [1, S, S, 3]) runs each SavedModel's
   serving_default --warmup times, then --runs times, the models taking turns call by
   call, and prints the medians.
The config's resizer (128 px) is overridden to S for each size (keep_aspect_ratio_resizer
for us, --input_image_size=S,S for Model Garden), so both models really run at S x S.
Both exports must return the same scores (checked), so the comparison is like for like.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO_ROOT = Path(__file__).resolve().parents[1]

CONFIG = REPO_ROOT / "pipelines/shapes_resnet18_fpn.config"


def resizer_override(size: int) -> list[str]:
    return [f"model {{ faster_rcnn {{ image_resizer {{ keep_aspect_ratio_resizer {{ "
            f"min_dimension: {size} max_dimension: {size} }} }} }} }}"]


def run(*command: str) -> float:
    """Runs a command; returns its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run(list(command), cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)
    return time.perf_counter() - start


def prepare(work: Path, overrides: list[str]) -> tuple[Path, Path, Path]:
    """Writes the effective pipeline config, a checkpoint of the model and the Model Garden
    experiment YAML; returns their paths."""
    import tensorflow as tf
    import yaml

    from models.builders.experiment_builder import load_and_build
    from models.modeling.restore import build_model
    from pipelines.config_util import save_pipeline_config

    built = load_and_build(CONFIG, overrides)
    config = save_pipeline_config(built.pipeline, work / "pipeline.config")
    model = build_model(built)
    checkpoint = tf.train.Checkpoint(model=model).write(str(work / "model/ckpt-1"))
    experiment = work / "experiment.yaml"
    experiment.write_text(yaml.safe_dump(built.experiment.as_dict()))
    return config, Path(checkpoint), experiment


def export_all(work: Path, size: int) -> dict[str, tuple[Path, float]]:
    """{name: (saved_model dir, export seconds)} for ours (+/- image masks) and Model Garden,
    both running the model at size x size."""
    config, checkpoint, experiment = prepare(work, resizer_override(size))
    model_size = size
    exports = {}
    for name, flag in (("ours", "--full_image_masks"), ("ours_box_masks", "--nofull_image_masks")):
        seconds = run(sys.executable, "exporter_main_v2.py", f"--pipeline_config_path={config}",
                      f"--trained_checkpoint_dir={checkpoint}",
                      f"--output_directory={work / name}", flag)
        exports[name] = (work / name / "saved_model", seconds)
    seconds = run(sys.executable, "-m", "official.vision.serving.export_saved_model",
                  "--experiment=maskrcnn_resnetfpn_coco", f"--config_file={experiment}",
                  f"--checkpoint_path={checkpoint}", f"--export_dir={work / 'model_garden'}",
                  "--batch_size=1", f"--input_image_size={model_size},{model_size}",
                  "--input_type=image_tensor")
    exports["model_garden"] = (work / "model_garden/saved_model", seconds)
    return exports


def interleaved_latency(saved_models: dict[str, Path], image, warmup: int, runs: int
                        ) -> tuple[dict[str, list[float]], dict[str, dict]]:
    """Seconds of each serving_default call on `image`, and each model's outputs.

    The models take turns call by call (in rotating order), so a busy moment of a shared
    machine slows all of them alike instead of whichever happened to run then.
    """
    import tensorflow as tf

    functions = {}
    for name, path in saved_models.items():
        function = tf.saved_model.load(str(path)).signatures["serving_default"]
        (input_name, _), = function.structured_input_signature[1].items()
        functions[name] = (function, input_name)
    outputs = {}
    for name, (function, input_name) in functions.items():
        for _ in range(warmup):
            outputs[name] = {k: v.numpy() for k, v in function(**{input_name: image}).items()}
    times: dict[str, list[float]] = {name: [] for name in functions}
    names = list(functions)
    for run_index in range(runs):
        for name in names[run_index % len(names):] + names[:run_index % len(names)]:
            function, input_name = functions[name]
            start = time.perf_counter()
            _ = [v.numpy() for v in function(**{input_name: image}).values()]
            times[name].append(time.perf_counter() - start)
    return times, outputs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="512,1024", help="input sizes (square images)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    import numpy as np
    import tensorflow as tf

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_export_") as scratch:
        for size in (int(s) for s in args.sizes.split(",")):
            work = Path(scratch) / str(size)
            work.mkdir()
            exports = export_all(work, size)
            image = tf.constant(np.random.default_rng(0).integers(
                0, 256, (1, size, size, 3), dtype=np.uint8))
            times, outputs = interleaved_latency({n: e[0] for n, e in exports.items()}, image,
                                                 args.warmup, args.runs)
            ours, garden = outputs["ours"], outputs["model_garden"]
            count = int(garden["num_detections"][0])
            same = np.allclose(ours["detection_scores"][0, :count],
                               garden["detection_scores"][0, :count], atol=1e-4)
            rows.append((size, {n: statistics.median(t) for n, t in times.items()},
                         {n: e[1] for n, e in exports.items()}, same, count))
    print(f"\nlatency, batch 1, median of {args.runs} runs after {args.warmup} warm-up calls "
          f"({os.cpu_count()} CPU cores)")
    print(f"{'input':>10} {'model runs at':>14} {'ours':>8} {'ours, box masks only':>21} "
          f"{'Model Garden':>13} {'ratio':>6} {'ratio, box masks':>17} {'same scores':>12}")
    for size, seconds, _, same, count in rows:
        at = f"{size}x{size}"
        garden = seconds["model_garden"]
        print(f"{size:>4}x{size:<5} {at:>14} {seconds['ours'] * 1000:>6.0f}ms "
              f"{seconds['ours_box_masks'] * 1000:>19.0f}ms {garden * 1000:>11.0f}ms "
              f"{seconds['ours'] / garden:>6.2f} {seconds['ours_box_masks'] / garden:>17.2f} "
              f"{'yes' if same else 'NO':>8} ({count} det.)")
    print("ratio: ours / Model Garden; 'box masks only' gives the same outputs as Model "
          "Garden's export (ours adds detection_masks_image by default)")
    for size, _, export_seconds, _, _ in rows:
        print(f"export time at {size}: " + ", ".join(f"{n} {s:.0f}s"
                                                     for n, s in export_seconds.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
