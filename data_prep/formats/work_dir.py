"""Where a reader extracts files the converter must read from disk (Labelme's embedded
images): a directory kept where the user asks, or a hidden one in the output directory,
on the records' file system, which has room for the same bytes again, removed when the
process exits."""
from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from core.directory_commit import describe_os_error
from core.errors import OutputError


class WorkDir:
    """Made when the first file needs it: `keep` (kept afterwards), else a hidden directory
    in `output_dir` removed when the process exits, together with the output directory
    itself if this made it and nothing else was put there (a failed run leaves none)."""

    def __init__(self, output_dir: str | Path | None = None, keep: str | Path | None = None,
                 prefix: str = ".labelme-images-"):
        self.output_dir = Path(output_dir) if output_dir else None
        self.keep = Path(keep) if keep else None
        self.prefix = prefix
        self._path: Path | None = None

    def path(self) -> Path:
        if self._path is None:
            try:
                self._path = self._make()
            except OSError as err:
                raise OutputError(describe_os_error(
                    err, f"the work directory for embedded images in "
                    f"{self.keep or self.output_dir or 'the temporary directory'}")) from None
        return self._path

    def _make(self) -> Path:
        if self.keep is not None:
            self.keep.mkdir(parents=True, exist_ok=True)
            return self.keep
        parent = self.output_dir
        created = parent is not None and not parent.exists()
        if parent is not None:
            parent.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=self.prefix, dir=parent))
        atexit.register(_remove, path, parent if created else None)
        return path


def _remove(path: Path, created_parent: Path | None) -> None:
    shutil.rmtree(path, ignore_errors=True)
    if created_parent is not None:
        try:
            created_parent.rmdir()  # only when empty: a failed run leaves no directory
        except OSError:
            pass
