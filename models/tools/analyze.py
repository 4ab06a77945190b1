r"""Pictures of where a model fails: per-class AP, PR curves, the COCO error breakdown,
AP by object size, a confusion matrix and the worst images, on one HTML page.

    # (a) COCO results (detections.json of models.tools.infer) and COCO ground truth
    python -m models.tools.analyze --detections predictions/detections.json \
        --annotations instances_val.json [--images_dir images/val] --output_dir analysis/
    # (b) a SavedModel on TFRecords (ground truth from the records)
    python -m models.tools.analyze --saved_model exported/x/saved_model \
        --records 'records/val-*.tfrecord' --output_dir analysis/

OUTPUT_DIR gets index.html (open it in a browser), the PNGs it shows and analysis.json (the
numbers). --score_threshold (default 0.5) chooses the detections the confusion matrix and
the worst images look at; AP and the curves use all. --worst N images are drawn (default
12; in (a) only with --images_dir). A failed run leaves no partial output.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from core.cli import run_main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m models.tools.analyze", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--detections", help="(a) COCO results JSON, e.g. detections.json")
    source.add_argument("--saved_model", help="(b) EXPORT_DIR/saved_model")
    parser.add_argument("--annotations", help="(a) COCO ground truth JSON")
    parser.add_argument("--images_dir", help="(a) the images, by the ground truth's file "
                        "names (to draw the worst images)")
    parser.add_argument("--records", nargs="+", metavar="RECORDS",
                        help="(b) TFRecord files or quoted globs")
    parser.add_argument("--label_map", help="(b) default: label_map.pbtxt beside "
                        "saved_model/, else beside the first record file")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--score_threshold", type=float, default=0.5,
                        help="detections the confusion matrix and worst images count")
    parser.add_argument("--worst", type=int, default=12, metavar="N",
                        help="how many worst images to draw (default 12)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.detections and not args.annotations:
        parser.error("--detections needs --annotations (COCO ground truth)")
    if args.saved_model and not args.records:
        parser.error("--saved_model needs --records")
    if args.detections and (args.records or args.label_map):
        parser.error("--records and --label_map go with --saved_model")
    if args.saved_model and (args.annotations or args.images_dir):
        parser.error("--annotations and --images_dir go with --detections")
    if args.worst < 0 or not 0.0 <= args.score_threshold <= 1.0:
        parser.error("--worst takes a count >= 0, --score_threshold a value in [0, 1]")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from models.analysis.analyze import analyze_results
    from models.analysis.inputs import from_results_file, from_saved_model

    if args.detections:
        inputs = from_results_file(args.detections, args.annotations, args.images_dir)
    else:
        inputs = from_saved_model(args.saved_model, args.records, args.label_map,
                                  progress=not args.no_progress)
    report = analyze_results(inputs, args.output_dir, args.score_threshold, args.worst)
    print(f"{len(inputs.image_ids)} image(s), {len(inputs.results)} detection(s): "
          f"{len(report.pictures)} picture(s) -> {report.output_dir / 'index.html'}")
    return 0


def console_main() -> None:
    """The installed command (pyproject.toml [project.scripts])."""
    sys.exit(run_main(main))


if __name__ == "__main__":
    console_main()
