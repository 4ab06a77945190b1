r"""Runs an exported model on image files: pictures of the results, COCO results, mAP.

    python -m models.tools.infer --saved_model demo_output/exported/saved_model \
        --images 'demo_output/shapes/images/val/*.jpg' --output_dir demo_output/predictions \
        [--score_threshold 0.5] [--label_map PATH] [--annotations instances_val.json] \
        [--debug_stages]

OUTPUT_DIR gets one PNG per image, detections.json (COCO results), images.json and, with
--annotations (COCO ground truth; images are matched by file name), metrics.json with COCO
box and mask mAP, which are also printed. --debug_stages adds debug_stages/ (the pictures of
`python -m models.tools.debug_stages`). A failed run leaves no partial output. A file that
cannot be decoded stops the run with its name, unless --skip_bad_images.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from core.cli import run_main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m models.tools.infer", description=__doc__,
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from models.evaluation.coco_metrics import BOX_MAP, MASK_MAP
    from models.inference.predict_images import predict_images

    report = predict_images(
        args.saved_model, args.images, args.output_dir, args.score_threshold, args.label_map,
        args.annotations, args.skip_bad_images, args.debug_stages, args.pipeline_config_path,
        args.checkpoint_dir, progress=not args.no_progress)
    for message in report.skipped:
        print(f"skipped: {message}", file=sys.stderr)
    if report.unmatched:
        print(f"warning: {len(report.unmatched)} image(s) are not in {args.annotations} and "
              f"were not evaluated, e.g. {report.unmatched[0].name}", file=sys.stderr)
    print(f"{report.images} image(s), {report.detections} detection(s) -> {args.output_dir}")
    metrics = report.metrics
    if metrics is not None:
        print(f"COCO box mAP {metrics[BOX_MAP]:.4f} "
              f"(AP50 {metrics[BOX_MAP + '@.50IOU']:.4f})")
        if MASK_MAP in metrics:
            print(f"COCO mask mAP {metrics[MASK_MAP]:.4f} "
                  f"(AP50 {metrics[MASK_MAP + '@.50IOU']:.4f})")
    return 0


def console_main() -> None:
    """The installed command (pyproject.toml [project.scripts])."""
    sys.exit(run_main(main))


if __name__ == "__main__":
    console_main()
