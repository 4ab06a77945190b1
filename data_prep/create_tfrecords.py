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
import dataclasses
import importlib
import sys
from pathlib import Path
from types import ModuleType

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_prep.annotations import AnnotationFileError, AnnotationSet, Problem  # noqa: E402
from data_prep import splits  # noqa: E402
from data_prep.convert import (ConversionError, ConvertOptions, default_workers,  # noqa: E402
                               write_split)
from data_prep.summary import SplitSummary  # noqa: E402
from records.label_map import (LabelMap, LabelMapError, read_label_map,  # noqa: E402
                               write_label_map)
from records.tfds_metadata import remove_tfds_metadata, write_tfds_metadata  # noqa: E402

LABEL_MAP_NAME = "label_map.pbtxt"


# --format name -> module with add_arguments(parser) (its own flags) and
# read_from_args(args) -> AnnotationSet. A reader knows nothing of records or training.
FORMAT_MODULES = {
    "coco": "data_prep.coco",
    "via": "data_prep.via",
    "openimages": "data_prep.openimages",
    "voc": "data_prep.voc",
    "tfds": "data_prep.tfds_source",
}


def format_readers() -> dict[str, ModuleType]:
    """The format modules present in this checkout."""
    readers = {}
    for name, module_name in FORMAT_MODULES.items():
        try:
            readers[name] = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
    return readers


class UsageError(ValueError):
    """The command line is incomplete or inconsistent."""


def build_parser(readers: dict[str, ModuleType]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", required=True, choices=sorted(readers),
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
    runner_group.add_argument("--runner", choices=("local", "beam"), default="local",
                              help="local: a process pool; beam: an Apache Beam pipeline "
                              "(DirectRunner, or Dataflow/Flink/Spark via --beam_options)")
    runner_group.add_argument("--beam_options", default="",
                              help="Beam pipeline options, e.g. '--runner=FlinkRunner "
                              "--flink_master=host:8081'")
    parser.add_argument("--no_tfds_metadata", action="store_true",
                        help="do not write the TensorFlow Datasets metadata beside the shards")
    for name, module in readers.items():
        module.add_arguments(parser.add_argument_group(f"--format {name}"))
    return parser


def resolve_label_map(annotations: AnnotationSet, output_dir: Path,
                      label_map_path: str | None) -> LabelMap:
    """The label map to write with: given, or derived from the data and checked against
    one already in the output directory (so splits converted separately share ids)."""
    if label_map_path:
        return read_label_map(label_map_path)
    derived = LabelMap.from_names(annotations.class_names, annotations.display_names)
    if annotations.class_relations:
        derived = with_relations(derived, annotations.class_relations)
    existing_path = output_dir / LABEL_MAP_NAME
    if existing_path.exists():
        existing = read_label_map(existing_path)
        if existing != derived:
            raise LabelMapError(
                f"{existing_path} already exists with other classes or ids than "
                f"{annotations.source} gives ({existing.names} vs {derived.names}). Pass "
                f"--label_map {existing_path} to use its ids, or remove it.")
    return derived


def with_relations(label_map: LabelMap, relations: dict) -> LabelMap:
    """The label map with ancestor and descendant ids filled in from class names."""
    ids = {item.name: item.id for item in label_map}

    def to_ids(names) -> tuple[int, ...]:
        return tuple(sorted(ids[n] for n in names if n in ids))

    items = []
    for item in label_map:
        ancestors, descendants = relations.get(item.name, ((), ()))
        items.append(dataclasses.replace(item, ancestor_ids=to_ids(ancestors),
                                         descendant_ids=to_ids(descendants)))
    return LabelMap(items, source=label_map.source)


def unknown_class_problems(annotations: AnnotationSet, label_map: LabelMap) -> list[Problem]:
    """Drops objects whose class the label map lacks, returning one error for each."""
    problems = []
    for image in annotations.images:
        kept = []
        for obj in image.objects:
            if label_map.has_name(obj.class_name):
                kept.append(obj)
            else:
                problems.append(Problem(
                    "unknown_class", f"class {obj.class_name!r} is not in the label map "
                    f"{label_map.source}", annotations.source,
                    f"annotation {obj.annotation_id} ({image.file_name!r})"))
        image.objects = kept
    return problems


def plan_splits(images: list, args: argparse.Namespace) -> tuple[dict, dict]:
    """Split name -> images to write, and split name -> balancing notes for its summary."""
    notes: dict[str, dict] = {args.split: {}}
    if args.val_fraction:
        if args.val_split == args.split:
            raise UsageError(f"--val_split must differ from --split ({args.split!r})")
        train, val = splits.split_train_val(images, args.val_fraction, args.seed)
        planned = {args.split: train, args.val_split: val}
        notes[args.val_split] = {}
    else:
        planned = {args.split: list(images)}
    if args.max_images_per_class:
        planned[args.split], dropped = splits.cap_images_per_class(
            planned[args.split], args.max_images_per_class, args.seed)
        notes[args.split]["images_dropped_by_max_images_per_class"] = dropped
    if args.min_images_per_class:
        planned[args.split], repeated = splits.repeat_rare_classes(
            planned[args.split], args.min_images_per_class)
        notes[args.split]["images_repeated_by_min_images_per_class"] = repeated
    return planned, notes


def _split_writer(runner: str):
    if runner == "beam":
        try:
            from data_prep.beam_runner import write_split as write_split_beam
        except ModuleNotFoundError as err:  # the message says where Beam lives
            raise UsageError(str(err)) from None
        return write_split_beam
    return write_split


def run(args: argparse.Namespace, readers: dict[str, ModuleType]) -> list[SplitSummary]:
    """Reads, checks, converts every split, then commits all of them together."""
    output_dir = Path(args.output_dir)
    if args.num_shards < 1:
        raise UsageError(f"--num_shards must be at least 1, got {args.num_shards}")
    annotations = readers[args.format].read_from_args(args)
    label_map = resolve_label_map(annotations, output_dir, args.label_map)
    problems = annotations.problems + unknown_class_problems(annotations, label_map)
    errors = [p for p in problems if p.is_error]
    if errors and not args.skip_errors:
        raise ConversionError(errors)
    options = ConvertOptions(skip_errors=args.skip_errors,
                             drop_empty_images=args.drop_empty_images)
    planned, notes = plan_splits(annotations.images, args)
    write = _split_writer(args.runner)
    summaries, pending = [], []
    try:
        for split, images in planned.items():
            summary = SplitSummary(split=split, format=args.format, source=annotations.source,
                                   class_names=label_map.names, notes=notes[split])
            if split == args.split:  # reading problems are counted once, in the main split
                summary.add_problems(problems)
            pending.append(write(images, label_map, str(output_dir), split, args.num_shards,
                                 max(1, args.workers), options, summary,
                                 progress=not args.no_progress, **_runner_kwargs(args)))
            summaries.append(summary)
    except BaseException:
        for writer in pending:
            writer.abort()
        raise
    for summary, writer in zip(summaries, pending):
        summary.shards = [str(p) for p in writer.commit()]
        summary.removed_stale_shards = [str(p) for p in writer.removed_stale]
        summary.write(output_dir)
    write_label_map(label_map, output_dir / LABEL_MAP_NAME)
    if args.no_tfds_metadata:  # an earlier run's metadata would describe other shards
        for path in remove_tfds_metadata(output_dir):
            print(f"removed stale TFDS metadata {path}")
    else:
        write_tfds_metadata(output_dir, label_map)
    return summaries


def _runner_kwargs(args: argparse.Namespace) -> dict:
    return {"beam_options": args.beam_options} if args.runner == "beam" else {}


def main(argv: list[str] | None = None) -> int:
    readers = format_readers()
    parser = build_parser(readers)
    args = parser.parse_args(argv)
    try:
        summaries = run(args, readers)
    except UsageError as err:
        parser.error(str(err))
    except (ConversionError, AnnotationFileError, LabelMapError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for summary in summaries:
        print(summary.format_text())
        print(f"  summary: {Path(args.output_dir) / (summary.split + '.summary.json')}")
    print(f"label map: {Path(args.output_dir) / LABEL_MAP_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
