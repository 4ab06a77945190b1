"""`--runner beam` on Beam's DirectRunner writes the same examples and the same summary
counts as the local runner, fails on bad input without touching the output directory, and
counts skips alike. apache-beam cannot share the TensorFlow environment (protobuf<7), so this
runs in .venv-beam (`make test-beam`) and is skipped elsewhere."""
from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("apache_beam")

from data_prep.conversion.beam_runner import pipeline_options  # noqa: E402
from records.tfrecord_io import read_records  # noqa: E402
from tests.coco_helpers import convert  # noqa: E402

TIMING_KEYS = ("seconds", "images_per_second")


def _records(output_dir: Path, split: str = "train") -> Counter:
    """The multiset of serialized examples over a split's shards: order-free."""
    return Counter(record for path in sorted(output_dir.glob(f"{split}-*.tfrecord"))
                   for record in read_records(path))


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
