"""TFRecord files without TensorFlow: framing, sharded atomic writing and checked reading.

The format is TensorFlow's (tensorflow/core/lib/io/record_writer.cc): per record a little-endian
uint64 length, the masked CRC-32C of those 8 bytes, the data, and the masked CRC-32C of the
data. Doing it here keeps TensorFlow's start-up out of the converters, which on a 2-core
machine is most of a small conversion's wall time; `tf.data.TFRecordDataset` reads the files.
"""
from __future__ import annotations

import glob
import os
import re
import struct
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

import google_crc32c

from core.directory_commit import DirectoryCommit, describe_os_error, prepare_directory
from core.errors import OutputError, UserError

_MASK_DELTA = 0xA282EAD8
_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
SHARD_PATTERN = re.compile(r"^(?P<name>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.tfrecord$")
_REMOTE = re.compile(r"^[a-z][a-z0-9+.-]*://")  # gs://, s3://, hdfs://: through tf.io.gfile


def is_remote(path: str | Path) -> bool:
    return bool(_REMOTE.match(str(path)))


def _gfile():
    """TensorFlow's file system layer, imported only for remote paths (it costs seconds)."""
    import tensorflow as tf

    return tf.io.gfile


class CorruptRecordError(UserError, ValueError):
    """A TFRecord file is truncated or fails its checksum."""


class NoRecordFilesError(UserError, FileNotFoundError):
    """An input path names no TFRecord file."""


def masked_crc32c(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
    """Returns `data` framed as one TFRecord."""
    length = _LENGTH.pack(len(data))
    return b"".join((length, _CRC.pack(masked_crc32c(length)), data,
                     _CRC.pack(masked_crc32c(data))))


def shard_name(name: str, index: int, count: int) -> str:
    """`train-00003-of-00008.tfrecord`: the naming the OD API and Model Garden use."""
    return f"{name}-{index:05d}-of-{count:05d}.tfrecord"


def shard_glob(output_dir: str | Path, name: str) -> str:
    """Glob pattern matching every shard of split `name`, for input_path fields."""
    return str(Path(output_dir) / f"{name}-?????-of-?????.tfrecord")


def shard_paths(output_dir: Path, name: str, count: int) -> list[Path]:
    """The final paths of a split's `count` shards; creates output_dir. Shared by the local
    writer and the Beam runner, so both name and check shards alike."""
    if count < 1:
        raise ValueError(f"the number of shards must be at least 1, got {count}")
    prepare_directory(output_dir)
    return [output_dir / shard_name(name, i, count) for i in range(count)]


class ShardedWriter:
    """Writes records round-robin into `count` shards, all-or-nothing.

    Shards are written under hidden temporary names in the output directory and moved to
    their final names only at commit (core/directory_commit.py), so a failed or interrupted
    run leaves neither half-written shards nor a mix of old and new ones. Shards of the same
    split with another shard count, left by an earlier run, are removed at commit so that
    `NAME-*.tfrecord` globs stay right. `stage()` adds all of it to a larger commit (the
    converter commits every split, summary and label map together).
    """

    def __init__(self, output_dir: str | Path, name: str, count: int):
        self.output_dir = Path(output_dir)
        self.name = name
        self.count = count
        self.paths = shard_paths(self.output_dir, name, count)
        namer = DirectoryCommit(self.output_dir)
        self._tmp_paths = [namer.temporary_path(p.name) for p in self.paths]
        self._files: list[BinaryIO] = []
        try:
            for tmp in self._tmp_paths:
                self._files.append(open(tmp, "wb"))
        except OSError as err:
            self.abort()
            raise OutputError(describe_os_error(err, f"shards into {self.output_dir}")
                              ) from None
        self.records_per_shard = [0] * count
        self._next = 0
        self.removed_stale: list[Path] = []

    def write(self, data: bytes, shard: int | None = None) -> None:
        """Appends one serialized record; by default to the next shard in turn."""
        if shard is None:
            shard = self._next
            self._next = (self._next + 1) % self.count
        try:
            self._files[shard].write(frame_record(data))
        except OSError as err:
            raise OutputError(describe_os_error(err, str(self.paths[shard]))) from None
        self.records_per_shard[shard] += 1

    def shard_lengths(self) -> list[int]:
        return list(self.records_per_shard)

    def staged_bytes(self) -> int:
        """The size of the shards written so far (all of it once staged)."""
        return sum(p.stat().st_size for p in self._tmp_paths if p.exists())

    def stale_shards(self) -> list[Path]:
        """This split's shards of another shard count, left by an earlier run."""
        keep = set(self.paths)
        stale = []
        for path in sorted(self.output_dir.glob(f"{glob.escape(self.name)}-*-of-*.tfrecord")):
            match = SHARD_PATTERN.match(path.name)
            if match and match["name"] == self.name and path not in keep:
                stale.append(path)
        return stale

    def stage(self, commit: DirectoryCommit) -> None:
        """Closes every shard and adds it, and the removal of stale shards, to `commit`."""
        try:
            for f in self._files:
                f.flush()
                os.fsync(f.fileno())
                f.close()
        except OSError as err:
            raise OutputError(describe_os_error(err, f"shards into {self.output_dir}")
                              ) from None
        self._files = []
        for tmp, final in zip(self._tmp_paths, self.paths):
            commit.add(final, tmp)
        self.removed_stale = self.stale_shards()
        for path in self.removed_stale:
            commit.remove(path)

    def commit(self) -> list[Path]:
        """Closes every shard and moves it to its final name."""
        commit = DirectoryCommit(self.output_dir)
        self.stage(commit)
        commit.commit()
        return self.paths

    def abort(self) -> None:
        """Closes and deletes every temporary shard; earlier outputs are untouched."""
        for f in self._files:
            f.close()
        self._files = []
        for tmp in self._tmp_paths:
            tmp.unlink(missing_ok=True)

    def __enter__(self) -> "ShardedWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def read_records(path: str | Path, verify: bool = True) -> Iterator[bytes]:
    """Yields the serialized records of one TFRecord file, checking framing and CRCs."""
    path = str(path)
    with (_gfile().GFile(path, "rb") if is_remote(path) else open(path, "rb")) as f:
        index = 0
        while True:
            offset = f.tell()
            header = f.read(12)
            if not header:
                return
            if len(header) < 12:
                raise CorruptRecordError(f"{path}: record {index} at byte {offset} is truncated")
            length_bytes = header[:8]
            if verify and _CRC.unpack(header[8:])[0] != masked_crc32c(length_bytes):
                raise CorruptRecordError(
                    f"{path}: record {index} at byte {offset}: length checksum mismatch "
                    "(not a TFRecord file, or corrupt)")
            (length,) = _LENGTH.unpack(length_bytes)
            data = f.read(length)
            footer = f.read(4)
            if len(data) < length or len(footer) < 4:
                raise CorruptRecordError(f"{path}: record {index} at byte {offset} is truncated")
            if verify and _CRC.unpack(footer)[0] != masked_crc32c(data):
                raise CorruptRecordError(
                    f"{path}: record {index} at byte {offset}: data checksum mismatch")
            yield data
            index += 1


def expand_paths(patterns: str | Iterable[str]) -> list[str]:
    """Expands globs (comma-separated or a list, as in OD API input_path fields) to files.

    Raises NoRecordFilesError (a FileNotFoundError) naming the pattern that matches nothing,
    so an empty or mistyped input path fails before any work starts.
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    paths: list[str] = []
    for pattern in patterns:
        for part in filter(None, (p.strip() for p in pattern.split(","))):
            if is_remote(part):
                matched = sorted(_gfile().glob(part))
            else:
                matched = sorted(glob.glob(part)) if glob.has_magic(part) else [part]
                matched = [m for m in matched if os.path.isfile(m)]
            if not matched:
                raise NoRecordFilesError(f"no TFRecord files match {part!r}")
            paths.extend(matched)
    if not paths:
        raise NoRecordFilesError("no TFRecord input path given")
    return paths
