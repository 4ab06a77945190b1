"""The local runner: a split converted by a pool of processes on this machine.

Workers are processes started from a fork server (a fresh interpreter that imported the
converter once), not forked from the command: a forked worker would inherit the command's
whole heap, every annotation of the data set, and copy it page by page as Python touches
it (10,000 COCO images: 5.6 GB more over two workers). Each returns one serialized record
per image; the parent writes them round-robin into the shards as they arrive, in input
order, so the output is the same whatever the number of workers and memory stays flat
however large the data set.
"""
from __future__ import annotations

import multiprocessing
import signal
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Iterable, Sequence

from core.errors import UserError
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
IN_FLIGHT_PER_WORKER = 4  # chunks queued per worker: enough to keep it busy, memory flat
ISOLATED_TIMEOUT = 300.0  # seconds an image may take when re-run alone to find a crash
START_METHOD = "forkserver"  # where multiprocessing has it; "fork" elsewhere (see above)


class WorkerDiedError(UserError):
    """A worker process died (a signal, the out-of-memory killer) while converting."""


def _init_worker(label_map: LabelMap, options: ConvertOptions, source: str) -> None:
    global _WORKER_ARGS
    _WORKER_ARGS = (label_map, options, source)


def _convert_chunk(chunk: list[ImageAnnotation]) -> list[ImageResult]:
    return [convert_image(item, *_WORKER_ARGS) for item in chunk]


def _context():
    methods = multiprocessing.get_all_start_methods()
    method = START_METHOD if START_METHOD in methods else ("fork" if "fork" in methods
                                                           else None)
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload([__name__])
    return context


def _exit_description(code: int | None) -> str:
    if code is None:
        return f"did not finish within {ISOLATED_TIMEOUT:.0f} s"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        oom = " (SIGKILL is what the kernel's out-of-memory killer sends)" \
            if -code == signal.SIGKILL else ""
        return f"was killed by {name}{oom}"
    return f"exited with code {code}"


def _alone(item: ImageAnnotation, args: tuple) -> int | None:
    """Converts one image in a process of its own; its exit code (None: it hung)."""
    process = _context().Process(target=convert_image, args=(item, *args), daemon=True)
    process.start()
    process.join(ISOLATED_TIMEOUT)
    if process.is_alive():
        process.kill()
        process.join()
        return None
    return process.exitcode


def _worker_died(candidates: list[ImageAnnotation], args: tuple) -> WorkerDiedError:
    """Re-runs each image that was being converted when a worker died, alone, to name the
    one that kills its process."""
    for item in candidates:
        code = _alone(item, args)
        if code != 0:
            return WorkerDiedError(
                f"{args[2]}: image {item.image_id} ({item.file_name!r}): the converter "
                f"process {_exit_description(code)} while converting it; the run stopped "
                "and wrote nothing. Check the image file and its annotations (or the "
                "machine's free memory), then convert again")
    names = ", ".join(repr(item.file_name) for item in candidates[:10])
    return WorkerDiedError(f"{args[2]}: a converter process died (killed from outside, or "
                           f"out of memory?) while converting one of: {names}; none of them "
                           "kills a process when converted alone. The run stopped and wrote "
                           "nothing; convert again")


def _results(images: Sequence[ImageAnnotation], workers: int, label_map: LabelMap,
             options: ConvertOptions, source: str) -> Iterable[ImageResult]:
    """Each image's result, in input order. workers <= 0 converts in this process (for
    tests); otherwise worker processes do, and one that dies stops the run with the image
    it was converting named, instead of hanging the pool."""
    args = (label_map, options, source)
    if workers <= 0:
        for item in images:
            yield convert_image(item, *args)
        return
    size = max(1, min(32, len(images) // (workers * 8)))
    chunks = [list(images[i:i + size]) for i in range(0, len(images), size)]
    pool = ProcessPoolExecutor(workers, mp_context=_context(), initializer=_init_worker,
                               initargs=args)
    pending: deque = deque()
    try:
        submitted = 0
        while submitted < len(chunks) or pending:
            while submitted < len(chunks) and len(pending) < workers * IN_FLIGHT_PER_WORKER:
                pending.append((chunks[submitted], pool.submit(_convert_chunk,
                                                               chunks[submitted])))
                submitted += 1
            chunk, future = pending.popleft()
            try:
                results = future.result()
            except BrokenProcessPool:
                in_flight = chunk + [item for other, _ in pending for item in other]
                raise _worker_died(in_flight, args) from None
            yield from results
    finally:  # also when the caller stops early (an error): queued chunks are dropped
        pool.shutdown(wait=True, cancel_futures=True)


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
