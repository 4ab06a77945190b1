r"""Pictures of each stage of Mask R-CNN on an image, to see where a detection goes wrong.

    python -m models.tools.debug_stages --pipeline_config_path EXPORT_DIR/pipeline.config \
        --checkpoint_dir EXPORT_DIR/checkpoint --images 'images/*.jpg' --output_dir stages/

Per image: <name>_1_anchors.png (the anchors the RPN scores highest), <name>_2_proposals.png
(the proposals after the RPN's NMS), <name>_3_boxes.png (the second stage's boxes at
--score_threshold or above) and <name>_4_masks.png (their masks), plus stages.json, an index.
See models/inference/stage_pictures.py.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from core.cli import run_main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.tools.debug_stages",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline_config_path", required=True)
    parser.add_argument("--checkpoint_dir", required=True, help="directory or ckpt prefix")
    parser.add_argument("--images", required=True, help="glob (quoted) or directory")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--label_map", help="class names (default: ids)")
    parser.add_argument("--score_threshold", type=float, default=0.5)
    parser.add_argument("--top_k", type=int, default=10, help="anchors and proposals drawn")
    args = parser.parse_args(argv)
    from core.atomic_io import staged_directory
    from models.inference.image_io import class_names, find_images
    from models.inference.stage_pictures import INDEX_FILE, STAGES, write_debug_stages
    from records.label_map import read_label_map

    paths = find_images(args.images)
    name_of = class_names(read_label_map(args.label_map) if args.label_map else None)
    with staged_directory(args.output_dir, INDEX_FILE) as staging:
        write_debug_stages(args.pipeline_config_path, args.checkpoint_dir, paths, staging,
                           name_of, args.score_threshold, args.top_k)
    print(f"{len(paths)} image(s) x {len(STAGES)} stages -> {args.output_dir}")
    return 0


def console_main() -> None:
    """The installed command (pyproject.toml [project.scripts])."""
    sys.exit(run_main(main))


if __name__ == "__main__":
    console_main()
