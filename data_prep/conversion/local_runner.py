"""The local runner: a split converted by a pool of processes on this machine.

Workers are processes (forked, so nothing is re-imported) that each return one serialized
record per image; the parent writes them round-robin into the shards as they arrive, in input
order, so the output is the same whatever the number of workers and memory stays flat
however large the data set.
"""
from __future__ import annotations

import multiprocessing
import time
from typing import Iterable, Sequence

from data_prep.annotations import ImageAnnotation
from data_prep.conversion.image_record import (
    ConversionError,
    ConvertOptions,
    ImageResult,
    convert_image,
)
from data_prep.conversion.summary import SplitSummary
from records.label_map import LabelMap
from records.tfrecord_io import ShardedWriter

# Worker state, set once per process by the pool initializer instead of pickled per image.
_WORKER_ARGS: tuple | None = None


def _init_worker(label_map: LabelMap, options: ConvertOptions, source: str) -> None:
    global _WORKER_ARGS
    _WORKER_ARGS = (label_map, options, source)


def _convert_in_worker(item: ImageAnnotation) -> ImageResult:
    return convert_image(item, *_WORKER_ARGS)


def _results(images: Sequence[ImageAnnotation], workers: int, label_map: LabelMap,
             options: ConvertOptions, source: str) -> Iterable[ImageResult]:
    if workers <= 1 or len(images) < 2:
        for item in images:
            yield convert_image(item, label_map, options, source)
        return
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    chunksize = max(1, min(32, len(images) // (workers * 8)))
    with context.Pool(workers, initializer=_init_worker,
                      initargs=(label_map, options, source)) as pool:
        yield from pool.imap(_convert_in_worker, images, chunksize=chunksize)


def write_split(images: Sequence[ImageAnnotation], label_map: LabelMap, output_dir: str,
                split: str, num_shards: int, workers: int, options: ConvertOptions,
                summary: SplitSummary, progress: bool = True) -> ShardedWriter:
    """Converts `images` into `split`'s shards, left uncommitted for the caller.

    The caller commits every split's writer once all splits succeeded, so a run either
    replaces all of its outputs or none. On a fatal problem this split's temporary shards
    are deleted and ConversionError is raised.
    """
    from tqdm import tqdm  # imported here: only the CLI path needs it

    start = time.perf_counter()
    writer = ShardedWriter(output_dir, split, num_shards)
    bar = tqdm(total=len(images), unit="img", desc=split, disable=not progress,
               dynamic_ncols=True)
    try:
        for result in _results(images, workers, label_map, options, source=summary.source):
            bar.update(1)
            errors = [p for p in result.problems if p.is_error]
            if errors and not options.skip_errors:
                raise ConversionError(errors)
            summary.add_image_result(result)
            if result.serialized is not None:
                writer.write(result.serialized)
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
    summary.seconds = time.perf_counter() - start
    return writer
