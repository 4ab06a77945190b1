"""Compiles the project's .proto files into Python modules with grpcio-tools' protoc.

The generated `*_pb2.py` files are build outputs (git-ignored), made by `make protos` (this
module) and by `pip install .` (buildtools/build_backend.py), never on import: importing a
proto package whose modules were not built says to run `make protos` (core/protos.py).
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PROTO_PACKAGES = ("records/protos", "pipelines/protos")


def _stale_protos(package_dir: Path) -> list[Path]:
    stale = []
    for proto in sorted(package_dir.glob("*.proto")):
        generated = proto.with_name(proto.stem + "_pb2.py")
        if not generated.exists() or generated.stat().st_mtime < proto.stat().st_mtime:
            stale.append(proto)
    return stale


def compile_protos(package_dir: Path, force: bool = False) -> list[Path]:
    """Compiles every (or every stale) .proto in `package_dir`; returns what was compiled."""
    protos = sorted(package_dir.glob("*.proto")) if force else _stale_protos(package_dir)
    if not protos:
        return []
    try:
        from grpc_tools import protoc
    except ImportError as err:  # pragma: no cover - only without the pinned requirements
        raise RuntimeError(
            "grpcio-tools is needed to build the protobuf modules: "
            "run `make protos` (or `pip install -r requirements.txt`).") from err
    include = str(Path(protoc.__file__).parent / "_proto")
    # Generate into a temporary directory, then rename: concurrent importers never see a
    # half-written module.
    with tempfile.TemporaryDirectory(dir=package_dir) as tmp:
        args = ["protoc", f"-I{REPO_ROOT}", f"-I{include}", f"--python_out={tmp}"]
        args += [str(p.relative_to(REPO_ROOT)) for p in protos]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {', '.join(map(str, protos))}")
        for proto in protos:
            rel = proto.relative_to(REPO_ROOT).with_name(proto.stem + "_pb2.py")
            os.replace(Path(tmp) / rel, proto.with_name(proto.stem + "_pb2.py"))
    return protos


def main() -> int:
    force = "--force" in sys.argv[1:]
    for package in PROTO_PACKAGES:
        for proto in compile_protos(REPO_ROOT / package, force=force):
            print(f"compiled {proto.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
