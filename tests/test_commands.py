"""Every command goes through the one runner (core/cli.py): a user's mistake is one
`error: ...` line on stderr and exit code 1, never a traceback; a bug keeps its traceback."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core.cli import run_main
from core.errors import UserError
from tests.conftest import run_command
from tests.training_helpers import make_tiny_records, tiny_config

MISSING = "/nonexistent/input"


def _commands(tmp):
    """(command line, what the error must say) per entry point, each on one bad input."""
    empty = tmp / "empty_dir"
    empty.mkdir(exist_ok=True)
    return {
        "create_tfrecords": (["data_prep/create_tfrecords.py", "--format", "coco",
                              "--annotations", f"{MISSING}.json", "--output_dir",
                              str(tmp / "out")], "annotation file does not exist"),
        "model_main_tf2": (["model_main_tf2.py", f"--pipeline_config_path={MISSING}.config",
                            f"--model_dir={tmp / 'model'}"], "does not exist"),
        "exporter_main_v2": (["exporter_main_v2.py", f"--pipeline_config_path={MISSING}.config",
                              f"--trained_checkpoint_dir={tmp}",
                              f"--output_directory={tmp / 'export'}"], "does not exist"),
        "inspect": (["-m", "records.inspect", f"{MISSING}-*.tfrecord"],
                    "no TFRecord files match"),
        "tfds_metadata": (["-m", "records.tfds_metadata", MISSING], "does not exist"),
        "synthetic": (["-m", "data_prep.synthetic", "--output_dir", str(tmp / "shapes"),
                       "--formats", "nope"], "unknown format 'nope'"),
        "infer": (["-m", "models.tools.infer", "--saved_model", MISSING, "--images",
                   f"{MISSING}/*.jpg", "--output_dir", str(tmp / "pred")],
                  "no image files match"),
        "debug_stages": (["-m", "models.tools.debug_stages", "--pipeline_config_path",
                          f"{MISSING}.config", "--checkpoint_dir", MISSING, "--images",
                          f"{MISSING}/*.jpg", "--output_dir", str(tmp / "stages")],
                         "no image files match"),
        "ensemble": (["-m", "models.tools.ensemble", "--layer0_saved_model", MISSING,
                      "--layer1_saved_model", MISSING, "--hierarchy", f"{MISSING}.json",
                      "--images", f"{MISSING}/*.jpg", "--output_dir", str(tmp / "ens")],
                     "no image files match"),
        "list_variables": (["-m", "models.tools.list_variables",
                            f"--pipeline_config_path={MISSING}.config"], "does not exist"),
        "image_npy": (["-m", "models.tools.image_npy", f"{MISSING}.jpg",
                       str(tmp / "x.npy")], "cannot be read"),
        "show_outputs": (["-m", "models.tools.show_outputs", str(empty)],
                         "num_detections.npy"),
        "analyze": (["-m", "models.tools.analyze", "--detections", f"{MISSING}.json",
                     "--annotations", f"{MISSING}.json", "--output_dir", str(tmp / "an")],
                    "not COCO annotations"),
        "port_od_config": (["-m", "pipelines.port_od_config", f"{MISSING}.config",
                            str(tmp / "ported.config")], "does not exist"),
    }


COMMANDS = ("create_tfrecords", "model_main_tf2", "exporter_main_v2", "inspect",
            "tfds_metadata", "synthetic", "infer", "debug_stages", "ensemble", "list_variables",
            "image_npy", "show_outputs", "analyze", "port_od_config")


def test_every_command_is_covered(tmp_path):
    assert sorted(_commands(tmp_path)) == sorted(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_turns_a_bad_input_into_one_error_line(name, tmp_path):
    args, phrase = _commands(tmp_path)[name]
    result = run_command(*args)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(errors) == 1 and phrase in errors[0], result.stderr[-2000:]


def test_a_bug_keeps_its_traceback_and_a_user_error_does_not(capsys):
    def bug(argv):
        raise RuntimeError("our fault")

    def mistake(argv):
        raise UserError("your input, line 3: fix it")

    with pytest.raises(RuntimeError, match="our fault"):
        run_main(bug, [])
    assert run_main(mistake, []) == 1
    assert capsys.readouterr().err == "error: your input, line 3: fix it\n"


@pytest.fixture(scope="module")
def tiny_records(tmp_path_factory):
    return make_tiny_records(tmp_path_factory.mktemp("commands"), train_images=4,
                             val_images=2)


def test_a_freeze_regex_matching_nothing_is_an_error_not_a_traceback(tiny_records, tmp_path):
    config = tiny_config(tiny_records, tmp_path / "pipeline.config", num_steps=1,
                         extra=('train_config { freeze_variables: "^backbone/stage9/" }',))
    result = run_command("model_main_tf2.py", f"--pipeline_config_path={config}",
                         f"--model_dir={tmp_path / 'model'}")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    error = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "['^backbone/stage9/']" in error[0], result.stderr[-2000:]
    assert "match no variable" in error[0] and "models.tools.list_variables" in error[0]


def test_a_freeze_regex_that_does_not_compile_points_at_its_line(tiny_records, tmp_path):
    config = tiny_config(tiny_records, tmp_path / "pipeline.config", num_steps=1,
                         extra=('train_config { freeze_variables: "^backbone/(stage2" }',))
    result = run_command("model_main_tf2.py", f"--pipeline_config_path={config}",
                         f"--model_dir={tmp_path / 'model'}")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "train_config.freeze_variables: '^backbone/(stage2' is not a regular expression" \
        in result.stderr


def test_a_truncated_training_shard_is_an_error_naming_file_record_and_byte(tiny_records,
                                                                           tmp_path):
    shard = next(tiny_records.glob("train-*.tfrecord"))
    broken = tmp_path / "records"
    broken.mkdir()
    (broken / shard.name).write_bytes(shard.read_bytes()[:-10])
    (broken / "label_map.pbtxt").write_bytes((tiny_records / "label_map.pbtxt").read_bytes())
    config = tiny_config(broken, tmp_path / "pipeline.config", num_steps=1)
    result = run_command("model_main_tf2.py", f"--pipeline_config_path={config}",
                         f"--model_dir={tmp_path / 'model'}")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    error = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and str(broken / shard.name) in error[0], result.stderr[-2000:]
    assert "record 3 at byte" in error[0] and "truncated" in error[0], error


def test_the_installed_commands_exist_and_answer_help():
    """pyproject.toml's console scripts, as `make venv` (pip install -e .) installed them."""
    bin_dir = Path(sys.executable).parent
    for command in ("create_tfrecords", "inspect_records", "synthetic_shapes", "maskrcnn_infer",
                    "maskrcnn_analyze", "port_od_config"):
        result = subprocess.run([str(bin_dir / command), "--help"], capture_output=True,
                                text=True)
        assert result.returncode == 0 and "usage:" in result.stdout, (command, result.stderr)


def test_a_record_corrupt_beyond_the_checked_sample_stops_training_naming_it(tmp_path):
    """The input checks read the first 50 records; record 55's data checksum fails inside
    TensorFlow's reader, which names only an offset: the error names file, record, byte."""
    records = make_tiny_records(tmp_path / "data", train_images=60, val_images=2)
    shard = next(records.glob("train-*.tfrecord"))
    data = bytearray(shard.read_bytes())
    offset = 0
    for _ in range(55):  # skip 55 records: length (8) + its CRC (4) + data + data CRC (4)
        offset += 16 + int.from_bytes(data[offset:offset + 8], "little")
    data[offset + 12 + 40] ^= 0xFF  # a byte inside record 55's data
    shard.write_bytes(bytes(data))
    config = tiny_config(records, tmp_path / "pipeline.config", num_steps=2)
    result = run_command("model_main_tf2.py", f"--pipeline_config_path={config}",
                         f"--model_dir={tmp_path / 'model'}")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    error = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1, result.stderr[-3000:]
    assert f"{shard}: record 55 at byte {offset}: data checksum mismatch" in error[0], error
