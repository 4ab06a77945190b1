"""Statistics of a set of records, gathered in one pass: instances and images per class,
instances per image, image and object sizes, mask coverage; as a dict (--json) or as text.
records.inspect prints them and records/dataset_plots.py draws them. No TensorFlow."""
from __future__ import annotations

from array import array
from collections import Counter

import cv2
import numpy as np

from records.example_codec import ImageExample
from records.label_map import LabelMap
from records.reader import RecordError

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
        items = [label_map.item_for_text(text) for text in example.texts]
        return [t if item is None else item.id for t, item in zip(example.texts, items)]
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
