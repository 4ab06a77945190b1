r"""Hierarchical ensemble of the two Open Images models, reported as pairs such as (Person, Man).

    python -m models.tools.ensemble --layer0_saved_model L0/saved_model \
        --layer1_saved_model L1/saved_model --hierarchy bbox_labels_600_hierarchy.json \
        --images 'images/*.jpg' --output_dir ensemble/ [--iou_threshold 0.5] \
        [--keep_unmatched_layer1] [--score_threshold 0.5]

OUTPUT_DIR gets one PNG per image (captions "Person > Man 0.91/0.84") and ensemble.json. The
pairing rules are in models/inference/hierarchical_ensemble.py.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from core.cli import run_main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.tools.ensemble", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layer0_saved_model", required=True)
    parser.add_argument("--layer1_saved_model", required=True)
    parser.add_argument("--layer0_label_map", help="default: beside the layer0 saved_model/")
    parser.add_argument("--layer1_label_map", help="default: beside the layer1 saved_model/")
    parser.add_argument("--hierarchy", required=True, help="bbox_labels_600_hierarchy.json")
    parser.add_argument("--images", required=True, help="glob (quoted) or directory")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--iou_threshold", type=float, default=0.5, help="mask IoU to pair")
    parser.add_argument("--score_threshold", type=float, default=0.5,
                        help="detections of either model below this are not used")
    parser.add_argument("--keep_unmatched_layer1", action="store_true",
                        help="keep layer1 detections without a matching ancestor detection")
    parser.add_argument("--no_progress", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from models.inference.hierarchical_ensemble import run_ensemble

    report = run_ensemble(args.layer0_saved_model, args.layer1_saved_model, args.hierarchy,
                          args.images, args.output_dir, args.layer0_label_map,
                          args.layer1_label_map, args.iou_threshold, args.score_threshold,
                          args.keep_unmatched_layer1, progress=not args.no_progress)
    print(f"{report.images} image(s), {report.objects} object(s), {report.pairs} pair(s) -> "
          f"{args.output_dir}")
    return 0


def console_main() -> None:
    """The installed command (pyproject.toml [project.scripts])."""
    sys.exit(run_main(main))


if __name__ == "__main__":
    console_main()
