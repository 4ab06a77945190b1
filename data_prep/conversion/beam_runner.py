"""`create_tfrecords.py --runner beam`: the per-image conversion as an Apache Beam pipeline.

For data that outgrows one machine: the same `convert_image` as the local runner, run by
Beam's DirectRunner here and by Dataflow, Flink or Spark through `--beam_options`, writing
the same shard names with the same all-or-nothing commit. Beam decides which record goes to
which shard, so shard contents and order differ from the local runner's; the set of records
and the summary counts are the same.

Everything is staged in a hidden directory inside output_dir: the shards (written by
`WriteToTFRecord`), per-image statistics for the summary (JSON lines), and the problems of an
image that stopped the run. So a cluster's workers must see output_dir (a shared
filesystem) and have this project installed (`pip install .`, e.g. through a custom
container); the DirectRunner's worker processes use this environment, where `make
venv-beam` installed it.

apache-beam needs protobuf<7 and pillow<13, so it lives in its own environment
(requirements-beam.txt, `make test-beam`), not in the TensorFlow one.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import shlex
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Iterator, Sequence, Tuple

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

from core.atomic_io import write_json_atomic
from core.directory_commit import DirectoryCommit, describe_os_error
from core.errors import OutputError
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
from records.tfrecord_io import SHARD_PATTERN, shard_paths

log = logging.getLogger(__name__)
SHARD_TEMPLATE = "-SSSSS-of-NNNNN"  # shard_name()'s NAME-00000-of-00008 numbering
STATS_TAG = "stats"
IMAGES_PER_INPUT_FILE = 500
# DirectRunner mode for workers > 1 when --beam_options names none: worker processes convert
# in parallel, while in_memory runs one thread whatever direct_num_workers says.
PARALLEL_MODE = "multi_processing"


class FatalImageError(RuntimeError):
    """Raised in a worker to fail the pipeline on an error Problem without --skip_errors.

    One string argument, so Beam can re-raise it with the step name added; the driver then
    reads the staged problems and raises the same ConversionError as the local runner.
    """


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


class ConvertImage(beam.DoFn):
    """(index, pickled ImageAnnotation) -> serialized record, plus ImageStats on STATS_TAG.

    The label map and options come in the constructor: pickled once with the DoFn rather
    than sent with every element.
    """

    def __init__(self, label_map: LabelMap, options: ConvertOptions, source: str,
                 fatal_dir: str):
        super().__init__()
        self.label_map = label_map
        self.options = options
        self.source = source
        self.fatal_dir = fatal_dir

    def process(self, element: tuple[int, bytes]) -> Iterator:
        index, payload = element
        item: ImageAnnotation = pickle.loads(payload)
        result = convert_image(item, self.label_map, self.options, self.source)
        errors = [p for p in result.problems if p.is_error]
        if errors and not self.options.skip_errors:
            # Staged under the image's index: a retried bundle rewrites the same file.
            write_json_atomic(Path(self.fatal_dir) / f"{index:010d}.json",
                              [dataclasses.asdict(p) for p in errors])
            raise FatalImageError(str(ConversionError(errors)))
        yield beam.pvalue.TaggedOutput(STATS_TAG, ImageStats.of(index, result).to_json())
        if result.serialized is not None:
            yield result.serialized


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
        try:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging.mkdir()
        except OSError as err:
            raise OutputError(describe_os_error(err, f"the staging directory {self.staging}")
                              ) from None
        self.fatal_dir = self.staging / "fatal"
        self.fatal_dir.mkdir()
        self.removed_stale: list[Path] = []

    def write_inputs(self, images: Sequence[ImageAnnotation]) -> list[str]:
        """Stages the images as files of (index, pickle) pairs; returns their paths.

        The pipeline creates only these paths: images put into beam.Create become part of
        the pipeline graph, which Beam pickles and bz2-compresses several times while
        translating it (measured slower than the conversion) and which runners cap in size.
        """
        inputs = self.staging / "inputs"
        inputs.mkdir()
        paths = []
        for start in range(0, len(images), IMAGES_PER_INPUT_FILE):
            chunk = [(i, pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL))
                     for i, item in enumerate(images[start:start + IMAGES_PER_INPUT_FILE],
                                              start)]
            path = inputs / f"images-{start:010d}.pkl"
            path.write_bytes(pickle.dumps(chunk, protocol=pickle.HIGHEST_PROTOCOL))
            paths.append(str(path))
        return paths

    @property
    def shard_prefix(self) -> str:
        return str(self.staging / self.name)

    @property
    def stats_prefix(self) -> str:
        return str(self.staging / "stats" / "part")

    def read_stats(self) -> list[ImageStats]:
        """Every image's statistics, in input order (as the local runner adds them)."""
        stats = []
        for path in sorted((self.staging / "stats").glob("part*.jsonl")):
            with open(path, encoding="utf-8") as f:
                stats.extend(ImageStats(**json.loads(line)) for line in f if line.strip())
        return sorted(stats, key=lambda s: s.index)

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
            if not staged.exists():  # a shard the runner left without records
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
        """Deletes the staging directory; earlier outputs are untouched."""
        shutil.rmtree(self.staging, ignore_errors=True)

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
    unless they say otherwise."""
    flags = shlex.split(beam_options)
    given = {flag.split("=", 1)[0].lstrip("-") for flag in flags if flag.startswith("--")}
    options = PipelineOptions(flags)
    standard = options.view_as(StandardOptions)
    if not standard.runner:
        standard.runner = "DirectRunner"
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


def is_direct(options: PipelineOptions) -> bool:
    return options.view_as(StandardOptions).runner in ("DirectRunner", "direct")


def describe(options: PipelineOptions) -> str:
    """The runner, and for the DirectRunner how it runs, for the start-up line."""
    runner = options.view_as(StandardOptions).runner
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
    """Staged images -> convert -> shards in the staging directory, statistics beside them.

    Images stay pickled bytes between steps, so Beam moves them with its bytes coder.
    """
    records, stats = (
        pipeline
        | "InputFiles" >> beam.Create(input_files, reshuffle=False)
        | "Images" >> beam.FlatMap(read_input_file).with_output_types(Tuple[int, bytes])
        | "Spread" >> beam.Reshuffle()  # else one worker converts a whole input file
        | "Convert" >> beam.ParDo(ConvertImage(label_map, options, source,
                                               str(shards.fatal_dir)))
        .with_outputs(STATS_TAG, main="records"))
    _ = records | "WriteRecords" >> beam.io.WriteToTFRecord(
        shards.shard_prefix, file_name_suffix=".tfrecord", num_shards=shards.count,
        shard_name_template=SHARD_TEMPLATE)
    _ = stats | "WriteStats" >> beam.io.WriteToText(shards.stats_prefix,
                                                    file_name_suffix=".jsonl")


def write_split(images: Sequence[ImageAnnotation], label_map: LabelMap, output_dir: str,
                split: str, num_shards: int, workers: int, options: ConvertOptions,
                summary: SplitSummary, progress: bool = True,
                beam_options: str = "") -> BeamShards:
    """local_runner.write_split's contract on Beam: shards staged and left uncommitted.

    On an error Problem without --skip_errors the pipeline fails, the staging directory is
    deleted and ConversionError is raised with that Problem, as the local runner does.
    """
    start = time.perf_counter()
    shards = BeamShards(output_dir, split, num_shards)
    try:
        opts = pipeline_options(beam_options, workers)
        if progress:  # Beam reports no per-image progress to the driver
            log.info("%s: converting %d image(s) on Beam's %s", split, len(images),
                     describe(opts))
        pipeline = beam.Pipeline(options=opts)
        build_pipeline(pipeline, shards.write_inputs(images), label_map, options,
                       summary.source, shards)
        try:
            state = pipeline.run().wait_until_finish()
        except Exception as err:
            fatal = shards.fatal_problems()
            if fatal:
                raise ConversionError(fatal) from err
            raise
        if state not in (None, PipelineState.DONE):  # some runners return rather than raise
            raise RuntimeError(f"the Beam pipeline of split {split!r} ended {state}")
        for stats in shards.read_stats():
            summary.add_image_result(stats.to_result())
    except BaseException:
        shards.abort()
        raise
    summary.seconds = time.perf_counter() - start
    return shards
