"""The error for a generated protobuf module that was never built.

The *_pb2.py modules of records/protos and pipelines/protos are build outputs of
`make protos` (or `pip install .`), never generated on import; a checkout used without
building gets this one-line error instead of the OD API's classic "No module named
..._pb2".
"""
from __future__ import annotations

import importlib
from types import ModuleType

from core.errors import UserError


class ProtosNotBuiltError(UserError, ImportError):
    """A generated *_pb2 module is missing."""


def generated_module(package: str, name: str) -> ModuleType:
    """A proto package's module `__getattr__`: `from package import name_pb2` imports the
    generated module, or raises ProtosNotBuiltError when it was never built."""
    if not name.endswith("_pb2"):
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    try:
        return importlib.import_module(f"{package}.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"{package}.{name}":
            raise
        raise ProtosNotBuiltError(
            f"the generated module {package}.{name} is missing: run `make protos` in the "
            "repository (or install it with `pip install .`), which compiles the .proto "
            "files") from None
