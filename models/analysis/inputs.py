"""What an analysis reads: ground truth, COCO results and the images, from either

(a) a COCO results file (`detections.json` of models.tools.infer) and COCO ground truth,
    images (optional) from a directory by the ground truth's file names; or
(b) a SavedModel run on the images of TFRecords, the ground truth written from the same
    records (models/evaluation/coco_groundtruth.py, what continuous evaluation scores).

Evaluated images: in (a) those of `images.json` beside the results when it is there (infer
writes it: the images it ran on) and else every image of the ground truth; in (b) every
record. Results on images or of classes the ground truth does not know are left out with
a warning.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from pycocotools.coco import COCO

from core.errors import UserError
from models.evaluation.coco_metrics import (
    coco_results,
    ground_truth_from_dict,
    load_ground_truth,
)

log = logging.getLogger(__name__)

ImageLoader = Callable[[Iterable[int]], dict[int, np.ndarray]]


class AnalysisError(UserError, ValueError):
    """The inputs of an analysis cannot be read or do not fit together."""


@dataclasses.dataclass
class AnalysisInputs:
    ground_truth: COCO
    results: list[dict]
    image_ids: list[int]
    load_images: ImageLoader  # image id -> uint8 RGB; ids it cannot load are left out
    source: str  # what was analysed, for the page
    supercategories: dict[int, str | None]
    computed: bool = False  # results and ground truth made here (b): the output keeps them


def _no_images(_: Iterable[int]) -> dict[int, np.ndarray]:
    return {}


def _read_results(path: Path) -> list[dict]:
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise AnalysisError(f"{path}: cannot be read as JSON ({err})") from None
    if not isinstance(results, list):
        raise AnalysisError(f"{path}: not COCO results (a JSON list of detections)")
    for i, result in enumerate(results):
        if not isinstance(result, dict) or not {"image_id", "category_id", "score",
                                                "bbox"} <= set(result):
            raise AnalysisError(f"{path}: entry {i} is not a COCO detection (needs image_id, "
                                "category_id, bbox and score)")
    return results


def _known(results: list[dict], ground_truth: COCO, image_ids: list[int], where: str
           ) -> list[dict]:
    """The results on evaluated images and known classes; the rest is reported."""
    images, classes = set(image_ids), set(ground_truth.getCatIds())
    kept = [r for r in results if r["image_id"] in images and r["category_id"] in classes]
    if len(kept) < len(results):
        log.warning("%s: %d of %d detections are on images not evaluated or of classes the "
                    "ground truth does not have, and are left out", where,
                    len(results) - len(kept), len(results))
    return kept


def from_results_file(detections: str | Path, annotations: str | Path,
                      images_dir: str | Path | None = None) -> AnalysisInputs:
    """Mode (a)."""
    detections = Path(detections)
    ground_truth = load_ground_truth(annotations)
    results = _read_results(detections)
    image_ids = sorted(ground_truth.getImgIds())
    listed = detections.parent / "images.json"
    if listed.is_file():
        try:
            ran_on = {int(entry["id"]) for entry in json.loads(listed.read_text())}
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise AnalysisError(f"{listed}: not models.tools.infer's image list ({err})"
                                ) from None
        image_ids = [i for i in image_ids if i in ran_on]
    if not image_ids:
        raise AnalysisError(f"none of the images of {detections} is in {annotations}")
    loader = _no_images
    if images_dir is not None:
        loader = _directory_loader(ground_truth, Path(images_dir))
    supercategories = {c["id"]: c.get("supercategory") or None
                       for c in ground_truth.dataset.get("categories", [])}
    return AnalysisInputs(ground_truth, _known(results, ground_truth, image_ids,
                                               str(detections)),
                          image_ids, loader, f"{detections} on {annotations}", supercategories)


def _directory_loader(ground_truth: COCO, images_dir: Path) -> ImageLoader:
    from models.inference.image_io import InferError, read_image

    if not images_dir.is_dir():
        raise AnalysisError(f"{images_dir} is not a directory (--images_dir)")

    def load(image_ids: Iterable[int]) -> dict[int, np.ndarray]:
        images = {}
        for image_id in image_ids:
            name = str(ground_truth.imgs[image_id].get("file_name", ""))
            for path in (images_dir / name, images_dir / os.path.basename(name)):
                if name and path.is_file():
                    try:
                        images[image_id] = read_image(path)
                    except InferError as err:
                        log.warning("%s", err)
                    break
            else:
                log.warning("image %s (%s) is not in %s: not drawn", image_id, name,
                            images_dir)
        return images
    return load


def from_saved_model(saved_model: str | Path, records: list[str], label_map_path: str | None,
                     progress: bool = True) -> AnalysisInputs:
    """Mode (b): every record's image through the SavedModel."""
    from tqdm import tqdm

    from models.evaluation.coco_groundtruth import coco_groundtruth
    from models.inference.image_io import find_label_map
    from models.serving.saved_model_client import Detector
    from records.reader import iter_examples
    from records.tfrecord_io import expand_paths

    saved_model = Path(saved_model)
    files = expand_paths(records)
    label_map = find_label_map(saved_model, label_map_path)
    beside = Path(files[0]).parent / "label_map.pbtxt"
    if label_map is None and beside.is_file():
        from records.label_map import read_label_map

        label_map = read_label_map(beside)
    if label_map is None:
        raise AnalysisError(f"no label map beside {saved_model} or {files[0]}: pass "
                            "--label_map")
    dataset = coco_groundtruth(files, label_map, label_map.max_id)
    detector = Detector(saved_model)
    results: list[dict] = []
    for _, _, example in tqdm(iter_examples(files, label_map), total=len(dataset["images"]),
                              unit="img", desc="detect", disable=not progress):
        results += coco_results(int(example.source_id), detector(example.decode_image()))

    def load(image_ids: Iterable[int]) -> dict[int, np.ndarray]:
        wanted = {int(i) for i in image_ids}
        return {int(example.source_id): example.decode_image()
                for _, _, example in iter_examples(files) if int(example.source_id) in wanted}

    ground_truth = ground_truth_from_dict(dataset)
    image_ids = sorted(ground_truth.getImgIds())
    return AnalysisInputs(ground_truth, _known(results, ground_truth, image_ids,
                                               str(saved_model)),
                          image_ids, load, f"{saved_model} on {', '.join(files)}",
                          _supercategories(label_map), computed=True)


def _supercategories(label_map) -> dict[int, str | None]:
    """From the label map's hierarchy (ancestor_ids): each class's top ancestor; classes
    without ancestors have none."""
    found: dict[int, str | None] = {}
    for item in label_map:
        roots = [a for a in item.ancestor_ids
                 if label_map.get(a) is not None and not label_map.get(a).ancestor_ids]
        found[item.id] = label_map.name_of(roots[0]) if roots else None
    return found
