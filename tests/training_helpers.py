"""A tiny data set and config that train in seconds per step on a CPU, for the slow tests."""
from __future__ import annotations

from pathlib import Path

from tests.conftest import REPO_ROOT, run_command

SHAPES_CONFIG = REPO_ROOT / "pipelines/shapes_resnet18_fpn.config"


def make_tiny_records(root: Path, train_images: int = 12, val_images: int = 4) -> Path:
    """64x64 synthetic shapes converted to records in root/records; returns that dir."""
    from data_prep.synthetic.__main__ import write_split

    records = root / "records"
    for split, count in (("train", train_images), ("val", val_images)):
        paths = write_split(root / "shapes", split, count, seed=5, height=64, width=64,
                            min_objects=1, max_objects=3)
        run_command("data_prep/create_tfrecords.py", "--format", "coco", "--annotations",
                    str(paths["coco"]), "--images_dir", str(root / "shapes/images" / split),
                    "--output_dir", str(records), "--split", split, "--no_progress",
                    "--no_tfds_metadata", check=True)
    return records


def tiny_overrides(records: Path, num_steps: int = 4) -> list[str]:
    """Overrides that point the shapes config at `records` and shrink it (64 px, small heads),
    in float32 whatever the CPU (the shipped config asks for bfloat16 where the CPU has it)."""
    return [
        "model { faster_rcnn { image_resizer { keep_aspect_ratio_resizer { min_dimension: 64 "
        "max_dimension: 64 } } first_stage_max_proposals: 64 second_stage_batch_size: 32 "
        "second_stage_num_sampled_masks: 8 second_stage_box_predictor { mask_rcnn_box_predictor "
        "{ mask_prediction_num_conv_layers: 2 mask_prediction_conv_depth: 32 } } } }",
        f"train_config {{ batch_size: 2 num_steps: {num_steps} use_bfloat16: false }}",
        f'train_input_reader {{ label_map_path: "{records}/label_map.pbtxt" '
        f'tf_record_input_reader {{ input_path: "{records}/train-?????-of-00001.tfrecord" }} }}',
        f'eval_input_reader {{ label_map_path: "{records}/label_map.pbtxt" '
        f'tf_record_input_reader {{ input_path: "{records}/val-?????-of-00001.tfrecord" }} }}',
    ]


def tiny_config(records: Path, path: Path, num_steps: int = 4, extra: tuple[str, ...] = ()
                ) -> Path:
    """Writes the shapes config with the tiny overrides applied, as a user would edit it."""
    from pipelines.config_util import load_pipeline_config, save_pipeline_config

    config = load_pipeline_config(SHAPES_CONFIG, tiny_overrides(records, num_steps) +
                                  list(extra))
    return save_pipeline_config(config, path)


def model_main(*flags: str, check: bool = True):
    return run_command("model_main_tf2.py", *flags, check=check)


def total_losses(event_dir: Path) -> list[float]:
    """Every Loss/total_loss value the trainer wrote to the event files of `event_dir`."""
    import tensorflow as tf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values = []
    for path in event_dir.glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(path))
        accumulator.Reload()
        if "Loss/total_loss" in accumulator.Tags()["tensors"]:
            values += [float(tf.make_ndarray(e.tensor_proto))
                       for e in accumulator.Tensors("Loss/total_loss")]
    return values
