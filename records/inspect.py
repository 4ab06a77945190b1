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
from array import array
from collections import Counter
from itertools import islice
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from core.cli import run_main
from records.example_codec import ImageExample, decode_mask_png
from records.label_map import LabelMap, read_label_map
from records.reader import RecordError, iter_examples
from records.tfrecord_io import SHARD_PATTERN, CorruptRecordError, expand_paths

LABEL_MAP_NAME = "label_map.pbtxt"
MAX_HISTOGRAM_ROWS = 15
MAX_SIZES_LISTED = 20
BAR_WIDTH = 40
NO_LABEL_MAP = f"none ({LABEL_MAP_NAME} is not beside the first file; pass --label_map)"


class Statistics:
    """Counts gathered in one pass over the records; masks are decoded, images are not."""

    def __init__(self, files: list[str], label_map: LabelMap | None):
        self.files, self.label_map = files, label_map
        self.images = self.instances = self.crowd = self.empty_masks = 0
        self.instances_without_masks = 0
        self.instances_per_class: Counter = Counter()
        self.images_per_class: Counter = Counter()
        self.crowd_per_class: Counter = Counter()
        self.text_of_class: dict = {}  # class key -> first class/text seen for it
        self.instances_per_image = array("l")
        self.sizes: Counter = Counter()  # (width, height) -> images
        self.instance_coverage = array("d")
        self.image_coverage = array("d")
        self.box_widths, self.box_heights, self.areas = array("d"), array("d"), array("d")
        self.seconds = 0.0

    def add(self, example: ImageExample, where: str) -> None:
        self.images += 1
        count = example.num_instances
        self.instances += count
        self.instances_per_image.append(count)
        self.sizes[(example.width, example.height)] += 1
        classes = class_keys(example, self.label_map)
        crowd = example.is_crowd if example.is_crowd.size == count else np.zeros(count)
        for i, key in enumerate(classes):
            self.instances_per_class[key] += 1
            self.crowd_per_class[key] += int(crowd[i])
            if example.texts and key not in self.text_of_class:
                self.text_of_class[key] = example.texts[i]
        self.images_per_class.update(set(classes))
        self.crowd += int(np.sum(crowd))
        heights, widths = (np.diff(example.boxes.reshape(-1, 2, 2), axis=1).reshape(-1, 2)
                           * [example.height, example.width]).T
        self.box_heights.extend(heights.tolist())
        self.box_widths.extend(widths.tolist())
        self.areas.extend((example.areas if example.areas.size == count
                           else widths * heights).tolist())
        self._add_coverage(example, count, where)

    def _add_coverage(self, example: ImageExample, count: int, where: str) -> None:
        self.instances_without_masks += max(count - len(example.masks_png), 0)
        if not example.masks_png:
            return
        pixels = example.height * example.width
        union = None
        for png in example.masks_png:
            mask = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)
            if mask is None or mask.shape != (example.height, example.width):
                raise RecordError(f"{where}: a mask does not decode to the image size")
            covered = cv2.countNonZero(mask)
            self.instance_coverage.append(covered / pixels)
            self.empty_masks += covered == 0
            union = mask if union is None else cv2.bitwise_or(union, mask)
        self.image_coverage.append(cv2.countNonZero(union) / pixels)

    def class_rows(self) -> list[dict]:
        """One row per class of the label map (even unseen ones) and per unknown id."""
        keys = set(self.instances_per_class)
        if self.label_map is not None:
            keys |= {item.id for item in self.label_map}
        rows = []
        for key in sorted(keys, key=lambda k: (isinstance(k, str), str(k).zfill(12))):
            item = self.label_map.get(key) if self.label_map and isinstance(key, int) else None
            rows.append({
                "id": key if isinstance(key, int) else None,
                "name": item.name if item else self.text_of_class.get(key, ""),
                "display_name": item.display_name if item else "",
                "in_label_map": item is not None,
                "instances": self.instances_per_class[key],
                "images": self.images_per_class[key],
                "crowd": self.crowd_per_class[key]})
        return rows

    def to_dict(self) -> dict:
        return {
            "files": self.files,
            "label_map": self.label_map.source if self.label_map else None,
            "images": self.images,
            "instances": self.instances,
            "crowd_instances": self.crowd,
            "images_without_instances": sum(1 for n in self.instances_per_image if n == 0),
            "classes": self.class_rows(),
            "instances_per_image": {**summarize(self.instances_per_image),
                                    "histogram": histogram(self.instances_per_image)},
            "image_sizes": {
                "distinct": len(self.sizes),
                "most_common": {f"{w}x{h}": n for (w, h), n in
                                self.sizes.most_common(MAX_SIZES_LISTED)},
                "width": summarize([w for (w, _), n in self.sizes.items() for _ in range(n)]),
                "height": summarize([h for (_, h), n in self.sizes.items() for _ in range(n)])},
            "object_sizes": object_sizes(self.areas),
            "mask_coverage": {
                "masks": len(self.instance_coverage),
                "empty_masks": self.empty_masks,
                "instances_without_masks": self.instances_without_masks,
                "per_instance": summarize(self.instance_coverage),
                "per_image": summarize(self.image_coverage),
                "images_with_masks": len(self.image_coverage)},
            "seconds": round(self.seconds, 3),
        }


def object_sizes(areas) -> dict:
    """Instances by COCO's size ranges (area < 32², < 96², larger) and sqrt(area) in pixels."""
    data = np.asarray(areas, np.float64)
    return {"small": int(np.sum(data < 32 ** 2)),
            "medium": int(np.sum((data >= 32 ** 2) & (data < 96 ** 2))),
            "large": int(np.sum(data >= 96 ** 2)), "sqrt_area": summarize(np.sqrt(data))}


def class_keys(example: ImageExample, label_map: LabelMap | None) -> list:
    """Label ids; for records carrying names only, the label map's id or else the name."""
    if example.labels.size:
        return [int(label) for label in example.labels]
    if label_map is not None:
        return [label_map.id_of(t) if label_map.has_name(t) else t for t in example.texts]
    return list(example.texts)


def summarize(values) -> dict:
    """min/mean/median/max; whole numbers stay integers in the JSON."""
    if not len(values):
        return {"min": None, "mean": None, "median": None, "max": None}
    data = np.asarray(values, np.float64)
    return {"min": _number(data.min()), "mean": round(float(data.mean()), 4),
            "median": _number(np.median(data)), "max": _number(data.max())}


def _number(value: float) -> int | float:
    value = float(value)
    return int(value) if value.is_integer() else round(value, 6)


def histogram(counts) -> dict[str, int]:
    """Images per instance count: one row per count, or about ten equal bins when wide."""
    if not len(counts):
        return {}
    data = np.asarray(counts, np.int64)
    low, high = int(data.min()), int(data.max())
    if high - low < MAX_HISTOGRAM_ROWS:
        return {str(n): int(np.sum(data == n)) for n in range(low, high + 1)}
    width = -(-(high - low + 1) // 10)
    return {f"{start}-{start + width - 1}": int(np.sum((data >= start) & (data < start + width)))
            for start in range(low, high + 1, width)}


def format_text(stats: dict) -> str:
    lines = [f"{len(stats['files'])} file(s), {stats['images']} images, {stats['instances']} "
             f"instances ({stats['crowd_instances']} crowd), "
             f"{stats['images_without_instances']} images without instances",
             f"label map: {stats['label_map'] or NO_LABEL_MAP}", ""]
    names = [_class_name(row) for row in stats["classes"]]
    width = max([len(n) for n in names] + [5])
    lines.append(f"{'class':<{width}}  {'id':>4}  instances  images  crowd")
    for name, row in zip(names, stats["classes"]):
        shown_id = "" if row["id"] is None else row["id"]
        lines.append(f"{name:<{width}}  {shown_id:>4}  {row['instances']:>9}  {row['images']:>6}"
                     f"  {row['crowd']:>5}")
    per_image = stats["instances_per_image"]
    lines += ["", "instances per image: " + _summary_text(per_image)]
    most = max(per_image["histogram"].values(), default=0)
    for label, count in per_image["histogram"].items():
        bar = "#" * (round(BAR_WIDTH * count / most) if most else 0)
        lines.append(f"  {label:>7} | {bar} {count}")
    sizes = stats["image_sizes"]
    if sizes["distinct"] <= 5:
        listed = ", ".join(f"{s} ({n} images)" for s, n in sizes["most_common"].items())
        lines += ["", f"image sizes (width x height): {listed or 'none'}"]
    else:
        common = ", ".join(f"{s} ({n})" for s, n in list(sizes["most_common"].items())[:5])
        lines += ["", f"image sizes: {sizes['distinct']} distinct; most common {common}",
                  f"  width:  {_summary_text(sizes['width'])}",
                  f"  height: {_summary_text(sizes['height'])}"]
    objects = stats["object_sizes"]
    lines += ["", f"object sizes (COCO): {objects['small']} small, {objects['medium']} medium, "
              f"{objects['large']} large; sqrt(area) {_summary_text(objects['sqrt_area'], 1)}"]
    coverage = stats["mask_coverage"]
    lines += ["", "mask coverage (fraction of the image covered):",
              f"  per instance: {_summary_text(coverage['per_instance'], 4)} "
              f"({coverage['masks']} masks, {coverage['empty_masks']} empty)",
              f"  per image:    {_summary_text(coverage['per_image'], 4)} "
              f"(union of the masks of the {coverage['images_with_masks']} images with masks)"]
    if coverage["instances_without_masks"]:
        lines.append(f"  {coverage['instances_without_masks']} instances have no mask")
    lines += ["", f"read in {stats['seconds']:.2f} s"]
    return "\n".join(lines)


def _class_name(row: dict) -> str:
    name = row["name"] or ("(no name)" if row["id"] is not None else "")
    if row["display_name"] and row["display_name"] != row["name"]:
        name += f" ({row['display_name']})"
    if not row["in_label_map"]:
        name += "  ! not in the label map"
    return name


def _summary_text(summary: dict, digits: int = 2) -> str:
    if summary["min"] is None:
        return "n/a"
    fmt = (lambda v: f"{v:.{digits}f}" if isinstance(v, float) else str(v))
    return (f"min {fmt(summary['min'])}, mean {fmt(float(summary['mean']))}, "
            f"median {fmt(summary['median'])}, max {fmt(summary['max'])}")


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
