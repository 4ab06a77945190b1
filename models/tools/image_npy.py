"""Writes an image file as the .npy batch that `saved_model_cli run --inputs` takes.

    python -m models.tools.image_npy photo.jpg photo.npy [--dtype float32]
    saved_model_cli run --dir EXPORT_DIR/saved_model --tag_set serve \
        --signature_def serving_default --inputs input_tensor=photo.npy

This TensorFlow's saved_model_cli accepts only literals in --input_exprs, so an image goes in
as a file: uint8 [1, H, W, 3] for exports of --input_type=image_tensor, float32 (0..255) for
float_image_tensor. Grayscale, palette, alpha and 16-bit images become 8-bit RGB, as in
`python -m models.tools.infer`.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from core.cli import run_main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.tools.image_npy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image")
    parser.add_argument("output", help="the .npy file to write")
    parser.add_argument("--dtype", choices=("uint8", "float32"), default="uint8")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from models.inference.image_io import read_image

    image = read_image(Path(args.image))
    batch = image[np.newaxis].astype(args.dtype)
    output = Path(args.output)
    partial = output.with_name(output.name + ".partial.npy")
    np.save(partial, batch)
    os.replace(partial, output)
    print(f"{output}: {args.dtype} {list(batch.shape)}")
    return 0


def console_main() -> None:
    """The installed command (pyproject.toml [project.scripts])."""
    sys.exit(run_main(main))


if __name__ == "__main__":
    console_main()
