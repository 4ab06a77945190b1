"""COCO run-length encodings, checked before pycocotools decodes them.

pycocotools trusts its input: counts that sum to less than height x width decode into
uninitialized memory (a different mask on every run), and a garbled compressed string
decodes into whatever its bytes happen to mean. Both are refused here: uncompressed counts
must be non-negative integers summing to height x width; a compressed string must decode,
by COCO's own scheme, into such counts.

The compressed form (pycocotools' rleToString): each count is written in 5-bit groups,
least significant first, as characters 48 + group, with 0x20 marking "more groups follow"
and 0x10 of the last group the sign; from the third count on, each is stored as the
difference from the count two places before it.
"""
from __future__ import annotations

from typing import Any

from data_prep.field_checks import FieldError, integer

FIELD = "segmentation.counts"


def decode_compressed(counts: str) -> list[int]:
    """The counts of a compressed RLE string; FieldError when it is not one."""
    values: list[int] = []
    position, length = 0, len(counts)
    while position < length:
        value, shift, more = 0, 0, True
        while more:
            if position >= length:
                raise FieldError(FIELD, "ends in the middle of a count (truncated or not a "
                                 "compressed RLE string)")
            group = ord(counts[position]) - 48
            if not 0 <= group < 64:
                raise FieldError(FIELD, f"holds {counts[position]!r} at character "
                                 f"{position}, which no compressed RLE string contains")
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            position += 1
            shift += 5
            if not more and group & 0x10:
                value |= -1 << shift
        if len(values) > 2:
            value += values[-2]
        values.append(value)
    return values


def run_length_counts(counts: Any, height: int, width: int) -> list[int] | str:
    """`counts` as given (a list of ints, or a compressed string) once it is known to decode
    to exactly height x width pixels; FieldError otherwise."""
    if isinstance(counts, bytes):
        try:
            counts = counts.decode("ascii")
        except UnicodeDecodeError:
            raise FieldError(FIELD, "is not ASCII, so not a compressed RLE string") from None
    if isinstance(counts, str):
        decoded, given = decode_compressed(counts), counts
    elif isinstance(counts, list):
        decoded = [integer(v, f"{FIELD}[{i}]", minimum=0) for i, v in enumerate(counts)]
        given = decoded
    else:
        raise FieldError(FIELD, f"is {type(counts).__name__}, expected a list of run lengths "
                         "or a compressed RLE string")
    negative = next((i for i, v in enumerate(decoded) if v < 0), None)
    if negative is not None:
        raise FieldError(FIELD, f"run {negative} has the negative length "
                         f"{decoded[negative]} (not a valid RLE)")
    total = sum(decoded)
    if total != height * width:
        raise FieldError(FIELD, f"covers {total} pixels but the RLE size {height}x{width} has "
                         f"{height * width}; the mask would be partly undefined")
    return given
