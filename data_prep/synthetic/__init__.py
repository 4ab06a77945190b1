"""The built-in synthetic data set (see `python -m data_prep.synthetic --help`)."""
from data_prep.synthetic.scenes import CLASSES, ShapeImage, ShapeObject, generate_image

__all__ = ["CLASSES", "ShapeImage", "ShapeObject", "generate_image"]
