"""setuptools' build backend, compiling the .proto files first (pyproject.toml names it).

`pip install .` and `pip install -e .` run it, so an installed copy has its generated
*_pb2 modules without a separate `make protos`.
"""
from __future__ import annotations

import protos  # buildtools/protos.py: pip puts this folder on the path (backend-path)
from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F401,F403  (the rest of the PEP 517/660 hooks)


def _compile() -> None:
    for package in protos.PROTO_PACKAGES:
        protos.compile_protos(protos.REPO_ROOT / package)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _compile()
    return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    _compile()
    return _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)


def build_sdist(sdist_directory, config_settings=None):
    return _setuptools.build_sdist(sdist_directory, config_settings)
