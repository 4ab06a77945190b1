"""`--runner beam` writes the same examples and the same summary counts as the local runner,
fails on bad input without touching the output directory, and counts skips alike: on Beam's
DirectRunner and on its DaskRunner against a dask.distributed cluster of two worker
processes on 127.0.0.1 that the tests start and stop. apache-beam cannot share the
TensorFlow environment (protobuf<7), so this runs in .venv-beam (`make test-beam`) and is
skipped elsewhere."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest

pytest.importorskip("apache_beam")

from data_prep.conversion.beam_runner import (  # noqa: E402
    DASK_RUNNER,
    BeamShards,
    ImageStats,
    RunnerError,
    pipeline_options,
    write_new_file,
)
from records.tfrecord_io import read_records  # noqa: E402
from tests.coco_helpers import convert  # noqa: E402
from tests.conftest import REPO_ROOT  # noqa: E402

TIMING_KEYS = ("seconds", "images_per_second")
CLUSTER_START_SECONDS = 90  # the scheduler and both workers up, on a loaded 2-core machine
CONVERT_SECONDS = 240  # one conversion of 24 images, start-up included


def _records(output_dir: Path, split: str = "train") -> Counter:
    """The multiset of serialized examples over a split's shards: order-free."""
    return Counter(record for path in sorted(output_dir.glob(f"{split}-*.tfrecord"))
                   for record in read_records(path))


def _shard_bytes(output_dir: Path, split: str = "train") -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(output_dir.glob(f"{split}-*.tfrecord"))}


def _summary(output_dir: Path, split: str = "train") -> dict:
    summary = json.loads((output_dir / f"{split}.summary.json").read_text())
    return {k: v for k, v in summary.items() if k not in TIMING_KEYS}


def _snapshot(directory: Path) -> dict[str, bytes]:
    """Every entry, hidden ones included, with its content."""
    return {p.name: p.read_bytes() if p.is_file() else b"<dir>" for p in directory.iterdir()}


@pytest.fixture
def train(shapes_dir) -> tuple[Path, Path]:
    return shapes_dir / "annotations/instances_train.json", shapes_dir / "images/train"


@pytest.fixture
def broken_train(shapes_dir, tmp_path) -> tuple[Path, Path, list[str]]:
    """The train split with two truncated JPEGs, in a private copy of its images."""
    images = tmp_path / "broken_images"
    shutil.copytree(shapes_dir / "images/train", images)
    broken = sorted(p.name for p in images.iterdir())[2:10:7]
    for name in broken:
        path = images / name
        path.write_bytes(path.read_bytes()[:300])
    return shapes_dir / "annotations/instances_train.json", images, broken


def _project_env() -> dict[str, str]:
    """This checkout first on the path of every process of the cluster: the scheduler
    unpickles the pipeline's graph and the workers run its code."""
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=path)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory) -> Iterator[str]:
    """A dask.distributed scheduler and two single-threaded worker processes on 127.0.0.1
    (`dask scheduler`, `dask worker --nworkers 2`), stopped after the module's tests; the
    scheduler's address. Both also stop by themselves if this process dies without
    stopping them (--idle-timeout, --death-timeout)."""
    from distributed import Client

    root = tmp_path_factory.mktemp("dask")
    scheduler_file = root / "scheduler.json"
    env = _project_env()
    logs = [open(root / name, "w") for name in ("scheduler.log", "workers.log")]
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", "0", "--no-dashboard", "--scheduler-file", str(scheduler_file),
         "--idle-timeout", "600"], env=env, cwd=root, stdout=logs[0], stderr=logs[0])
    workers = None
    try:
        deadline = time.monotonic() + CLUSTER_START_SECONDS
        while not scheduler_file.exists() and time.monotonic() < deadline:
            assert scheduler.poll() is None, (root / "scheduler.log").read_text()
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        workers = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nworkers", "2",
             "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard", "--local-directory",
             str(root / "workers"), "--death-timeout", "60"],
            env=env, cwd=root, stdout=logs[1], stderr=logs[1])
        with Client(address, timeout=CLUSTER_START_SECONDS) as client:
            client.wait_for_workers(2, timeout=CLUSTER_START_SECONDS)
        yield address
    finally:
        for process in (workers, scheduler):
            if process is not None:
                _stop(process)
        for log in logs:
            log.close()


def _executed_per_worker(address: str) -> dict[str, int]:
    """Tasks each worker of the cluster has run so far."""
    from distributed import Client

    with Client(address, timeout=30) as client:
        return client.run(lambda dask_worker: dask_worker.state.executed_count)


def _dask(address: str) -> list[str]:
    return ["--runner", "beam", f"--beam_options=--runner=DaskRunner "
            f"--dask_client_address={address} --dask_connection_timeout=30"]


def _convert(annotations: Path, images: Path, output_dir: Path, *extra: str,
             check: bool = True) -> subprocess.CompletedProcess:
    """tests.coco_helpers.convert with a time limit, so a hung runner fails the test."""
    result = subprocess.run(
        [sys.executable, "data_prep/create_tfrecords.py", "--format", "coco", "--annotations",
         str(annotations), "--images_dir", str(images), "--output_dir", str(output_dir),
         "--split", "train", "--no_progress", *extra], cwd=REPO_ROOT, env=_project_env(),
        capture_output=True, text=True, timeout=CONVERT_SECONDS)
    if check:
        assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    return result


def test_same_examples_and_counts_as_local_runner(train, tmp_path):
    annotations, images = train
    local, beam = tmp_path / "local", tmp_path / "beam"
    convert(annotations, images, local, "--num_shards", "3")
    result = convert(annotations, images, beam, "--num_shards", "3", "--runner", "beam",
                     "--workers", "2")
    assert "split 'train': 24 images" in result.stdout
    assert sorted(p.name for p in beam.glob("*.tfrecord")) == [
        f"train-0000{i}-of-00003.tfrecord" for i in range(3)]
    beam_records = _records(beam)
    assert sum(beam_records.values()) == 24
    assert beam_records == _records(local)
    # Nothing skipped: image i is record i of both runners, so the shards are the same.
    assert _shard_bytes(beam) == _shard_bytes(local)
    summary = _summary(beam)
    assert summary == _summary(local)
    assert summary["images"] == 24 and sum(summary["instances_per_class"].values()) > 0
    assert (beam / "label_map.pbtxt").read_text() == (local / "label_map.pbtxt").read_text()
    assert not [p for p in beam.iterdir() if p.name.startswith(".")]  # staging removed


def test_fatal_error_leaves_output_dir_unchanged(train, broken_train, tmp_path):
    annotations, images = train
    output = tmp_path / "records"
    convert(annotations, images, output, "--num_shards", "2", "--runner", "beam")
    before = _snapshot(output)

    broken_annotations, broken_images, broken = broken_train
    result = convert(broken_annotations, broken_images, output, "--num_shards", "3",
                     "--runner", "beam", check=False)
    assert result.returncode == 1
    error = result.stderr[result.stderr.rindex("error: "):]
    assert "truncated or corrupt" in error and "--skip_errors" in error
    assert any(name in error for name in broken)  # whichever a worker reached first
    assert _snapshot(output) == before

    # The same output directory still commits afterwards, replacing the 2-shard run.
    convert(annotations, images, output, "--num_shards", "3", "--runner", "beam")
    summary = _summary(output)
    assert summary["removed_stale_shards"] == [f"train-0000{i}-of-00002.tfrecord"
                                               for i in range(2)]
    assert sorted(p.name for p in output.glob("*.tfrecord")) == summary["shards"]


def test_skip_errors_counts_match_local_runner(broken_train, tmp_path):
    annotations, images, _ = broken_train
    local, beam = tmp_path / "local", tmp_path / "beam"
    convert(annotations, images, local, "--skip_errors")
    # One worker: the DirectRunner's in_memory mode (the other test runs worker processes).
    convert(annotations, images, beam, "--skip_errors", "--runner", "beam", "--workers", "1")
    summary = _summary(beam)
    assert summary == _summary(local)
    assert summary["images"] == 22
    assert summary["skipped"]["images"] == {"corrupt_image": 2}
    assert _records(beam) == _records(local)


def test_dask_runner_same_records_and_counts_as_local_runner(dask_cluster, train, tmp_path):
    annotations, images = train
    local, dask = tmp_path / "local", tmp_path / "dask"
    convert(annotations, images, local, "--num_shards", "3")
    executed_before = _executed_per_worker(dask_cluster)
    result = _convert(annotations, images, dask, "--num_shards", "3", *_dask(dask_cluster))
    assert "split 'train': 24 images" in result.stdout
    assert _shard_bytes(dask) == _shard_bytes(local)
    assert sum(_records(dask).values()) == 24
    assert _summary(dask) == _summary(local)
    assert (dask / "label_map.pbtxt").read_text() == (local / "label_map.pbtxt").read_text()
    assert not [p for p in dask.iterdir() if p.name.startswith(".")]  # staging removed
    executed = _executed_per_worker(dask_cluster)
    assert len(executed) == 2
    assert all(executed[w] > executed_before.get(w, 0) for w in executed)  # both worked


def test_dask_runner_fatal_error_leaves_output_dir_unchanged(dask_cluster, train,
                                                             broken_train, tmp_path):
    annotations, images = train
    output = tmp_path / "records"
    _convert(annotations, images, output, "--num_shards", "2", *_dask(dask_cluster))
    before = _snapshot(output)

    broken_annotations, broken_images, broken = broken_train
    result = _convert(broken_annotations, broken_images, output, "--num_shards", "3",
                      *_dask(dask_cluster), check=False)
    assert result.returncode == 1
    error = result.stderr[result.stderr.rindex("error: "):]
    assert "truncated or corrupt" in error and "--skip_errors" in error
    assert any(name in error for name in broken)
    assert "Traceback" not in result.stderr
    time.sleep(2)  # a worker still busy with a cancelled task must not write anything
    assert _snapshot(output) == before


def test_dask_runner_skip_errors_counts_match_local_runner(dask_cluster, broken_train,
                                                           tmp_path):
    annotations, images, _ = broken_train
    local, dask = tmp_path / "local", tmp_path / "dask"
    convert(annotations, images, local, "--skip_errors", "--num_shards", "2")
    _convert(annotations, images, dask, "--skip_errors", "--num_shards", "2",
             *_dask(dask_cluster))
    summary = _summary(dask)
    assert summary == _summary(local)
    assert summary["skipped"]["images"] == {"corrupt_image": 2}
    assert _records(dask) == _records(local)


def test_unreachable_dask_scheduler_is_one_line(train, tmp_path):
    annotations, images = train
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    output = tmp_path / "records"
    result = _convert(annotations, images, output, "--runner", "beam",
                      f"--beam_options=--runner=DaskRunner --dask_client_address=tcp://127.0.0.1:{port} "
                      "--dask_connection_timeout=2", check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"error: cannot start the Beam pipeline on DaskRunner (tcp://127.0.0.1:{port})" \
        in result.stderr
    assert not output.exists()


def test_unknown_runner_is_one_line(train, tmp_path):
    annotations, images = train
    result = convert(*train, tmp_path / "records", "--runner", "beam",
                     "--beam_options=--runner=NoSuchRunner", check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "error: --beam_options: Unexpected pipeline runner: NoSuchRunner" in result.stderr


def test_beam_options_override_direct_runner_defaults():
    options = pipeline_options("", workers=2).get_all_options()
    assert (options["runner"], options["direct_running_mode"],
            options["direct_num_workers"]) == ("DirectRunner", "multi_processing", 2)
    options = pipeline_options("--direct_running_mode=in_memory", workers=2).get_all_options()
    assert (options["direct_running_mode"], options["direct_num_workers"]) == ("in_memory", 1)
    options = pipeline_options("--runner=FlinkRunner --flink_master='host:8081'",
                               workers=2).get_all_options()
    assert (options["runner"], options["flink_master"]) == ("FlinkRunner", "host:8081")
    assert options["direct_running_mode"] == "in_memory"  # Beam's default, left alone


def test_dask_runner_options():
    from apache_beam.runners.dask.dask_runner import DaskOptions

    options = pipeline_options("--runner=DaskRunner --dask_client_address=tcp://h:8786",
                               workers=2)
    assert options.get_all_options()["runner"] == DASK_RUNNER
    dask = options.view_as(DaskOptions).get_all_options(drop_default=True, current_only=True)
    assert dask == {"address": "tcp://h:8786", "partition_size": 1}  # a file, a partition
    options = pipeline_options(f"--runner={DASK_RUNNER} --dask_npartitions=8", workers=2)
    dask = options.view_as(DaskOptions).get_all_options(drop_default=True, current_only=True)
    assert dask == {"npartitions": 8}


def test_missing_results_fail_instead_of_committing(tmp_path):
    """A runner that leaves out part of the pipeline (the DaskRunner computes only its last
    transform) must not commit a partial split."""
    shards = BeamShards(tmp_path, "train", 2)
    line = ImageStats(0, True, {"circle": 1}, 0, [], None).to_json()
    write_new_file(str(shards.stats_dir), "shard-00000.jsonl", f"{line}\n".encode())
    assert [s.index for s in shards.read_stats(1)] == [0]
    with pytest.raises(RunnerError, match="1 results for 1 of the 3 images"):
        shards.read_stats(3)
    write_new_file(str(shards.stats_dir), "shard-00001.jsonl", f"{line}\n".encode())
    with pytest.raises(RunnerError, match="2 results for 1 of the 1 images"):
        shards.read_stats(1)  # the same image twice
    shards.abort()


def test_abort_leaves_no_way_back_into_output_dir(tmp_path):
    """After abort, a worker still finishing a cancelled task can write nothing."""
    (tmp_path / "kept.txt").write_text("earlier output")
    shards = BeamShards(tmp_path, "train", 2)
    fatal_dir, staging = str(shards.fatal_dir), str(shards.staging)
    shards.abort()
    for directory in (fatal_dir, staging):
        with pytest.raises(FileNotFoundError):
            write_new_file(directory, "late.json", b"{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.txt"]
