"""Writes the built-in synthetic data set.

    python -m data_prep.synthetic --output_dir data/shapes --split train:200 --split val:16

writes data/shapes/images/<split>/*.jpg and, per --formats entry, the annotations:
  coco        annotations/instances_<split>.json
  via         annotations/via_<split>.json (VIA 2.x export)
  openimages  annotations/openimages_<split>/ (segmentation CSV, class descriptions, masks)
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from core.cli import run_main
from core.errors import UsageError
from data_prep.synthetic.scenes import encode_image, generate_image

# format -> module with write(images, output_dir, split) -> Path
WRITERS = {
    "coco": "data_prep.synthetic.coco_writer",
    "via": "data_prep.synthetic.via_writer",
    "openimages": "data_prep.synthetic.openimages_writer",
}


def writer(name: str):
    try:
        return importlib.import_module(WRITERS[name])
    except KeyError:
        raise UsageError(f"unknown format {name!r}; choose from {', '.join(WRITERS)}") from None


def write_split(output_dir: str | Path, split: str, count: int, seed: int = 0,
                height: int = 128, width: int = 128, min_objects: int = 2,
                max_objects: int = 6, image_format: str = "jpeg",
                formats: tuple[str, ...] = ("coco",)) -> dict[str, Path]:
    """Writes the images of one split and its annotations in each format; returns the paths."""
    output_dir = Path(output_dir)
    image_dir = output_dir / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    images = []
    for index in range(count):
        image = generate_image(seed, split, index, height, width, min_objects, max_objects)
        if image_format == "png":
            image.file_name = image.file_name.rsplit(".", 1)[0] + ".png"
        (image_dir / image.file_name).write_bytes(encode_image(image, image_format))
        images.append(image)
    return {name: writer(name).write(images, output_dir, split) for name in formats}


def _split_arg(text: str) -> tuple[str, int]:
    name, _, count = text.partition(":")
    if not name or not count.isdigit():
        raise argparse.ArgumentTypeError(f"expected NAME:COUNT (e.g. train:200), got {text!r}")
    return name, int(count)


def _size_arg(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    if not (width.isdigit() and height.isdigit()):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT (e.g. 640x480), got {text!r}")
    return int(width), int(height)


def _range_arg(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    if not low.isdigit() or (high and not high.isdigit()):
        raise argparse.ArgumentTypeError(f"expected MIN-MAX (e.g. 2-6), got {text!r}")
    return int(low), int(high or low)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--split", dest="splits", action="append", type=_split_arg,
                        help="NAME:COUNT, repeatable (default: train:200 and val:16)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=_size_arg, default=(128, 128), help="WIDTHxHEIGHT")
    parser.add_argument("--objects", type=_range_arg, default=(2, 6),
                        help="objects per image, MIN-MAX (default: 2-6)")
    parser.add_argument("--image_format", choices=("jpeg", "png"), default="jpeg")
    parser.add_argument("--formats", default="coco",
                        help=f"comma-separated annotation formats: {', '.join(WRITERS)}")
    args = parser.parse_args(argv)
    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    for name in formats:
        writer(name)  # fail on a bad name before writing anything
    width, height = args.size
    for split, count in args.splits or [("train", 200), ("val", 16)]:
        paths = write_split(args.output_dir, split, count, args.seed, height, width,
                            *args.objects, args.image_format, formats)
        print(f"{split}: {count} images of {width}x{height}; " +
              ", ".join(f"{name}: {path}" for name, path in paths.items()))
    return 0


def console_main() -> None:
    """The installed command (pyproject.toml [project.scripts])."""
    sys.exit(run_main(main))


if __name__ == "__main__":
    console_main()
