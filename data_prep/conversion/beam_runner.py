"""`create_tfrecords.py --runner beam`: the per-image conversion as an Apache Beam pipeline.

For data that outgrows one machine: the same `convert_image` as the local runner, run by
Beam's DirectRunner here, by the DaskRunner on a `dask.distributed` cluster, and by
Dataflow, Flink or Spark through `--beam_options`, writing the same shard names with the
same all-or-nothing commit. Image i goes to shard i mod num_shards, in input order, so a
run's shards are the same whatever the runner and its parallelism; they differ from the
local runner's only where images were skipped (it deals the written records round-robin).
The set of records and the summary counts are the same.

The pipeline is one chain with a single end, no side inputs and no tagged outputs, because
the DaskRunner (Beam 2.77) computes only the last transform of a pipeline and hands every
output of a DoFn to each consumer: staged input files -> images -> convert -> group by
shard -> write each shard and its images' statistics. The driver then checks that every
image came back exactly once, so a runner that skips part of a pipeline fails the run
instead of committing a partial one.

Everything is staged in a hidden directory inside output_dir: the inputs, the shards, the
per-image statistics (JSON lines) and the problems of an image that stopped the run. So a
cluster's workers must see output_dir (a shared filesystem) and have this project
installed (BUILD.md: the Beam environment). Workers create files only inside directories
the driver made, and a failed run renames the staging directory away before deleting it,
so a worker still busy with a cancelled task cannot put anything back into output_dir.

apache-beam needs protobuf<7 and pillow<13, so it lives in its own environment
(requirements-beam.txt, `make test-beam`), not in the TensorFlow one.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import pickle
import shlex
import shutil
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Tuple

try:
    import apache_beam as beam
except ModuleNotFoundError as err:  # the TensorFlow environment: say where Beam lives
    raise ModuleNotFoundError(
        "--runner beam needs apache-beam, which cannot share the TensorFlow environment "
        "(it requires protobuf<7): run `make venv-beam protos-beam`, then "
        ".venv-beam/bin/python data_prep/create_tfrecords.py ... --runner beam",
        name=err.name) from err
from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    StandardOptions,
    WorkerOptions,
)
from apache_beam.runners.runner import PipelineState

from core.directory_commit import DirectoryCommit, describe_os_error
from core.errors import OutputError, UsageError, UserError
from data_prep.annotations import ImageAnnotation, Problem
from data_prep.conversion.image_record import (
    ConversionError,
    ConvertOptions,
    ImageResult,
    convert_image,
)
from data_prep.conversion.summary import SplitSummary
from records.label_map import LabelMap
from records.tfds_metadata import count_records_fast
from records.tfrecord_io import SHARD_PATTERN, frame_record, shard_paths

log = logging.getLogger(__name__)
# Staged input files: at most MAX_INPUT_FILES of them, each of MIN_ to MAX_IMAGES_PER_INPUT
# images. A file is a unit of work where the runner does not split (the DaskRunner, where
# Reshuffle does nothing and each file is one partition), so a small data set is still
# spread over the workers and a large one does not flood the scheduler with tasks: each
# partition costs the DaskRunner a tenth of a second or so (1,000 images on 2 workers:
# 29 s in 250 partitions, 11-15 s in 16 to 32).
MAX_INPUT_FILES = 32
MIN_IMAGES_PER_INPUT, MAX_IMAGES_PER_INPUT = 8, 500
# DirectRunner mode for workers > 1 when --beam_options names none: worker processes convert
# in parallel, while in_memory runs one thread whatever direct_num_workers says.
PARALLEL_MODE = "multi_processing"
DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"
# --runner=NAME shorthands Beam itself does not know (it takes the class's full path)
RUNNER_ALIASES = {"DaskRunner": DASK_RUNNER, "dask": DASK_RUNNER}


class FatalImageError(RuntimeError):
    """Raised in a worker to fail the pipeline on an error Problem without --skip_errors.

    One string argument, so Beam can re-raise it with the step name added; the driver then
    reads the staged problems and raises the same ConversionError as the local runner.
    """


class RunnerError(UserError):
    """The chosen Beam runner cannot start this pipeline, or did not run all of it."""


@dataclasses.dataclass
class ImageStats:
    """What the summary needs of one ImageResult, without the record: JSON per line."""

    index: int
    written: bool
    class_counts: dict
    num_crowd: int
    problems: list
    dropped_reason: str | None

    @classmethod
    def of(cls, index: int, result: ImageResult) -> "ImageStats":
        return cls(index, result.serialized is not None, dict(result.class_counts),
                   result.num_crowd, [dataclasses.asdict(p) for p in result.problems],
                   result.dropped_reason)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    def to_result(self) -> ImageResult:
        # SplitSummary only asks whether a record was written, so an empty placeholder stands
        # in for the bytes, which went to the shards.
        return ImageResult(b"" if self.written else None, Counter(self.class_counts),
                           num_crowd=self.num_crowd,
                           problems=[Problem(**p) for p in self.problems],
                           dropped_reason=self.dropped_reason)


def write_new_file(directory: str, name: str, data: bytes | Iterable[bytes]) -> None:
    """Writes directory/name whole (a retried task rewrites it), creating no directory: once
    the driver has renamed a failed run's staging directory away, this fails instead."""
    tmp = os.path.join(directory, f".{name}.{uuid.uuid4().hex}.part")
    try:
        with open(tmp, "xb") as f:
            if isinstance(data, bytes):
                f.write(data)
            else:
                f.writelines(data)
        os.replace(tmp, os.path.join(directory, name))
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# (shard, (image index, serialized record or None, ImageStats JSON))
Converted = Tuple[int, Tuple[int, Optional[bytes], str]]


class ConvertImage(beam.DoFn):
    """(index, pickled ImageAnnotation) -> (shard, (index, record or None, ImageStats JSON)).

    The label map and options come in the constructor: pickled once with the DoFn rather
    than sent with every element.
    """

    def __init__(self, label_map: LabelMap, options: ConvertOptions, source: str,
                 fatal_dir: str, num_shards: int):
        super().__init__()
        self.label_map = label_map
        self.options = options
        self.source = source
        self.fatal_dir = fatal_dir
        self.num_shards = num_shards

    def process(self, element: tuple[int, bytes]) -> Iterator[Converted]:
        index, payload = element
        item: ImageAnnotation = pickle.loads(payload)
        result = convert_image(item, self.label_map, self.options, self.source)
        errors = [p for p in result.problems if p.is_error]
        if errors and not self.options.skip_errors:
            # Staged under the image's index: a retried bundle rewrites the same file.
            write_new_file(self.fatal_dir, f"{index:010d}.json", json.dumps(
                [dataclasses.asdict(p) for p in errors]).encode())
            raise FatalImageError(str(ConversionError(errors)))
        yield index % self.num_shards, (index, result.serialized,
                                        ImageStats.of(index, result).to_json())


class WriteShard(beam.DoFn):
    """(shard, its images) -> the shard's file and its images' statistics, in input order.

    Both files are written whole under their final names in the staging directory, so a
    retried bundle replaces them rather than adding to them. A shard's records are held in
    memory to be put in input order: choose --num_shards so that one fits in a worker.
    """

    def __init__(self, staging: str, shard_names: list[str]):
        super().__init__()
        self.staging = staging
        self.shard_names = shard_names

    def process(self, element: tuple[int, Iterable]) -> Iterator[tuple[int, int]]:
        shard, values = element
        values = sorted(values, key=lambda value: value[0])
        write_new_file(self.staging, self.shard_names[shard],
                       (frame_record(record) for _, record, _ in values if record is not None))
        write_new_file(os.path.join(self.staging, "stats"), f"shard-{shard:05d}.jsonl",
                       (f"{line}\n".encode("utf-8") for _, _, line in values))
        yield shard, sum(record is not None for _, record, _ in values)


class BeamShards:
    """A split's shards staged by the pipeline, committed like records.ShardedWriter's.

    The staging directory is hidden inside output_dir, so the final rename stays on one
    filesystem and a failed or interrupted run leaves earlier outputs as they were.
    """

    def __init__(self, output_dir: str | Path, name: str, count: int):
        self.output_dir = Path(output_dir)
        self.name = name
        self.count = count
        self.paths = shard_paths(self.output_dir, name, count)
        # a name core/directory_commit.py clears when the run that made it was killed
        self.staging = self.output_dir / f".{name}-beam.tmp-{os.getpid()}"
        self.fatal_dir = self.staging / "fatal"
        self.stats_dir = self.staging / "stats"
        try:
            shutil.rmtree(self.staging, ignore_errors=True)
            for directory in (self.staging, self.fatal_dir, self.stats_dir):
                directory.mkdir()
        except OSError as err:
            raise OutputError(describe_os_error(err, f"the staging directory {self.staging}")
                              ) from None
        self.removed_stale: list[Path] = []

    def write_inputs(self, images: Sequence[ImageAnnotation]) -> list[str]:
        """Stages the images as files of (index, pickle) pairs; returns their paths.

        The pipeline creates only these paths: images put into beam.Create become part of
        the pipeline graph, which Beam pickles and bz2-compresses several times while
        translating it (measured slower than the conversion) and which runners cap in size.
        """
        inputs = self.staging / "inputs"
        inputs.mkdir()
        per_file = min(MAX_IMAGES_PER_INPUT,
                       max(MIN_IMAGES_PER_INPUT, math.ceil(len(images) / MAX_INPUT_FILES)))
        paths = []
        for start in range(0, len(images), per_file):
            chunk = [(i, pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL))
                     for i, item in enumerate(images[start:start + per_file], start)]
            path = inputs / f"images-{start:010d}.pkl"
            path.write_bytes(pickle.dumps(chunk, protocol=pickle.HIGHEST_PROTOCOL))
            paths.append(str(path))
        return paths

    def read_stats(self, expected: int) -> list[ImageStats]:
        """Every image's statistics, in input order (as the local runner adds them).

        RunnerError unless each of the `expected` images came back exactly once: a runner
        that leaves out part of the pipeline must not commit a partial split.
        """
        stats = []
        for path in sorted(self.stats_dir.glob("shard-*.jsonl")):
            with open(path, encoding="utf-8") as f:
                stats.extend(ImageStats(**json.loads(line)) for line in f if line.strip())
        stats.sort(key=lambda s: s.index)
        if [s.index for s in stats] != list(range(expected)):
            seen = len({s.index for s in stats})
            raise RunnerError(
                f"split {self.name!r}: the Beam runner returned {len(stats)} results for "
                f"{seen} of the {expected} images (it did not run this pipeline as "
                "written); nothing was written")
        return stats

    def fatal_problems(self) -> list[Problem]:
        """The error Problems that stopped the pipeline, in input order."""
        problems = []
        for path in sorted(self.fatal_dir.glob("*.json")):
            problems.extend(Problem(**p) for p in json.loads(path.read_text(encoding="utf-8")))
        return problems

    def stage(self, commit: DirectoryCommit) -> None:
        """Adds every staged shard, and the removal of stale shards, to `commit`."""
        for final in self.paths:
            staged = self.staging / final.name
            if not staged.exists():  # a shard no image was dealt to
                staged.touch()
            with open(staged, "rb") as f:
                os.fsync(f.fileno())
            commit.add(final, staged)
        self.removed_stale = self._stale_shards()
        for path in self.removed_stale:
            commit.remove(path)

    def shard_lengths(self) -> list[int]:
        return [count_records_fast(self.staging / final.name) for final in self.paths]

    def staged_bytes(self) -> int:
        return sum((self.staging / final.name).stat().st_size for final in self.paths)

    def abort(self) -> None:
        """Deletes the staging directory; earlier outputs are untouched.

        It is renamed first: a worker still running a cancelled task reaches its files
        only by their paths under the old name, so it can create nothing in output_dir
        once the rename is done, even while the deletion runs.
        """
        if not self.staging.exists():
            return
        doomed = self.staging.with_name(f"{self.staging.name}-{uuid.uuid4().int % 10**9}")
        try:
            os.replace(self.staging, doomed)
        except OSError:
            doomed = self.staging
        shutil.rmtree(doomed, ignore_errors=True)

    def _stale_shards(self) -> list[Path]:
        keep = set(self.paths)
        stale = []
        for path in self.output_dir.glob("*-of-*.tfrecord"):
            match = SHARD_PATTERN.match(path.name)
            if match and match["name"] == self.name and path not in keep:
                stale.append(path)
        return sorted(stale)


def pipeline_options(beam_options: str, workers: int) -> PipelineOptions:
    """--beam_options parsed like a command line; the DirectRunner with `workers` processes
    unless they say otherwise. On the DaskRunner each staged input file is one partition
    unless --dask_npartitions or --dask_partition_size say otherwise."""
    try:
        flags = shlex.split(beam_options)
    except ValueError as err:
        raise UsageError(f"--beam_options {beam_options!r}: {err}") from None
    given = {flag.split("=", 1)[0].lstrip("-") for flag in flags if flag.startswith("--")}
    options = PipelineOptions(flags)
    standard = options.view_as(StandardOptions)
    standard.runner = RUNNER_ALIASES.get(standard.runner, standard.runner or "DirectRunner")
    if standard.runner == DASK_RUNNER:
        _dask_options()  # registers the --dask_* flags before anything reads them
        if not given & {"dask_npartitions", "dask_partition_size"}:
            options = PipelineOptions(flags + ["--dask_partition_size=1"])
            options.view_as(StandardOptions).runner = DASK_RUNNER
        return options
    if not is_direct(options):
        return options
    if "default_sdk_harness_log_level" not in given:
        # Local worker processes otherwise print every INFO line of their gRPC harness.
        options.view_as(WorkerOptions).default_sdk_harness_log_level = "ERROR"
    direct = options.view_as(DirectOptions)
    if "direct_running_mode" not in given:
        direct.direct_running_mode = PARALLEL_MODE if workers > 1 else "in_memory"
    if "direct_num_workers" not in given:  # in_memory runs one worker whatever it is told
        direct.direct_num_workers = 1 if direct.direct_running_mode == "in_memory" else workers
    return options


def _dask_options() -> type:
    """The DaskRunner's options class; RunnerError when dask is not installed."""
    try:
        from apache_beam.runners.dask.dask_runner import DaskOptions
    except ImportError as err:
        raise RunnerError(f"the DaskRunner needs dask and distributed ({err}): install "
                          "requirements-beam.txt (make venv-beam)") from None
    return DaskOptions


def is_direct(options: PipelineOptions) -> bool:
    return options.view_as(StandardOptions).runner in ("DirectRunner", "direct")


def describe(options: PipelineOptions) -> str:
    """The runner, and for the DirectRunner how it runs, for the start-up line."""
    runner = options.view_as(StandardOptions).runner
    if runner == DASK_RUNNER:
        dask = options.view_as(_dask_options())
        where = dask.address or dask.scheduler_file or "a new local Dask cluster"
        return f"DaskRunner ({where})"
    if not is_direct(options):
        return runner
    direct = options.view_as(DirectOptions)
    return (f"{runner} ({direct.direct_running_mode}, {direct.direct_num_workers} "
            "worker(s))")


def read_input_file(path: str) -> list[tuple[int, bytes]]:
    with open(path, "rb") as f:
        return pickle.load(f)


def build_pipeline(pipeline: beam.Pipeline, input_files: list[str], label_map: LabelMap,
                   options: ConvertOptions, source: str, shards: BeamShards) -> None:
    """Staged images -> convert -> group by shard -> shards and statistics in the staging
    directory: one chain, whose last step depends on every other.

    Images stay pickled bytes between steps, so Beam moves them with its bytes coder.
    """
    _ = (pipeline
         | "InputFiles" >> beam.Create(input_files, reshuffle=False)
         | "Images" >> beam.FlatMap(read_input_file).with_output_types(Tuple[int, bytes])
         | "Spread" >> beam.Reshuffle()  # else one worker converts a whole input file
         | "Convert" >> beam.ParDo(ConvertImage(label_map, options, source,
                                                str(shards.fatal_dir), shards.count)
                                   ).with_output_types(Converted)
         | "GroupByShard" >> beam.GroupByKey()
         | "WriteShards" >> beam.ParDo(WriteShard(str(shards.staging),
                                                  [p.name for p in shards.paths])))


def _run(pipeline: beam.Pipeline, options: PipelineOptions, split: str,
         shards: BeamShards) -> None:
    """Runs the pipeline to its end; ConversionError when an image stopped it.

    Some runners (the DirectRunner) run the whole pipeline inside run(), others (the
    DaskRunner, Dataflow) return at once and fail in wait_until_finish().
    """
    runner = describe(options)
    result = None
    try:
        result = pipeline.run()
        state = result.wait_until_finish()
    except Exception as err:
        if result is not None:
            _cancel(result)
        fatal = shards.fatal_problems()
        if fatal:
            raise ConversionError(fatal) from err
        if result is None and isinstance(err, (OSError, TimeoutError)):
            # e.g. no Dask scheduler at the address given
            raise RunnerError(f"cannot start the Beam pipeline on {runner}: {err}") from None
        raise
    finally:
        client = getattr(result, "client", None)  # the DaskRunner's connection
        if client is not None:
            client.close()
    if state not in (None, PipelineState.DONE):  # some runners return rather than raise
        raise RunnerError(f"the Beam pipeline of split {split!r} ended {state} on {runner}")


def _cancel(result) -> None:
    """Asks the runner to drop the failed pipeline's queued work (not all runners can)."""
    try:
        result.cancel()
    except Exception:  # noqa: BLE001  cancelling is a courtesy; the error is reported
        log.debug("the Beam runner could not cancel the failed pipeline", exc_info=True)


def write_split(images: Sequence[ImageAnnotation], label_map: LabelMap, output_dir: str,
                split: str, num_shards: int, workers: int, options: ConvertOptions,
                summary: SplitSummary, progress: bool = True,
                beam_options: str = "") -> BeamShards:
    """local_runner.write_split's contract on Beam: shards staged and left uncommitted.

    On an error Problem without --skip_errors the pipeline fails, the staging directory is
    deleted and ConversionError is raised with that Problem, as the local runner does.
    """
    start = time.perf_counter()
    opts = pipeline_options(beam_options, workers)
    shards = BeamShards(output_dir, split, num_shards)
    try:
        if progress:  # Beam reports no per-image progress to the driver
            log.info("%s: converting %d image(s) on Beam's %s", split, len(images),
                     describe(opts))
        try:
            pipeline = beam.Pipeline(options=opts)
        except (ValueError, ImportError) as err:  # an unknown runner, or one not installed
            raise RunnerError(f"--beam_options: {err}") from None
        build_pipeline(pipeline, shards.write_inputs(images), label_map, options,
                       summary.source, shards)
        _run(pipeline, opts, split, shards)
        for stats in shards.read_stats(len(images)):
            summary.add_image_result(stats.to_result())
    except BaseException:
        shards.abort()
        raise
    summary.seconds = time.perf_counter() - start
    return shards
