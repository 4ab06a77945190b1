"""Shared fixtures: synthetic data made by the project itself, and the real files in
../shared/realdata (REALDATA_DIR), which tests skip cleanly when absent."""
from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parents[1]
_REALDATA = Path(os.environ.get("REALDATA_DIR", REPO_ROOT.parent / "shared" / "realdata"))


@pytest.fixture(scope="session")
def realdata() -> Path:
    """../shared/realdata, or a skip when this checkout has no shared folder beside it."""
    if not _REALDATA.is_dir():
        pytest.skip(f"real data not found at {_REALDATA} (set REALDATA_DIR)")
    return _REALDATA


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory) -> Path:
    """A small synthetic data set in COCO format: train (24 images) and val (6)."""
    from data_prep.synthetic.__main__ import write_split

    root = tmp_path_factory.mktemp("shapes")
    write_split(root, "train", 24, seed=0)
    write_split(root, "val", 6, seed=0)
    return root


def run_shared_dir(tmp_path_factory) -> Path:
    """A directory every test process of this run shares: under pytest-xdist each worker has
    its own base temporary directory, and they sit side by side in one parent."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextlib.contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Holds an exclusive lock on `lock_path`, so that one test process builds a shared
    fixture while the others wait for it, then reuse it."""
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def run_command(*args: str, cwd: Path = REPO_ROOT, check: bool = False,
                env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs a command line as a user would, with this interpreter."""
    full_env = dict(os.environ, **(env or {}))
    result = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                            env=full_env)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed ({result.returncode}):\n{result.stdout}\n"
                             f"{result.stderr}")
    return result
