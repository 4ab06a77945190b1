"""Atomic writes: a reader sees the old file (or directory) or the new one, never a
half-written one, and a failed write leaves nothing behind."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterator

from core.errors import OutputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Writes `data` to a temporary file beside `path`, then renames it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give a normal file's mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, value: Any) -> Path:
    return write_text_atomic(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def staged_directory(final: str | Path, owned_marker: str) -> Iterator[Path]:
    """Yields an empty hidden sibling of `final`; on success it replaces `final` as a whole.

    An existing `final` is replaced only when it is empty or holds `owned_marker` (a file or
    folder our tools write), so a mistyped output directory never deletes someone's files.
    On an exception the sibling is removed and `final` is untouched.
    """
    final = Path(final).absolute()
    if final.exists() and not final.is_dir():
        raise OutputError(f"{final} exists and is not a directory")
    if final.is_dir() and any(final.iterdir()) and not (final / owned_marker).exists():
        raise OutputError(f"{final} is not empty and holds no {owned_marker}: choose a new "
                          "directory (or empty it); it is replaced as a whole")
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial",
                                    dir=final.parent))
    try:
        yield staging
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700
        if final.exists():
            retired = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(final, retired)
            os.rename(staging, final)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
