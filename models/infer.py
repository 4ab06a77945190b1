r"""Runs an exported model on image files: pictures of the results, COCO results, mAP.

    python -m models.infer --saved_model demo_output/exported/saved_model \
        --images 'demo_output/shapes/images/val/*.jpg' --output_dir demo_output/predictions \
        [--score_threshold 0.5] [--label_map PATH] [--annotations instances_val.json] \
        [--debug_stages]

OUTPUT_DIR gets one PNG per image (<name>.png: masks, boxes, class names and scores of the
detections scoring at least --score_threshold), detections.json (COCO results: every
detection the model returned, whatever its score, as mAP needs; category ids are label-map
ids; masks as RLE), images.json (COCO image entries: id, file_name, height, width) and, with
--annotations (COCO ground truth; images are matched by file name), metrics.json with COCO
box and mask mAP, which are also printed. --debug_stages adds debug_stages/ (see
models/debug_stages.py). Everything is written into a hidden sibling directory and renamed
into place at the end: a failed run leaves no partial output.

Images: anything TensorFlow or OpenCV decodes; grayscale, palette, alpha and 16-bit images
are converted to 8-bit RGB. A file that cannot be decoded stops the run with its name, unless
--skip_bad_images.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import glob
import io
import json
import os
import sys
from pathlib import Path
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from models.export import ExportError, staged_directory  # noqa: E402
from models.export_signatures import MASKS_IMAGE_KEY, paste_masks  # noqa: E402
from records.label_map import LabelMap, LabelMapError, read_label_map  # noqa: E402
from records.render import draw_enlarged  # noqa: E402

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
RESULTS_FILE = "detections.json"
DISPLAY_MIN_SIDE = 512  # smaller images are drawn enlarged (whole factor) so text is legible
COCO_STAT_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "ARmax1", "ARmax10", "ARmax100",
                  "ARs", "ARm", "ARl")  # the order of COCOeval.stats


class InferError(ValueError):
    """Inference cannot run on these inputs; the message names the file and the fix."""


@dataclasses.dataclass
class Detections:
    """One image's detections in its own pixels (valid ones only, best first)."""

    boxes: np.ndarray  # [N, 4] ymin, xmin, ymax, xmax (pixel edges)
    scores: np.ndarray  # [N]
    classes: np.ndarray  # [N] label-map ids
    masks: np.ndarray | None  # [N, H, W] uint8 0/1

    def select(self, keep: np.ndarray) -> "Detections":
        return Detections(self.boxes[keep], self.scores[keep], self.classes[keep],
                          None if self.masks is None else self.masks[keep])


def find_images(pattern: str) -> list[Path]:
    """A directory (its image files) or a glob -> sorted image paths; none is an error."""
    if os.path.isdir(pattern):
        paths = [p for p in Path(pattern).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS]
    else:
        paths = [Path(p) for p in glob.glob(pattern, recursive=True) if os.path.isfile(p)]
    if not paths:
        raise InferError(f"no image files match {pattern!r} (give a glob such as "
                         "'images/*.jpg' in quotes, or a directory)")
    return sorted(paths)


def _opencv_decode(data: bytes) -> np.ndarray | None:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        return None
    if image.dtype == np.uint16:
        image = np.round(image / 257.0).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if image.ndim == 2:
        return np.stack([image] * 3, axis=-1)
    return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB)


def read_image(path: Path) -> np.ndarray:
    """uint8 RGB [H, W, 3]. TensorFlow decodes first (the pixels training saw), OpenCV next."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise InferError(f"{path}: cannot be read ({err.strerror})") from None
    try:
        return tf.io.decode_image(data, channels=3, dtype=tf.uint8,
                                  expand_animations=False).numpy()
    except (tf.errors.InvalidArgumentError, ValueError):
        image = _opencv_decode(data)
    if image is None:
        raise InferError(f"{path}: not an image that TensorFlow or OpenCV can decode "
                         "(corrupt or not an image file)")
    return image


class Detector:
    """A SavedModel's serving_default, whichever input type it was exported with."""

    def __init__(self, saved_model_dir: str | Path):
        saved_model_dir = Path(saved_model_dir)
        if not (saved_model_dir / "saved_model.pb").exists():
            raise InferError(f"{saved_model_dir} is not a SavedModel directory (no "
                             "saved_model.pb); give EXPORT_DIR/saved_model")
        self._loaded = tf.saved_model.load(str(saved_model_dir))
        self._serve = self._loaded.signatures["serving_default"]
        (self._input_name, spec), = self._serve.structured_input_signature[1].items()
        self._dtype = spec.dtype
        self._as_example: bool | None = None  # string inputs: tf.Example or encoded image

    def raw(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """The signature's outputs for one image (batch of 1)."""
        if self._dtype != tf.string:
            batch = tf.constant(image[np.newaxis].astype(self._dtype.as_numpy_dtype))
            return self._call(batch)
        png = tf.io.encode_png(image).numpy()
        example = tf.train.Example(features=tf.train.Features(feature={
            "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png]))}))
        candidates = [(True, example.SerializeToString()), (False, png)]
        if self._as_example is not None:
            candidates = [c for c in candidates if c[0] == self._as_example]
        for as_example, value in candidates:
            try:
                outputs = self._call(tf.constant([value]))
            except tf.errors.InvalidArgumentError:
                if self._as_example is not None:
                    raise
                continue
            self._as_example = as_example
            return outputs
        raise InferError("the SavedModel's string input takes neither tf.Examples nor "
                         "encoded images")

    def _call(self, batch: tf.Tensor) -> dict[str, np.ndarray]:
        return {k: v.numpy() for k, v in self._serve(**{self._input_name: batch}).items()}

    def __call__(self, image: np.ndarray) -> Detections:
        return to_detections(self.raw(image), image.shape[0], image.shape[1])


def to_detections(outputs: dict[str, np.ndarray], height: int, width: int) -> Detections:
    count = int(outputs["num_detections"][0])
    boxes = outputs["detection_boxes"][0, :count] * np.array([height, width, height, width])
    masks = None
    if MASKS_IMAGE_KEY in outputs:
        masks = outputs[MASKS_IMAGE_KEY][0, :count]
    elif "detection_masks" in outputs:  # exported with --nofull_image_masks: paste here
        masks = paste_masks(tf.constant(outputs["detection_masks"][0, :count]),
                            tf.constant(boxes, tf.float32), height, width).numpy()
    return Detections(boxes.astype(np.float32), outputs["detection_scores"][0, :count],
                      outputs["detection_classes"][0, :count].astype(np.int64), masks)


def coco_results(image_id: int, detections: Detections) -> list[dict]:
    """COCO results entries (bbox [x, y, w, h] in pixels, RLE segmentation)."""
    from pycocotools import mask as mask_utils

    entries = []
    for i in range(len(detections.scores)):
        ymin, xmin, ymax, xmax = (float(v) for v in detections.boxes[i])
        entry = {"image_id": image_id, "category_id": int(detections.classes[i]),
                 "bbox": [round(xmin, 2), round(ymin, 2), round(xmax - xmin, 2),
                          round(ymax - ymin, 2)],
                 "score": round(float(detections.scores[i]), 5)}
        if detections.masks is not None:
            rle = mask_utils.encode(np.asfortranarray(detections.masks[i].astype(np.uint8)))
            entry["segmentation"] = {"size": [int(s) for s in rle["size"]],
                                     "counts": rle["counts"].decode("ascii")}
        entries.append(entry)
    return entries


def load_ground_truth(path: str | Path):
    from pycocotools.coco import COCO

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(path))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InferError(f"{path}: not COCO annotations ({err})") from None


def evaluate_coco(ground_truth, results: list[dict], image_ids: list[int]) -> dict[str, float]:
    """COCO box and mask metrics under the OD API's names (models.trainer.EVAL_NAMES)."""
    from pycocotools.cocoeval import COCOeval

    from models.trainer import EVAL_NAMES

    types = [("bbox", "")] + ([("segm", "mask_")] if results and "segmentation" in results[0]
                              else [])
    metrics: dict[str, float] = {}
    for iou_type, prefix in types:
        if results:
            with contextlib.redirect_stdout(io.StringIO()):
                evaluation = COCOeval(ground_truth, ground_truth.loadRes(results), iou_type)
                evaluation.params.imgIds = image_ids
                evaluation.evaluate()
                evaluation.accumulate()
                evaluation.summarize()
            stats = [float(s) for s in evaluation.stats]
        else:
            stats = [0.0] * len(COCO_STAT_KEYS)
        metrics.update({EVAL_NAMES[prefix + key]: value
                        for key, value in zip(COCO_STAT_KEYS, stats)})
    return metrics


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


def picture_name(path: Path, taken: set[str]) -> str:
    name, suffix = f"{path.stem}.png", 1
    while name in taken:
        name, suffix = f"{path.stem}_{suffix}.png", suffix + 1
    taken.add(name)
    return name


def render(image: np.ndarray, boxes: np.ndarray, masks: np.ndarray | None,
           captions: list[str], scores: np.ndarray) -> np.ndarray:
    """The pictures of infer, debug_stages and ensemble: small images drawn enlarged."""
    return draw_enlarged(image, boxes, masks, captions, scores, DISPLAY_MIN_SIDE)


def write_png(path: Path, image: np.ndarray) -> None:
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))
    if not ok:
        raise InferError(f"could not encode {path.name}")
    path.write_bytes(encoded.tobytes())


def class_names(label_map: LabelMap | None) -> Callable[[int], str]:
    """Label-map id -> display name (the id itself without a label map)."""
    return label_map.label_of if label_map is not None else (lambda i: str(int(i)))


def find_label_map(saved_model: Path, given: str | None) -> LabelMap | None:
    if given:
        return read_label_map(given)
    beside = saved_model.absolute().parent / "label_map.pbtxt"
    return read_label_map(beside) if beside.exists() else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m models.infer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--saved_model", required=True, help="EXPORT_DIR/saved_model")
    parser.add_argument("--images", required=True, help="glob (quoted) or directory")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--score_threshold", type=float, default=0.5,
                        help="draw detections scoring at least this (the JSON keeps all)")
    parser.add_argument("--label_map", help="default: label_map.pbtxt beside saved_model/")
    parser.add_argument("--annotations", help="COCO ground truth: print box and mask mAP")
    parser.add_argument("--skip_bad_images", action="store_true",
                        help="skip undecodable files (listed) instead of stopping")
    parser.add_argument("--debug_stages", action="store_true",
                        help="also draw anchors, proposals, boxes and masks per image, from "
                        "the checkpoint and pipeline.config beside saved_model/")
    parser.add_argument("--pipeline_config_path", help="for --debug_stages (default: beside "
                        "saved_model/)")
    parser.add_argument("--checkpoint_dir", help="for --debug_stages (default: checkpoint/ "
                        "beside saved_model/)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    paths = find_images(args.images)
    saved_model = Path(args.saved_model)
    label_map = find_label_map(saved_model, args.label_map)
    name_of = class_names(label_map)
    ground_truth = load_ground_truth(args.annotations) if args.annotations else None
    image_ids, unmatched = _image_ids(paths, ground_truth)
    detector = Detector(saved_model)
    results, images, skipped, taken = [], [], {}, set()
    with staged_directory(args.output_dir, RESULTS_FILE) as staging:
        for path, image_id in tqdm(list(zip(paths, image_ids)), unit="img", desc="infer",
                                   disable=args.no_progress):
            try:
                image = read_image(path)
            except InferError as err:
                if not args.skip_bad_images:
                    raise
                skipped[path] = str(err)
                continue
            detections = detector(image)
            results += coco_results(image_id, detections)
            images.append({"id": image_id, "file_name": path.name, "height": image.shape[0],
                           "width": image.shape[1]})
            shown = detections.select(detections.scores >= args.score_threshold)
            picture = render(image, shown.boxes, shown.masks,
                             [name_of(c) for c in shown.classes], shown.scores)
            write_png(staging / picture_name(path, taken), picture)
        if not images:
            raise InferError("no image could be decoded: " + "; ".join(skipped.values()))
        (staging / RESULTS_FILE).write_text(json.dumps(results) + "\n")
        (staging / "images.json").write_text(json.dumps(images, indent=1) + "\n")
        if ground_truth is not None:
            done = {image["id"] for image in images}
            evaluated = [i for i, p in zip(image_ids, paths) if p not in unmatched and i in done]
            if not evaluated:
                raise InferError(f"none of the images is in {args.annotations} (matched by "
                                 "file name)")
            kept = [r for r in results if r["image_id"] in set(evaluated)]
            metrics = evaluate_coco(ground_truth, kept, evaluated)
            (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        if args.debug_stages:
            from models.debug_stages import write_debug_stages

            export_dir = saved_model.absolute().parent
            write_debug_stages(args.pipeline_config_path or export_dir / "pipeline.config",
                               args.checkpoint_dir or export_dir / "checkpoint",
                               [p for p in paths if p not in skipped],
                               staging / "debug_stages", name_of, args.score_threshold)
    for message in skipped.values():
        print(f"skipped: {message}", file=sys.stderr)
    if unmatched:
        print(f"warning: {len(unmatched)} image(s) are not in {args.annotations} and were not "
              f"evaluated, e.g. {unmatched[0].name}", file=sys.stderr)
    print(f"{len(images)} image(s), {len(results)} detection(s) -> {args.output_dir}")
    if ground_truth is not None:
        print(f"COCO box mAP {metrics['DetectionBoxes_Precision/mAP']:.4f} "
              f"(AP50 {metrics['DetectionBoxes_Precision/mAP@.50IOU']:.4f})")
        if "DetectionMasks_Precision/mAP" in metrics:
            print(f"COCO mask mAP {metrics['DetectionMasks_Precision/mAP']:.4f} "
                  f"(AP50 {metrics['DetectionMasks_Precision/mAP@.50IOU']:.4f})")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pipelines.config_util import PipelineConfigError

    try:
        return run(args)
    except (InferError, ExportError, LabelMapError, PipelineConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
