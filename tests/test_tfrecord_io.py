"""TFRecord framing, sharded all-or-nothing writing and checked reading."""
from __future__ import annotations

import pytest

from records.tfrecord_io import (
    CorruptRecordError,
    ShardedWriter,
    expand_paths,
    frame_record,
    read_records,
    shard_glob,
    shard_name,
)


def test_shard_names_follow_the_od_api_convention():
    assert shard_name("train", 3, 8) == "train-00003-of-00008.tfrecord"


def test_records_round_trip_and_tensorflow_reads_them(tmp_path):
    import tensorflow as tf

    payloads = [b"", b"a", bytes(range(256)) * 40]
    with ShardedWriter(tmp_path, "x", 1) as writer:
        for p in payloads:
            writer.write(p)
    path = tmp_path / shard_name("x", 0, 1)
    assert list(read_records(path)) == payloads
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(path))] == payloads


def test_round_robin_over_shards(tmp_path):
    with ShardedWriter(tmp_path, "train", 3) as writer:
        for i in range(7):
            writer.write(str(i).encode())
    contents = [[r.decode() for r in read_records(p)] for p in writer.paths]
    assert contents == [["0", "3", "6"], ["1", "4"], ["2", "5"]]
    assert expand_paths(shard_glob(tmp_path, "train")) == [str(p) for p in writer.paths]


def test_failure_leaves_no_shard_and_keeps_earlier_output(tmp_path):
    with ShardedWriter(tmp_path, "train", 2) as writer:
        writer.write(b"old")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(RuntimeError):
        with ShardedWriter(tmp_path, "train", 2) as writer:
            writer.write(b"new")
            raise RuntimeError("conversion failed")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_commit_removes_shards_of_an_earlier_run_with_another_count(tmp_path):
    with ShardedWriter(tmp_path, "train", 4) as writer:
        writer.write(b"x")
    with ShardedWriter(tmp_path, "train-extra", 1) as other:  # another split: untouched
        other.write(b"y")
    with ShardedWriter(tmp_path, "train", 2) as writer:
        writer.write(b"z")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord",
                     "train-extra-00000-of-00001.tfrecord"]
    assert len(writer.removed_stale) == 4


def test_corruption_and_truncation_name_file_and_record(tmp_path):
    with ShardedWriter(tmp_path, "c", 1) as writer:
        writer.write(b"first record")
        writer.write(b"second record")
    path = writer.paths[0]
    data = bytearray(path.read_bytes())
    data[-6] ^= 0xFF  # flip a byte of the second record's data
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptRecordError, match=r"c-00000-of-00001.tfrecord: record 1 .*"
                                                 r"checksum"):
        list(read_records(path))
    path.write_bytes(bytes(data[:-10]))
    with pytest.raises(CorruptRecordError, match="record 1 .* truncated"):
        list(read_records(path))


def test_expand_paths_fails_on_patterns_matching_nothing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no TFRecord files match"):
        expand_paths(str(tmp_path / "train-*.tfrecord"))


def test_remote_paths_go_through_tensorflow_file_systems():
    """gs:// (TPU users' records) is read through tf.io.gfile; TF's in-memory ram:// file
    system stands in for it here."""
    import tensorflow as tf

    from records.label_map import LabelMap, format_label_map, read_label_map

    with tf.io.gfile.GFile("ram://bucket/train-00000-of-00001.tfrecord", "wb") as f:
        f.write(frame_record(b"one") + frame_record(b"two"))
    with tf.io.gfile.GFile("ram://bucket/label_map.pbtxt", "w") as f:
        f.write(format_label_map(LabelMap.from_names(["circle"])))
    [path] = expand_paths("ram://bucket/train-*.tfrecord")
    assert list(read_records(path)) == [b"one", b"two"]
    assert read_label_map("ram://bucket/label_map.pbtxt").names == ["circle"]
