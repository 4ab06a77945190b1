"""One fuzz example, end to end: write its files, convert, and check the invariant.

The invariant: the converter either succeeds, and every record it wrote passes
`records.inspect --check` and matches its summary and the input's images, or it stops with
a UserError (one `error:` line on the command line) and leaves the output directory as it
was (here: absent). Anything else, an exception of another type included, is a violation.
"""
from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

from core.errors import UserError
from data_prep import create_tfrecords
from data_prep.conversion.local_runner import WorkerDiedError
from records.label_map import read_label_map
from records.reader import read_examples
from records.record_checks import RecordFault, check_records
from records.tfrecord_io import shard_glob
from tests.fuzz.strategies import FuzzInput, pool_files


class Violation(AssertionError):
    """The converter broke its promise on this input."""


def write_pool(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in pool_files().items():
        (directory / name).write_bytes(data)
    return directory


def argv_of(example: FuzzInput, directory: Path, pool: Path, output: Path) -> list[str]:
    flags = [f.replace("{dir}", str(directory)).replace("{pool}", str(pool))
             for f in example.flags]
    return ["--format", example.format, *flags, "--output_dir", str(output), "--workers", "1",
            "--no_progress", "--no_tfds_metadata"]


def run_example(example: FuzzInput, workdir: Path, pool: Path, skip_errors: bool) -> str:
    """Converts one example in this process; returns its outcome ("ok", "ok_with_skips",
    or "error:<kind>"), raising Violation when the invariant does not hold."""
    if workdir.exists():
        shutil.rmtree(workdir)
    inputs, output = workdir / "in", workdir / "out"
    for relative, data in example.files.items():
        path = inputs / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    argv = argv_of(example, inputs, pool, output) + (["--skip_errors"] if skip_errors else [])
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            create_tfrecords.main(argv)
    except WorkerDiedError as err:  # a clean stop, but on these tiny inputs it is a crash
        raise Violation(f"a converter process died: {err}") from err
    except UserError as err:
        if not str(err).strip():
            raise Violation(f"{type(err).__name__} without a message") from err
        if output.exists() and any(output.iterdir()):
            raise Violation(f"failed ({err}) but left {sorted(output.iterdir())}") from err
        return f"error:{type(err).__name__}"
    except SystemExit as err:  # argparse on a flag value the strategy made up
        if err.code != 2:
            raise Violation(f"exit {err.code}") from err
        return "error:usage"
    except Exception as err:
        raise Violation(f"{type(err).__name__}: {err}") from err
    _check_output(output)
    return "ok"


def _check_output(output: Path) -> None:
    import json

    label_map = read_label_map(output / "label_map.pbtxt")
    summary = json.loads((output / "train.summary.json").read_text())
    try:
        checked = check_records(shard_glob(output, "train"), label_map)
    except RecordFault as fault:
        raise Violation(f"a record fails --check: {fault}") from fault
    examples = read_examples(shard_glob(output, "train"), label_map)
    if (checked.records, checked.instances) != (summary["images"], summary["instances"]):
        raise Violation(f"the records ({checked.records} images, {checked.instances} "
                        f"instances) do not match the summary {summary}")
    for example in examples:
        if set(example.texts) - set(label_map.names):
            raise Violation(f"record {example.filename!r} has classes outside the label map")
