"""Converts annotated images into sharded TFRecords with PNG instance masks.

    python data_prep/create_tfrecords.py --format coco \\
        --annotations instances_train.json --images_dir images/ \\
        --output_dir records/ --split train --num_shards 8

writes records/train-0000i-of-00008.tfrecord, records/label_map.pbtxt and
records/train.summary.json. Input problems stop the run before anything is written (or are
skipped and counted with --skip_errors); shards appear only when the whole split succeeded.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

try:
    from core.cli import run_main
except ModuleNotFoundError as err:  # run as a script from a checkout that is not installed
    sys.exit(f"error: {err.name} is not importable: run `make venv` (or `pip install -e .` "
             "in the repository) and use that environment's python")
from core.errors import UsageError
from data_prep.conversion.dataset_writer import LABEL_MAP_NAME, RUNNERS, SplitPlan, write_dataset
from data_prep.conversion.image_record import ConvertOptions, default_workers
from data_prep.conversion.orientation import CONVENTIONS
from data_prep.formats.command_line import FORMATS, add_format_flags, read_annotations
from data_prep.safe_files import DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_PIXELS, FileLimits


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="create_tfrecords.py", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", required=True, choices=sorted(FORMATS),
                        help="annotation format of the input")
    parser.add_argument("--annotations", help="annotation file (COCO JSON, VIA JSON/CSV ...)")
    parser.add_argument("--images_dir", help="directory the annotations' file names are "
                        "relative to (default: the annotation file's directory)")
    parser.add_argument("--output_dir", required=True, help="where shards, label_map.pbtxt "
                        "and NAME.summary.json are written")
    parser.add_argument("--split", default="train", help="split name: the shard prefix "
                        "(default: train)")
    parser.add_argument("--num_shards", type=int, default=1,
                        help="number of shards per split (default: 1)")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="worker processes (default: all cores, here %(default)s)")
    parser.add_argument("--label_map", help="an existing label_map.pbtxt whose ids to use "
                        "(e.g. the train split's, so ids match across splits)")
    parser.add_argument("--drop_empty_images", action="store_true",
                        help="leave out images without annotations (kept by default, as "
                        "negatives)")
    parser.add_argument("--skip_errors", action="store_true",
                        help="skip and count bad images and annotations instead of stopping")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    files_group = parser.add_argument_group("image files")
    files_group.add_argument("--max_file_mb", type=int, default=DEFAULT_MAX_FILE_BYTES // 2**20,
                             help="largest image or mask file read, in MiB (default: "
                             "%(default)s)")
    files_group.add_argument("--max_image_pixels", type=int, default=DEFAULT_MAX_PIXELS,
                             help="largest image or mask decoded, width x height (default: "
                             "%(default)s, Pillow's own limit)")
    files_group.add_argument("--exif_orientation", choices=CONVENTIONS, default="stored",
                             help="what the annotations were drawn on for JPEGs with an EXIF "
                             "orientation: the stored pixels (default) or the image as "
                             "viewers show it turned (display); records keep the stored "
                             "pixels either way")
    split_group = parser.add_argument_group("validation split and class balance")
    split_group.add_argument("--val_fraction", type=float, default=0.0,
                             help="also write a validation split of this fraction of the "
                             "images, with every class in it where its images allow")
    split_group.add_argument("--val_split", default="val",
                             help="name of the validation split (default: val)")
    split_group.add_argument("--seed", type=int, default=0,
                             help="seed of the validation split and of balancing")
    split_group.add_argument("--max_images_per_class", type=int, default=0,
                             help="cap frequent classes at N training images (an image is "
                             "kept while any of its classes is under the cap)")
    split_group.add_argument("--min_images_per_class", type=int, default=0,
                             help="repeat training images of rarer classes until each class "
                             "has N images")
    runner_group = parser.add_argument_group("runner")
    runner_group.add_argument("--runner", choices=RUNNERS, default="local",
                              help="local: a process pool; beam: an Apache Beam pipeline "
                              "(DirectRunner, or Dataflow/Flink/Spark via --beam_options)")
    runner_group.add_argument("--beam_options", default="",
                              help="Beam pipeline options, e.g. '--runner=FlinkRunner "
                              "--flink_master=host:8081'")
    parser.add_argument("--no_tfds_metadata", action="store_true",
                        help="do not write the TensorFlow Datasets metadata beside the shards")
    add_format_flags(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for flag in ("workers", "max_file_mb", "max_image_pixels"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    annotations = read_annotations(args)
    summaries = write_dataset(
        annotations, args.output_dir, args.format,
        SplitPlan(args.split, args.val_fraction, args.val_split, args.seed,
                  args.max_images_per_class, args.min_images_per_class),
        num_shards=args.num_shards, workers=args.workers, label_map_path=args.label_map,
        options=ConvertOptions(skip_errors=args.skip_errors,
                               drop_empty_images=args.drop_empty_images,
                               limits=FileLimits(args.max_file_mb * 2**20,
                                                 args.max_image_pixels),
                               exif_orientation=args.exif_orientation),
        runner=args.runner, beam_options=args.beam_options,
        tfds_metadata=not args.no_tfds_metadata, progress=not args.no_progress)
    for summary in summaries:
        print(summary.format_text())
        print(f"  summary: {Path(args.output_dir) / (summary.split + '.summary.json')}")
    print(f"label map: {Path(args.output_dir) / LABEL_MAP_NAME}")
    return 0


def console_main() -> None:
    """The installed command (pyproject.toml [project.scripts])."""
    sys.exit(run_main(main))


if __name__ == "__main__":
    console_main()
