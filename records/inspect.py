"""Looks inside TFRecords: statistics, pictures of what the model will see, and a validator.

    python -m records.inspect 'records/train-*.tfrecord'             # statistics
    python -m records.inspect 'records/train-*.tfrecord' --json      # the same, as JSON
    python -m records.inspect 'records/train-*.tfrecord' --render 8 --out pictures/
    python -m records.inspect 'records/*.tfrecord' --check           # exits 1 on a fault
    python -m records.inspect 'records/train-*.tfrecord' --plots plots/  # the same as pictures

Statistics: instances and images per class (by label-map name), instances per image, image
sizes, object sizes (COCO's small / medium / large) and mask coverage. --plots writes them
as pictures (records/dataset_plots.py). --render writes PNGs with each instance's mask, box
and class name drawn, named <split>-<source_id>.png. --check validates every record and stops at the
first fault, naming the file, record index, source id and what is wrong. The label map is
label_map.pbtxt beside the first file unless --label_map is given. No TensorFlow is
imported, so this starts in a fraction of a second.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from itertools import islice
from pathlib import Path
from typing import Iterator

import numpy as np

from core.cli import run_main
from records.example_codec import ImageExample, decode_mask_png
from records.label_map import LabelMap, read_label_map
from records.reader import RecordError, iter_examples
from records.record_statistics import LABEL_MAP_NAME, Statistics, class_keys, format_text
from records.tfrecord_io import SHARD_PATTERN, CorruptRecordError, expand_paths


def find_label_map(path: str | None, files: list[str]) -> LabelMap | None:
    """--label_map, else label_map.pbtxt beside the first file when there is one."""
    if path:
        return read_label_map(path)
    beside = Path(files[0]).parent / LABEL_MAP_NAME
    return read_label_map(beside) if beside.is_file() else None


def _examples(files: list[str], max_records: int) -> Iterator[tuple[str, int, ImageExample]]:
    return islice(iter_examples(files), max_records or None)


def collect_statistics(files: list[str], label_map: LabelMap | None,
                       max_records: int = 0) -> Statistics:
    start = time.perf_counter()
    stats = Statistics(files, label_map)
    for path, index, example in _examples(files, max_records):
        stats.add(example, f"{path}: record {index}")
    stats.seconds = time.perf_counter() - start
    return stats


def caption(example: ImageExample, i: int, label_map: LabelMap | None, key) -> str:
    """The class's display name (or name), marked when crowd or unknown to the label map."""
    text = example.texts[i] if i < len(example.texts) else ""
    item = label_map.get(key) if label_map is not None and isinstance(key, int) else None
    if item is not None:
        text = item.label
    elif label_map is not None:
        text = f"{text or f'id {key}'} (not in label map)"
    elif not text:
        text = f"id {key}"
    crowd = example.is_crowd.size > i and example.is_crowd[i]
    return f"{text} (crowd)" if crowd else text


def picture_name(path: str, index: int, example: ImageExample, taken: set[str]) -> str:
    """<split>-<source_id>.png, with the record index added if that name is taken."""
    match = SHARD_PATTERN.match(Path(path).name)
    split = match["name"] if match else Path(path).stem
    ident = example.source_id or Path(example.filename).stem or str(index)
    name = re.sub(r"[^\w.-]+", "_", f"{split}-{ident}")
    if name in taken:
        name = f"{name}-record{index}"
    taken.add(name)
    return f"{name}.png"


def render_records(files: list[str], label_map: LabelMap | None, count: int, out_dir: Path,
                   upscale_to: int, seed: int | None, max_records: int = 0) -> list[Path]:
    """Draws `count` records (the first ones, or a random sample when seed is given)."""
    from PIL import Image

    from records.render import draw_enlarged

    records = _examples(files, max_records)
    chosen = list(islice(records, count)) if seed is None else _reservoir_sample(records, count,
                                                                                 seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, taken = [], set()
    for path, index, example in chosen:
        try:
            image = example.decode_image()
        except Exception as err:  # PIL raises OSError, SyntaxError, ValueError ...
            print(f"warning: {path}: record {index}: the image does not decode ({err}); "
                  "run --check", file=sys.stderr)
            continue
        try:
            masks = np.stack([decode_mask_png(png) for png in example.masks_png]
                             ) if example.masks_png else None
            if masks is not None and masks.shape[1:] != image.shape[:2]:
                raise ValueError("masks are not the size of the image")
        except ValueError as err:
            print(f"warning: {path}: record {index}: masks not drawn ({err}); run --check",
                  file=sys.stderr)
            masks = None
        boxes = example.boxes * [example.height, example.width, example.height, example.width]
        keys = class_keys(example, label_map)
        texts = [caption(example, i, label_map, key) for i, key in enumerate(keys)]
        target = out_dir / picture_name(path, index, example, taken)
        Image.fromarray(draw_enlarged(image, boxes, masks, texts, min_side=upscale_to)
                        ).save(target)
        written.append(target)
    return written


def _reservoir_sample(items, count: int, seed: int) -> list:
    """A uniform sample of `count` items in one pass, kept in record order."""
    rng = random.Random(seed)
    sample: list = []
    for seen, item in enumerate(items):
        if len(sample) < count:
            sample.append((seen, item))
        else:
            slot = rng.randrange(seen + 1)
            if slot < count:
                sample[slot] = (seen, item)
    return [item for _, item in sorted(sample, key=lambda pair: pair[0])]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m records.inspect", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("patterns", nargs="+", metavar="RECORDS",
                        help="TFRecord files or glob patterns (quote them), e.g. "
                        "'records/train-*.tfrecord'; comma-separated lists work too")
    parser.add_argument("--label_map", help="label_map.pbtxt giving the class names "
                        f"(default: {LABEL_MAP_NAME} beside the first file, if present)")
    parser.add_argument("--json", action="store_true", help="print the statistics as JSON")
    parser.add_argument("--max_records", type=int, default=0, metavar="N",
                        help="look at the first N records only (default: all)")
    check = parser.add_argument_group("validation")
    check.add_argument("--check", action="store_true",
                       help="validate every record; exit 1 at the first fault")
    check.add_argument("--allow_missing_masks", action="store_true",
                       help="accept records with boxes but no masks (box-only detection "
                       "records, e.g. the OD API's); Mask R-CNN needs masks")
    render = parser.add_argument_group("pictures")
    render.add_argument("--render", type=int, default=0, metavar="N",
                        help="write N PNGs with masks, boxes and class names drawn")
    render.add_argument("--out", type=Path, metavar="DIR", help="where --render writes")
    render.add_argument("--random", action="store_true",
                        help="render N records picked at random instead of the first N")
    render.add_argument("--seed", type=int, default=0, help="seed of --random (default: 0)")
    render.add_argument("--plots", type=Path, metavar="DIR", help="write the statistics as "
                        "pictures: classes, instances per image, object sizes")
    render.add_argument("--upscale_to", type=int, default=512, metavar="PIXELS",
                        help="enlarge smaller images by a whole factor until the shorter side "
                        "reaches PIXELS, so names stay legible (default: 512; 0: never)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.render and args.out is None:
        parser.error("--render needs --out DIR")
    if args.render < 0 or args.max_records < 0:
        parser.error("--render and --max_records take a count >= 0")
    files = expand_paths(args.patterns)
    label_map = find_label_map(args.label_map, files)
    try:
        if args.check and not run_check(files, label_map, args.allow_missing_masks,
                                        args.max_records):
            return 1
        if args.render:
            written = render_records(files, label_map, args.render, args.out,
                                     args.upscale_to, args.seed if args.random else None,
                                     args.max_records)
            print(f"wrote {len(written)} picture(s) to {args.out}")
        if args.json or args.plots or not (args.check or args.render):
            collected = collect_statistics(files, label_map, args.max_records)
            stats = collected.to_dict()
            print(json.dumps(stats, indent=2, ensure_ascii=False) if args.json
                  else format_text(stats))
            if args.plots:
                from records.dataset_plots import write_dataset_plots

                written = write_dataset_plots(args.plots, stats["classes"],
                                              collected.instances_per_image,
                                              collected.box_widths, collected.box_heights,
                                              collected.areas)
                print(f"wrote {len(written)} plot(s) to {args.plots}",
                      file=sys.stderr if args.json else sys.stdout)
    except (RecordError, CorruptRecordError) as err:
        raise RecordError(f"{err}\n(run with --check for a full validation)") from None
    return 0


def run_check(files: list[str], label_map: LabelMap | None, allow_missing_masks: bool = False,
              max_records: int = 0) -> bool:
    """Validates every record (records/record_checks.py), printing OK or the first FAULT."""
    from records.record_checks import RecordFault, check_records

    start = time.perf_counter()
    try:
        summary = check_records(files, label_map, allow_missing_masks, max_records)
    except RecordFault as fault:
        print(f"FAULT: {fault}", file=sys.stderr)
        return False
    print(f"OK: {summary.records} records, {summary.instances} instances checked "
          f"({time.perf_counter() - start:.2f} s)")
    if label_map is None:
        print(f"note: no label map ({LABEL_MAP_NAME} beside the first file, or --label_map): "
              "labels were only checked to be >= 1")
    if summary.empty_masks:
        print(f"note: {summary.empty_masks} masks are empty")
    if summary.records_without_masks:
        print(f"note: {summary.records_without_masks} records with instances have no masks")
    return True


def console_main() -> None:
    """The installed command (pyproject.toml [project.scripts])."""
    sys.exit(run_main(main))


if __name__ == "__main__":
    console_main()
