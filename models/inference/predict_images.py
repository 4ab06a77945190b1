"""Running an exported model on image files: pictures of the results, COCO results, mAP.

`predict_images` writes into OUTPUT_DIR one PNG per image (<name>.png: masks, boxes, class
names and scores of the detections scoring at least score_threshold), detections.json
(COCO results: every detection the model returned, whatever its score, as mAP needs;
category ids are the source's: the label-map ids, or, when the label map renumbered the
source's categories (create_tfrecords.py --contiguous_ids), the ids of category_ids.json
beside it; masks as RLE), images.json (COCO image entries: id,
file_name, height, width) and, given COCO ground truth (images matched by file name),
metrics.json with COCO box and mask mAP (models/evaluation/coco_metrics.py, the scorer
continuous evaluation uses). With debug_stages, debug_stages/ gets the stage pictures of
models/inference/stage_pictures.py. Everything is written into a hidden sibling directory
and renamed into place at the end: a failed run leaves no partial output.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from core.atomic_io import staged_directory
from models.evaluation.coco_metrics import coco_results, load_ground_truth, score_coco
from models.inference.image_io import (
    InferError,
    class_names,
    find_images,
    find_label_map,
    picture_name,
    read_image,
    render,
    write_png,
)
from models.serving.saved_model_client import Detector
from records.label_map import LabelMapError, read_category_ids

RESULTS_FILE = "detections.json"


@dataclasses.dataclass
class PredictionReport:
    """What a run did, for the command to print."""

    images: int
    detections: int
    skipped: list[str]  # messages of undecodable images that were skipped
    unmatched: list[Path]  # images not in the ground truth (not evaluated)
    metrics: dict[str, float] | None


def _image_ids(paths: list[Path], ground_truth) -> tuple[list[int], list[Path]]:
    """Ids from the ground truth by file name (new ids for the rest, which are returned)."""
    if ground_truth is None:
        return list(range(1, len(paths) + 1)), []
    by_name: dict[str, int] = {}
    for image in ground_truth.dataset.get("images", []):
        by_name.setdefault(os.path.basename(str(image.get("file_name", ""))), image["id"])
    next_id = max([0] + [i for i in by_name.values() if isinstance(i, int)]) + 1
    ids, unmatched = [], []
    for path in paths:
        if path.name in by_name:
            ids.append(by_name[path.name])
        else:
            ids.append(next_id)
            next_id += 1
            unmatched.append(path)
    return ids, unmatched


def source_category_ids(saved_model: Path, label_map_path: str | None
                        ) -> dict[int, int | str] | None:
    """Label-map id -> the source's category id, from the category_ids.json beside the label
    map (given, or the export's); None when the label-map ids are the source's own."""
    path = label_map_path or saved_model.absolute().parent / "label_map.pbtxt"
    try:
        return read_category_ids(path)
    except LabelMapError as err:
        raise InferError(str(err)) from None


def with_source_ids(results: list[dict], category_ids: dict[int, int | str] | None
                    ) -> list[dict]:
    """COCO results whose category ids are the source's (mapped through category_ids)."""
    if not category_ids:
        return results
    for result in results:
        label = result["category_id"]
        if label not in category_ids:
            raise InferError(f"the model predicted class {label}, which category_ids.json "
                             f"does not map (it maps {sorted(category_ids)}): use the label "
                             "map and category_ids.json the model was trained with")
        result["category_id"] = category_ids[label]
    return results


def predict_images(saved_model: str | Path, images: str, output_dir: str | Path,
                   score_threshold: float = 0.5, label_map_path: str | None = None,
                   annotations: str | None = None, skip_bad_images: bool = False,
                   debug_stages: bool = False, pipeline_config_path: str | None = None,
                   checkpoint_dir: str | None = None, progress: bool = True
                   ) -> PredictionReport:
    """Runs `saved_model` on the images matching `images` (a glob or a directory)."""
    from tqdm import tqdm

    paths = find_images(images)
    saved_model = Path(saved_model)
    name_of = class_names(find_label_map(saved_model, label_map_path))
    category_ids = source_category_ids(saved_model, label_map_path)
    ground_truth = load_ground_truth(annotations) if annotations else None
    image_ids, unmatched = _image_ids(paths, ground_truth)
    detector = Detector(saved_model)
    results, entries, skipped, taken = [], [], {}, set()
    metrics = None
    with staged_directory(output_dir, RESULTS_FILE) as staging:
        for path, image_id in tqdm(list(zip(paths, image_ids)), unit="img", desc="infer",
                                   disable=not progress):
            try:
                image = read_image(path)
            except InferError as err:
                if not skip_bad_images:
                    raise
                skipped[path] = str(err)
                continue
            detections = detector(image)
            results += with_source_ids(coco_results(image_id, detections), category_ids)
            entries.append({"id": image_id, "file_name": path.name, "height": image.shape[0],
                            "width": image.shape[1]})
            shown = detections.select(detections.scores >= score_threshold)
            picture = render(image, shown.boxes, shown.masks,
                             [name_of(c) for c in shown.classes], shown.scores)
            write_png(staging / picture_name(path, taken), picture)
        if not entries:
            raise InferError("no image could be decoded: " + "; ".join(skipped.values()))
        (staging / RESULTS_FILE).write_text(json.dumps(results) + "\n")
        (staging / "images.json").write_text(json.dumps(entries, indent=1) + "\n")
        if ground_truth is not None:
            done = {entry["id"] for entry in entries}
            evaluated = [i for i, p in zip(image_ids, paths) if p not in unmatched and i in done]
            if not evaluated:
                raise InferError(f"none of the images is in {annotations} (matched by file "
                                 "name)")
            kept = [r for r in results if r["image_id"] in set(evaluated)]
            metrics = score_coco(ground_truth, kept, evaluated)
            (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        if debug_stages:
            from models.inference.stage_pictures import write_debug_stages

            export_dir = saved_model.absolute().parent
            write_debug_stages(pipeline_config_path or export_dir / "pipeline.config",
                               checkpoint_dir or export_dir / "checkpoint",
                               [p for p in paths if p not in skipped],
                               staging / "debug_stages", name_of, score_threshold)
    return PredictionReport(len(entries), len(results), list(skipped.values()), unmatched,
                            metrics)
