"""Input-pipeline speed of our records read through TFDS, next to Model Garden's decoder.

    .venv/bin/python -m benchmarks.bench_tfds_input --images 500 --size 640x480 --objects 8-12

1. writes the synthetic data set and converts it (create_tfrecords.py, which also writes the
   TFDS metadata; timed, with the metadata write timed on its own),
2. runs `tfds.benchmark` on `tfds.builder_from_directory(records).as_dataset("train")`
   (images and instance masks decoded by tfds),
3. runs it on `tf.data.TFRecordDataset(shards).map(TfExampleDecoder(include_mask=True).decode)`,
   the reference Model Garden's Mask R-CNN input uses, over the same files.
Both pipelines decode in parallel (AUTOTUNE) and prefetch; each is run --repeats times after
the files were read once, and every run's examples/s is printed.
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

REPO_ROOT = Path(__file__).resolve().parents[1]

from records.tfds_metadata import write_tfds_metadata  # (no TensorFlow)
from records.tfrecord_io import shard_glob


def run(*command: str) -> float:
    """Runs a command of this repository; returns its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, *command], cwd=REPO_ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def prepare(work_dir: Path, images: int, size: str, objects: str, shards: int) -> Path:
    shapes, records = work_dir / "shapes", work_dir / "records"
    if (records / "dataset_info.json").exists():
        print(f"reusing {records}")
        return records
    seconds = run("-m", "data_prep.synthetic", "--output_dir", str(shapes), "--split",
                  f"train:{images}", "--size", size, "--objects", objects)
    print(f"synthetic data: {images} images {size}, {objects} objects each: {seconds:.1f} s")
    seconds = run("data_prep/create_tfrecords.py", "--format", "coco", "--annotations",
                  str(shapes / "annotations/instances_train.json"), "--images_dir",
                  str(shapes / "images/train"), "--output_dir", str(records), "--split",
                  "train", "--num_shards", str(shards), "--no_progress")
    print(f"conversion with TFDS metadata (create_tfrecords.py): {seconds:.1f} s")
    return records


def time_metadata(records: Path) -> None:
    start = time.perf_counter()
    result = write_tfds_metadata(records)
    seconds = time.perf_counter() - start
    examples = sum(split.num_examples for split in result.splits)
    print(f"write_tfds_metadata alone: {seconds * 1000:.1f} ms for {examples} records "
          f"(TensorFlow imported: {'tensorflow' in sys.modules})")


def benchmark(name: str, make_dataset, repeats: int) -> list[float]:
    import tensorflow_datasets as tfds

    rates = []
    for repeat in range(repeats):
        result = tfds.benchmark(make_dataset(), batch_size=1)
        rates.append(float(result.stats.loc["first+lasts", "avg"]))
        print(f"{name} run {repeat + 1}: {rates[-1]:.1f} examples/s (steady state "
              f"{float(result.stats.loc['lasts', 'avg']):.1f})")
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work_dir", help="where data and records go (default: a new "
                        "temporary directory); existing records there are reused")
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT")
    parser.add_argument("--objects", default="8-12", help="objects per image, MIN-MAX")
    parser.add_argument("--num_shards", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    work_dir = Path(args.work_dir or tempfile.mkdtemp(prefix="bench_tfds_"))
    records = prepare(work_dir, args.images, args.size, args.objects, args.num_shards)
    time_metadata(records)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    start = time.perf_counter()
    import tensorflow as tf
    import tensorflow_datasets as tfds
    from official.vision.dataloaders.tf_example_decoder import TfExampleDecoder
    print(f"importing tensorflow, tensorflow_datasets, Model Garden: "
          f"{time.perf_counter() - start:.1f} s")
    tfds.disable_progress_bar()

    for path in tf.io.gfile.glob(shard_glob(records, "train")):  # warm the page cache
        Path(path).read_bytes()
    builder = tfds.builder_from_directory(str(records))

    def tfds_dataset():
        return builder.as_dataset(split="train", shuffle_files=False).prefetch(tf.data.AUTOTUNE)

    decoder = TfExampleDecoder(include_mask=True)

    def model_garden_dataset():
        files = sorted(tf.io.gfile.glob(shard_glob(records, "train")))
        return (tf.data.TFRecordDataset(files)
                .map(decoder.decode, num_parallel_calls=tf.data.AUTOTUNE)
                .prefetch(tf.data.AUTOTUNE))

    results = {"tfds builder_from_directory": benchmark("tfds", tfds_dataset, args.repeats),
               "Model Garden TfExampleDecoder": benchmark("Model Garden",
                                                          model_garden_dataset, args.repeats)}
    print(f"\n{builder.info.splits['train'].num_examples} examples, {args.size}, "
          f"{args.objects} objects, {os.cpu_count()} CPU(s), load average "
          f"{os.getloadavg()[0]:.1f}; examples/s including the first:")
    for name, rates in results.items():
        print(f"  {name:32s} median {statistics.median(rates):7.1f}   runs "
              + ", ".join(f"{r:.1f}" for r in rates))
    return 0


if __name__ == "__main__":
    sys.exit(main())
