"""`train_input_reader` / `eval_input_reader` -> Model Garden's DataConfig."""
from __future__ import annotations

from official.vision.configs import maskrcnn as mg

from pipelines.errors import PipelineConfigError
from pipelines.protos import input_reader_pb2


def input_paths(reader: input_reader_pb2.InputReader, field: str) -> list[str]:
    """The reader's input_path globs; an error naming the field when there are none."""
    if reader.WhichOneof("input_reader") != "tf_record_input_reader" or not list(
            reader.tf_record_input_reader.input_path):
        raise PipelineConfigError("needs tf_record_input_reader { input_path: \"...\" }",
                                  field)
    return list(reader.tf_record_input_reader.input_path)


def build_data_config(reader: input_reader_pb2.InputReader, field: str, batch_size: int,
                      is_training: bool, dtype: str = "float32") -> mg.DataConfig:
    if not reader.load_instance_masks:
        raise PipelineConfigError("must be true: Mask R-CNN trains on instance masks",
                                  f"{field}.load_instance_masks")
    if reader.mask_type != input_reader_pb2.PNG_MASKS:
        raise PipelineConfigError(
            "only PNG_MASKS are supported (the OD API's NUMERICAL_MASKS are float lists "
            "that are large and slow; convert with data_prep/create_tfrecords.py)",
            f"{field}.mask_type")
    if reader.sample_1_of_n_examples < 1:
        raise PipelineConfigError("must be at least 1", f"{field}.sample_1_of_n_examples")
    if batch_size < 1:
        raise PipelineConfigError("must be at least 1", "train_config.batch_size"
                                  if is_training else "eval_config.batch_size")
    return mg.DataConfig(
        input_path=input_paths(reader, field),
        global_batch_size=batch_size,
        is_training=is_training,
        dtype=dtype,
        shuffle_buffer_size=reader.shuffle_buffer_size if reader.shuffle else 1,
        drop_remainder=is_training,
    )
