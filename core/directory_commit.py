"""Several files of one directory replaced together, or not at all.

A converter run writes shards, summaries, a label map and TFDS metadata. Each is first
written in full under a hidden temporary name beside its final one (`.NAME.tmp-PID-N`), so
running out of space or a read-only file system fails while the outputs are still as they
were. `commit()` then moves every file into place with renames, which need no space: files
being replaced or removed are first renamed aside (`.NAME.bak-PID`), and if any rename
fails every step is undone, so the directory is exactly as it was before the run. A run
killed half-way leaves only hidden files of its own process id, which the next run in the
directory clears (`clear_leftovers`), putting back a file a killed commit had set aside.
"""
from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path
from typing import Any

from core.errors import OutputError

_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|bak)-(?P<pid>\d+)(-\d+)?$")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def describe_os_error(err: OSError, what: str) -> str:
    """A one-line account of a failed write, with what to do for the usual causes."""
    reason = err.strerror or str(err)
    hint = {errno.ENOSPC: "free some space or choose another output directory",
            errno.EDQUOT: "free some space or choose another output directory",
            errno.EROFS: "the file system is read-only: choose another output directory",
            errno.EACCES: "no permission: choose another output directory",
            errno.EPERM: "no permission: choose another output directory",
            errno.ENOTDIR: "a part of the path is a file, not a directory",
            errno.EEXIST: "a file is in the way"}.get(err.errno, "")
    return f"cannot write {what}: {reason}" + (f" ({hint})" if hint else "")


def prepare_directory(directory: str | Path) -> Path:
    """The output directory, created if needed; OutputError when it cannot be."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise OutputError(f"output directory {directory} exists and is not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(describe_os_error(err, f"the output directory {directory}")
                          ) from None
    return directory


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clear_leftovers(directory: str | Path) -> list[Path]:
    """Deletes the temporary files of runs that died in `directory` and puts back files
    that a killed commit had set aside; returns what it deleted."""
    directory = Path(directory)
    removed = []
    for path in sorted(directory.iterdir()) if directory.is_dir() else []:
        match = _LEFTOVER.match(path.name)
        if not match or int(match["pid"]) == os.getpid() or _pid_alive(int(match["pid"])):
            continue
        final = directory / match["name"]
        if match["kind"] == "bak" and not final.exists():
            os.replace(path, final)  # the commit was killed between set-aside and rename
            continue
        if path.is_dir():
            import shutil

            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


class DirectoryCommit:
    """Files staged in one directory and moved into place together (see the module doc)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self._staged: dict[Path, Path] = {}  # final -> temporary
        self._removals: list[Path] = []
        self._count = 0

    def temporary_path(self, final_name: str) -> Path:
        """A fresh hidden name beside `final_name` for a file the caller writes."""
        self._count += 1
        return self.directory / f".{final_name}.tmp-{os.getpid()}-{self._count}"

    def add(self, final: str | Path, temporary: str | Path) -> None:
        """Registers a written temporary file to become `final` at commit."""
        self._staged[self.directory / Path(final).name] = Path(temporary)

    def write_bytes(self, final: str | Path, data: bytes) -> None:
        temporary = self.temporary_path(Path(final).name)
        try:
            with open(temporary, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(temporary, 0o666 & ~_umask())
        except OSError as err:
            temporary.unlink(missing_ok=True)
            raise OutputError(describe_os_error(err, f"{self.directory / Path(final).name}")
                              ) from None
        self.add(final, temporary)

    def write_text(self, final: str | Path, text: str) -> None:
        self.write_bytes(final, text.encode("utf-8"))

    def write_json(self, final: str | Path, value: Any) -> None:
        self.write_text(final, json.dumps(value, indent=2, ensure_ascii=False) + "\n")

    def remove(self, path: str | Path) -> None:
        """Deletes `path` at commit (it is set aside first, so a failure restores it)."""
        self._removals.append(Path(path))

    def abort(self) -> None:
        """Deletes every staged temporary file; the directory keeps its previous files."""
        for temporary in self._staged.values():
            temporary.unlink(missing_ok=True)
        self._staged.clear()

    def commit(self) -> list[Path]:
        """Moves every staged file into place and deletes the removals, all or nothing."""
        aside: list[tuple[Path, Path]] = []  # (original, where it was set aside)
        placed: list[Path] = []
        try:
            for original in sorted(set(self._staged) | set(self._removals)):
                if original.exists():
                    backup = original.with_name(f".{original.name}.bak-{os.getpid()}")
                    os.replace(original, backup)
                    aside.append((original, backup))
            for final, temporary in sorted(self._staged.items()):
                os.replace(temporary, final)
                placed.append(final)
        except OSError as err:
            for final in reversed(placed):
                os.replace(final, self._staged[final])  # back to its temporary name
            for original, backup in reversed(aside):
                os.replace(backup, original)
            self.abort()
            raise OutputError(describe_os_error(err, f"the outputs into {self.directory}")
                              + "; the output directory is as it was before") from None
        for _, backup in aside:
            backup.unlink(missing_ok=True)
        committed = sorted(self._staged)
        self._staged.clear()
        return committed
