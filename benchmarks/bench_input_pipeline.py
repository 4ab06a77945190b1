r"""The training input pipeline alone at 1024 px: can a host feed a GPU?

    .venv/bin/python -m benchmarks.bench_input_pipeline [--images 160] [--batches 40]

Reads synthetic records of 1024x768 JPEGs with 8-12 instance masks each and times, per
configuration, what `model_main_tf2.py` feeds the model: read, decode, augment, parse (resize
to 1024, anchors, RPN targets, mask crops) and batch (2 images), after 5 warm-up batches, on
one core (tf.data's private thread pool of 1) and on all of this machine's cores:

  ours, tiny-VOC set   our parser with pipelines/tiny_voc_resnet101_fpn.config's
                       augmentations (flip, crop, blur, contrast, brightness, affine), masks
                       warped with the image
  ours, flip + scale   our parser with Model Garden's augmentations (flip, scale jitter
                       0.8-1.25): the same work as the row below
  Model Garden         Model Garden's own Mask R-CNN parser, flip and scale jitter 0.8-1.25

and prints images/s per core, what a 16-core host would deliver at that rate, and what one
GPU consumes (NVIDIA's TF2 Mask R-CNN: about 14-28 images/s per A100).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.training_runs import REPO_ROOT  # noqa: E402

TINY_VOC = REPO_ROOT / "pipelines/tiny_voc_resnet101_fpn.config"
A100_IMAGES_PER_SECOND = (14, 28)
SIZE = 1024
BATCH = 2


def make_records(work: Path, images: int) -> Path:
    records = work / "records"
    subprocess.run([sys.executable, "-m", "data_prep.synthetic", "--output_dir",
                    str(work / "shapes"), "--split", f"train:{images}", "--size", "1024x768",
                    "--objects", "8-12", "--seed", "2"], cwd=REPO_ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "data_prep/create_tfrecords.py", "--format", "coco",
                    "--annotations", str(work / "shapes/annotations/instances_train.json"),
                    "--images_dir", str(work / "shapes/images/train"), "--output_dir",
                    str(records), "--num_shards", "4", "--no_progress", "--no_tfds_metadata"],
                   cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL)
    return records


def ours(records: Path, tiny_voc_augmentation: bool):
    """Our training dataset from the tiny-VOC config at 1024 px."""
    from models.builders.experiment_builder import build_pipeline
    from models.tasks.maskrcnn_task import MaskRCNNTask
    from pipelines.config_util import load_pipeline_config
    from pipelines.protos import preprocessor_pb2

    pipeline = load_pipeline_config(TINY_VOC, [
        f"model {{ faster_rcnn {{ num_classes: 4 image_resizer {{ keep_aspect_ratio_resizer "
        f"{{ min_dimension: {SIZE} max_dimension: {SIZE} }} }} }} }}",
        f"train_config {{ batch_size: {BATCH} }}",
        f'train_input_reader {{ label_map_path: "{records}/label_map.pbtxt" '
        f'tf_record_input_reader {{ input_path: "{records}/train-*.tfrecord" }} }}'])
    train = pipeline.train_config
    train.ClearField("fine_tune_checkpoint")
    if not tiny_voc_augmentation:
        train.ClearField("data_augmentation_options")
        train.data_augmentation_options.add().random_horizontal_flip.SetInParent()
        step = train.data_augmentation_options.add()
        step.random_scale_crop_and_pad_to_square.CopyFrom(
            preprocessor_pb2.RandomScaleCropAndPadToSquare(scale_min=0.8, scale_max=1.25))
    built = build_pipeline(pipeline)
    return MaskRCNNTask(built).build_inputs(built.task.train_data)


def model_gardens(records: Path):
    """Model Garden's own Mask R-CNN input pipeline on the same records."""
    from official.core import exp_factory
    from official.vision.tasks import maskrcnn

    config = exp_factory.get_exp_config("maskrcnn_resnetfpn_coco")
    task_config = config.task
    task_config.init_checkpoint = ""
    task_config.model.num_classes = 5
    task_config.model.input_size = [SIZE, SIZE, 3]
    data = task_config.train_data
    data.input_path = str(records / "train-*.tfrecord")
    data.global_batch_size = BATCH
    data.dtype = "float32"
    data.parser.aug_rand_hflip = True
    data.parser.aug_scale_min, data.parser.aug_scale_max = 0.8, 1.25
    return maskrcnn.MaskRCNNTask(task_config).build_inputs(data)


def images_per_second(dataset, threads: int, batches: int) -> float:
    import tensorflow as tf

    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
    iterator = iter(dataset.with_options(options))
    for _ in range(5):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * BATCH / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=160)
    parser.add_argument("--batches", type=int, default=40, help="timed batches per run")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        records = make_records(Path(tmp), args.images)
        builders = {"ours, tiny-VOC set": lambda: ours(records, True),
                    "ours, flip + scale": lambda: ours(records, False),
                    "Model Garden": lambda: model_gardens(records)}
        rates = {name: (images_per_second(build(), 1, args.batches),
                        images_per_second(build(), cores, args.batches))
                 for name, build in builders.items()}
    low, high = A100_IMAGES_PER_SECOND
    print(f"\n{'pipeline':<20} {'1 core':>8} {f'{cores} cores':>9} {'16 cores*':>10}  "
          f"(images/s at {SIZE} px, batches of {BATCH})")
    for name, (one, all_cores) in rates.items():
        print(f"{name:<20} {one:>8.2f} {all_cores:>9.2f} {16 * one:>10.1f}")
    print(f"* 16 x the one-core rate. One A100 consumes about {low}-{high} images/s "
          "(NVIDIA's TF2 Mask R-CNN).")
    ours_rate, theirs_rate = rates["ours, flip + scale"][0], rates["Model Garden"][0]
    print(f"ours against Model Garden's parser, same augmentations, one core: "
          f"{ours_rate / theirs_rate:.2f} (target >= 1.00: "
          f"{'met' if ours_rate >= theirs_rate else 'not met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
