r"""Exports a trained checkpoint as a SavedModel, with the Object Detection API's flags.

    python exporter_main_v2.py --input_type=image_tensor \
        --pipeline_config_path=demo_output/model/pipeline.config \
        --trained_checkpoint_dir=demo_output/model \
        --output_directory=demo_output/exported

OUTPUT_DIRECTORY gets saved_model/, checkpoint/, pipeline.config and label_map.pbtxt; it is
replaced as a whole, and left untouched when the export fails. The `serving_default`
signature takes `input_tensor` (uint8 [1, H, W, 3] images of any size for image_tensor;
float32 0..255 for float_image_tensor; [1] strings for encoded_image_string_tensor and
tf_example; with --batch_size=0 any number of same-size images) and returns detection_boxes
(normalized to the original image), detection_scores, detection_classes (label-map ids,
float32), num_detections, detection_masks (box-relative probabilities) and, unless
--nofull_image_masks, detection_masks_image (uint8 0/1 masks of the input's size); with
--od_api_outputs also the OD API's raw_detection_boxes, raw_detection_scores,
detection_multiclass_scores and detection_anchor_indices, detection_classes padded with 1.0
as its exports do. Try it:

    saved_model_cli show --dir OUTPUT_DIRECTORY/saved_model --all
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags, logging  # noqa: E402

from core.cli import run_absl_main  # noqa: E402
from core.errors import UsageError  # noqa: E402

flags.DEFINE_enum("input_type", "image_tensor", ["image_tensor", "encoded_image_string_tensor",
                                                 "tf_example", "float_image_tensor"],
                  "Type of the serving input: uint8 image tensor, encoded image strings "
                  "(JPEG/PNG), serialized tf.Examples (image/encoded) or float32 images.")
flags.DEFINE_string("pipeline_config_path", None, "The pipeline.config the checkpoint was "
                    "trained with.")
flags.DEFINE_string("trained_checkpoint_dir", None, "Directory of the trained checkpoints "
                    "(its latest is exported), or one checkpoint prefix (model_dir/ckpt-N).")
flags.DEFINE_string("output_directory", None, "Where the export is written.")
flags.DEFINE_multi_string("config_override", [], "Text-format fragment merged into the "
                          "pipeline config, e.g. 'model { faster_rcnn { "
                          "second_stage_post_processing { batch_non_max_suppression { "
                          "score_threshold: 0.3 } } } }'. Repeatable.")
flags.DEFINE_bool("full_image_masks", True, "Also output detection_masks_image: 0/1 uint8 "
                  "masks of the input image's size (more memory per call for large images).")
flags.DEFINE_bool("od_api_outputs", False, "Also output the OD API's raw_detection_boxes, "
                  "raw_detection_scores, detection_multiclass_scores and "
                  "detection_anchor_indices, and pad detection_classes with 1.0 as its "
                  "exports do, so OD API client code runs unchanged.")
flags.DEFINE_integer("batch_size", 1, "Images per call: 1 as the OD API's exports (fastest); "
                     "0 accepts any number of same-size images.", lower_bound=0)
FLAGS = flags.FLAGS


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments {argv[1:]}")
    if not FLAGS["verbosity"].present:  # Keras warns for every layer it does not serialize
        logging.set_verbosity(logging.ERROR)
    missing = [name for name in ("pipeline_config_path", "trained_checkpoint_dir",
                                 "output_directory") if not FLAGS[name].value]
    if missing:
        raise UsageError("missing flags: " + ", ".join(f"--{name}" for name in missing))
    from models.builders.experiment_builder import load_and_build
    from models.serving.exporter import export_inference_graph

    built = load_and_build(FLAGS.pipeline_config_path, FLAGS.config_override)
    export_inference_graph(built, FLAGS.trained_checkpoint_dir, FLAGS.output_directory,
                           FLAGS.input_type, FLAGS.full_image_masks,
                           FLAGS.batch_size or None, config_name=FLAGS.pipeline_config_path,
                           od_api_outputs=FLAGS.od_api_outputs)
    print(f"try: saved_model_cli show --dir {FLAGS.output_directory}/saved_model --all")
    return 0


def run() -> None:
    """The `exporter_main_v2` command."""
    run_absl_main(main)


if __name__ == "__main__":
    run()
