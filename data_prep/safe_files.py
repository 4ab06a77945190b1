"""Opening the files that annotations name, safely: regular files only, within size limits.

A FIFO named like an image would block the converter forever, a link to /dev/zero would be
read without end, and a PNG whose header announces gigapixels would be decoded into memory
before Pillow's own check (a warning, then a DecompressionBombError traceback) says
anything. Every image and mask file, of every format, is opened through here:
`read_regular_file` refuses anything but a regular file and files over
`FileLimits.max_file_bytes` (`--max_file_mb`); `open_image` refuses images over
`FileLimits.max_pixels` (`--max_image_pixels`) from their header, before decoding.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import stat
from typing import Iterator

from PIL import Image, UnidentifiedImageError

from core.errors import UserError

DEFAULT_MAX_FILE_BYTES = 1024 * 2 ** 20  # 1 GiB: a 100-megapixel 16-bit PNG is ~600 MB
DEFAULT_MAX_PIXELS = 178_956_970  # what Pillow refuses as a decompression bomb by default


@dataclasses.dataclass(frozen=True)
class FileLimits:
    """How large an image or mask file may be, on disk and decoded."""

    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS


class ImageFileError(UserError, ValueError):
    """The image file is missing, unreadable or corrupt; `reason` is a summary code."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def read_regular_file(path: str, limits: FileLimits, what: str = "image file") -> bytes:
    """The bytes of `path`, which must be a regular file (links to one are fine) of at most
    limits.max_file_bytes. Opened without blocking, so a FIFO is refused, not waited on."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ImageFileError("missing_image", f"{what} {path} does not exist") from None
    except ValueError:  # an embedded NUL byte
        raise ImageFileError("bad_file_name", f"{what} name {path!r} holds a NUL byte"
                             ) from None
    except OSError as err:
        raise ImageFileError("unreadable_image", f"{what} {path} cannot be read: "
                             f"{err.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = ("a directory" if stat.S_ISDIR(info.st_mode) else "a FIFO (named pipe)"
                    if stat.S_ISFIFO(info.st_mode) else "a device" if stat.S_ISCHR(
                        info.st_mode) or stat.S_ISBLK(info.st_mode) else "not a regular file")
            raise ImageFileError("not_a_file", f"{what} {path} is {kind}; only regular "
                                 "files are read")
        if info.st_size > limits.max_file_bytes:
            raise ImageFileError("file_too_large", f"{what} {path} has {info.st_size:,} "
                                 f"bytes, more than the limit of {limits.max_file_bytes:,} "
                                 "(raise it with --max_file_mb)")
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read(limits.max_file_bytes + 1)[:limits.max_file_bytes]
    except OSError as err:
        raise ImageFileError("unreadable_image", f"{what} {path} cannot be read: "
                             f"{err.strerror}") from None
    finally:
        os.close(fd)


@contextlib.contextmanager
def open_image(data: bytes, path: str, limits: FileLimits, what: str = "image file"
               ) -> Iterator[Image.Image]:
    """PIL's image of `data`, refused when its header announces more than
    limits.max_pixels pixels (checked before anything is decoded)."""
    try:
        with _pillow_bomb_check_off(), Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if width * height > limits.max_pixels:
                raise ImageFileError("too_many_pixels", f"{what} {path} is {width}x{height} "
                                     f"= {width * height:,} pixels, more than the limit of "
                                     f"{limits.max_pixels:,} (raise it with "
                                     "--max_image_pixels)")
            yield img
    except ImageFileError:
        raise
    except UnidentifiedImageError:
        raise ImageFileError("corrupt_image", f"{what} {path} cannot be decoded: truncated "
                             "or corrupt (not an image file Pillow can identify)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ImageFileError("corrupt_image", f"{what} {path} cannot be decoded: "
                             f"truncated or corrupt ({err})") from None


@contextlib.contextmanager
def _pillow_bomb_check_off() -> Iterator[None]:
    """Pillow's own bomb check off: open_image applies the configured limit instead."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def is_regular_file(path: str) -> bool:
    """Whether `path` is a regular file (following links), without opening it."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False
