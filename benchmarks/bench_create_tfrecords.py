"""COCO -> TFRecords: this project against Model Garden's create_coco_tf_record, in one run.

    .venv/bin/python -m benchmarks.bench_create_tfrecords --images 500 --workers 2

Both convert the same synthetic COCO data (640x480, about 10 instances per image) at the
same number of processes into the same number of shards. Printed per tool: wall time of
the whole command (what a user waits for, start-up included), images/s, peak memory of its
process tree, and whether every mask equals pycocotools' annToMask. `--profile` also breaks
this project's per-image work down by stage, in one process.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.process_tree import REPO_ROOT, run_measured


def run_timed(command: list[str]) -> tuple[float, float]:
    """Runs `command`; returns (wall seconds, peak RSS in MB summed over its process tree)."""
    measured = run_measured(command)
    return measured.seconds, measured.peak_tree_mb


def check_masks(annotation_file: Path, pattern: str) -> tuple[int, int]:
    """Counts (instances checked, mismatches) of the records' masks against annToMask."""
    from pycocotools.coco import COCO

    from records.reader import iter_examples

    coco = COCO(str(annotation_file))
    checked = mismatched = 0
    for _, _, example in iter_examples(pattern):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[int(example.source_id)]))
        masks = example.decode_masks()
        if len(masks) != len(anns):
            mismatched += abs(len(masks) - len(anns))
        for ann, mask in zip(anns, masks):
            checked += 1
            mismatched += not np.array_equal(mask, coco.annToMask(ann))
    return checked, mismatched


def profile_stages(annotation_file: Path, images_dir: Path, limit: int = 100) -> None:
    """Where this project's per-image time goes, one process, no pool."""
    from data_prep.conversion.image_files import load_image
    from data_prep.conversion.rasterize import rasterize
    from data_prep.formats.coco import read_coco
    from records.example_codec import encode_mask_png

    annotations = read_coco(annotation_file, images_dir)
    totals = {"read+check image": 0.0, "rasterize masks": 0.0, "PNG-encode masks": 0.0}
    images = annotations.images[:limit]
    for item in images:
        t0 = time.perf_counter()
        image = load_image(item.image_path)
        t1 = time.perf_counter()
        masks = [rasterize(o.segmentation, image.height, image.width) for o in item.objects]
        t2 = time.perf_counter()
        for mask in masks:
            encode_mask_png(mask)
        t3 = time.perf_counter()
        totals["read+check image"] += t1 - t0
        totals["rasterize masks"] += t2 - t1
        totals["PNG-encode masks"] += t3 - t2
    print(f"per-image stages over {len(images)} images (ms per image, one process):")
    for stage, seconds in totals.items():
        print(f"  {stage:<18} {1000 * seconds / len(images):7.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--num_shards", type=int, default=8)
    parser.add_argument("--work_dir", help="keep data and outputs here (default: temporary)")
    parser.add_argument("--profile", action="store_true", help="per-stage breakdown of ours")
    args = parser.parse_args()
    python = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work_dir or tmp)
        data = work / "data"
        annotation_file = data / "annotations" / "instances_bench.json"
        if not annotation_file.exists():
            subprocess.run([python, "-m", "data_prep.synthetic", "--output_dir", str(data),
                            "--split", f"bench:{args.images}", "--size", "640x480",
                            "--objects", "8-12", "--seed", "1"], cwd=REPO_ROOT, check=True,
                           stdout=subprocess.DEVNULL)
        images_dir = data / "images" / "bench"
        ours_dir, theirs_dir = work / "ours", work / "model_garden"
        theirs_dir.mkdir(parents=True, exist_ok=True)
        ours_cmd = [python, "data_prep/create_tfrecords.py", "--format", "coco",
                    "--annotations", str(annotation_file), "--images_dir", str(images_dir),
                    "--output_dir", str(ours_dir), "--split", "bench", "--num_shards",
                    str(args.num_shards), "--workers", str(args.workers), "--no_progress"]
        theirs_cmd = [python, "-m", "official.vision.data.create_coco_tf_record",
                      f"--image_dir={images_dir}", f"--object_annotations_file={annotation_file}",
                      f"--output_file_prefix={theirs_dir / 'bench'}",
                      f"--num_shards={args.num_shards}", "--include_masks=True",
                      f"--num_processes={args.workers}"]
        startup, _ = run_timed([python, "-c", "import tensorflow, official.vision.data"])
        results = {}
        for name, command in (("this project", ours_cmd), ("Model Garden", theirs_cmd)):
            results[name] = run_timed(command)
        instances = sum(1 for _ in __import__("json").load(open(annotation_file))["annotations"])
        print(f"\n{args.images} images of 640x480, {instances} instances, "
              f"{args.workers} processes, {args.num_shards} shards")
        print(f"{'tool':<14} {'wall s':>7} {'images/s':>9} {'peak MB':>8}  masks vs annToMask")
        for name, pattern in (("this project", str(ours_dir / "bench-*.tfrecord")),
                              ("Model Garden", str(theirs_dir / "bench-*"))):
            seconds, peak = results[name]
            checked, mismatched = check_masks(annotation_file, pattern)
            print(f"{name:<14} {seconds:7.2f} {args.images / seconds:9.1f} {peak:8.0f}  "
                  f"{checked - mismatched}/{checked} identical")
        ratio = results["Model Garden"][0] / results["this project"][0]
        print(f"\nthroughput ratio (this project / Model Garden): {ratio:.2f}x")
        theirs_convert = results["Model Garden"][0] - startup
        print(f"(TensorFlow + Model Garden import alone: {startup:.1f} s; Model Garden's "
              f"conversion without it: about {args.images / theirs_convert:.0f} images/s)")
        if args.profile:
            profile_stages(annotation_file, images_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
