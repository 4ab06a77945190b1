"""Prints what `saved_model_cli run --outdir DIR` wrote: one line per detection.

    python -m models.tools.show_outputs DIR [--label_map exported/x/label_map.pbtxt]

saved_model_cli saves each output as DIR/<name>.npy; this reads them back and shows, for
the first image, num_detections and each detection's class, score, normalized box and mask
area (pixels of detection_masks_image, when exported with it). No TensorFlow needed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from core.cli import run_main
from core.errors import UsageError
from records.label_map import read_label_map

REQUIRED = ("num_detections", "detection_scores", "detection_classes", "detection_boxes")


def describe(outputs: dict[str, np.ndarray], name_of=str, limit: int = 10) -> list[str]:
    count = int(outputs["num_detections"][0])
    lines = [f"num_detections: {count}; outputs: "
             + ", ".join(f"{k} {v.dtype} {list(v.shape)}" for k, v in sorted(outputs.items()))]
    masks = outputs.get("detection_masks_image")
    for i in range(min(count, limit)):
        label = int(outputs["detection_classes"][0, i])
        box = ", ".join(f"{v:.3f}" for v in outputs["detection_boxes"][0, i])
        area = f", mask {int(masks[0, i].sum())} px" if masks is not None else ""
        lines.append(f"  {i}: {name_of(label)} (class {label}) score "
                     f"{outputs['detection_scores'][0, i]:.3f}, box [{box}]{area}")
    if count > limit:
        lines.append(f"  ... and {count - limit} more")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.tools.show_outputs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outdir", help="the --outdir of saved_model_cli run")
    parser.add_argument("--label_map", help="class names, e.g. EXPORT_DIR/label_map.pbtxt "
                        "(default: class ids)")
    parser.add_argument("--limit", type=int, default=10, help="detections listed")
    args = parser.parse_args(argv)
    outdir = Path(args.outdir)
    missing = [k for k in REQUIRED if not (outdir / f"{k}.npy").exists()]
    if missing:
        raise UsageError(f"{outdir} has no {', '.join(f'{k}.npy' for k in missing)} (give "
                         "the --outdir of saved_model_cli run on a serving_default of this "
                         "project)")
    outputs = {path.stem: np.load(path) for path in sorted(outdir.glob("*.npy"))}
    name_of = read_label_map(args.label_map).label_of if args.label_map else str
    print("\n".join(describe(outputs, name_of, args.limit)))
    return 0


def console_main() -> None:
    """The installed command (pyproject.toml [project.scripts])."""
    sys.exit(run_main(main))


if __name__ == "__main__":
    console_main()
