r"""Trains or evaluates Mask R-CNN from a pipeline.config, with the OD API's flags.

Training (checkpoints and TensorBoard summaries in --model_dir; a restart resumes from the
last checkpoint):

    python model_main_tf2.py --pipeline_config_path=pipelines/shapes_resnet18_fpn.config \
        --model_dir=runs/shapes

Evaluation of every new checkpoint (COCO box and mask mAP, summaries in MODEL_DIR/eval):

    python model_main_tf2.py --pipeline_config_path=... --model_dir=runs/shapes \
        --checkpoint_dir=runs/shapes --eval_timeout=600
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags, logging  # noqa: E402

from core.cli import run_absl_main  # noqa: E402
from core.errors import UsageError  # noqa: E402

flags.DEFINE_string("pipeline_config_path", None, "Path to a pipeline.config file.")
flags.DEFINE_string("model_dir", None, "Where checkpoints and summaries are written.")
flags.DEFINE_integer("num_train_steps", None, "Overrides train_config.num_steps.")
flags.DEFINE_string("checkpoint_dir", None, "Evaluate the checkpoints of this directory "
                    "(continuous evaluation) instead of training.")
flags.DEFINE_integer("eval_timeout", 3600, "Seconds to wait for a new checkpoint before "
                     "evaluation stops.")
flags.DEFINE_integer("sample_1_of_n_eval_examples", None, "Evaluate on 1 of every n "
                     "examples (overrides eval_input_reader.sample_1_of_n_examples).")
flags.DEFINE_bool("use_tpu", False, "Train on a TPU.")
flags.DEFINE_string("tpu_name", None, "Name of the Cloud TPU (default: local TPU).")
flags.DEFINE_integer("num_workers", 1, "Workers of a MultiWorkerMirroredStrategy cluster "
                     "described by TF_CONFIG; 1 trains on this machine.")
flags.DEFINE_integer("cluster_timeout", 600, "With --num_workers > 1: seconds to wait for "
                     "the other workers to join before giving up with an error.",
                     lower_bound=1)
flags.DEFINE_integer("checkpoint_every_n", 1000, "Save a checkpoint every n steps.")
flags.DEFINE_bool("record_summaries", True, "Also write training input images (with their "
                  "boxes) to TensorBoard; loss summaries are always written.")
flags.DEFINE_multi_string("config_override", [], "Text-format fragment merged into the "
                          "pipeline config, e.g. 'train_config { batch_size: 4 }'. Repeatable.")
flags.DEFINE_enum("precision", "auto", ["auto", "float32", "float16", "bfloat16"],
                  "Numeric precision: auto chooses float16 on GPUs (use_mixed_precision) or "
                  "bfloat16 on TPUs and CPUs with bfloat16 instructions (use_bfloat16), else "
                  "float32; the others force it, e.g. float16 with loss scaling on a CPU to "
                  "test the GPU code path.")
flags.DEFINE_integer("cpu_replicas", 1, "Without GPUs or TPU: split the CPU into this many "
                     "logical devices and train with MirroredStrategy over them.")
FLAGS = flags.FLAGS


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments {argv[1:]}")
    if not FLAGS["verbosity"].present:  # Orbit prints progress itself; keep absl quiet
        logging.set_verbosity(logging.WARNING)
    if not FLAGS.pipeline_config_path or not FLAGS.model_dir:
        raise UsageError("--pipeline_config_path and --model_dir are required")
    from models.builders.experiment_builder import load_and_build
    from models.training.strategy import choose_placement

    built = load_and_build(FLAGS.pipeline_config_path, FLAGS.config_override,
                           num_train_steps=FLAGS.num_train_steps,
                           checkpoint_every_n=FLAGS.checkpoint_every_n,
                           sample_1_of_n_eval_examples=FLAGS.sample_1_of_n_eval_examples)
    train_config = built.pipeline.train_config
    placement = choose_placement(
        use_tpu=FLAGS.use_tpu, tpu_name=FLAGS.tpu_name or "", num_workers=FLAGS.num_workers,
        cpu_replicas=FLAGS.cpu_replicas, use_bfloat16=train_config.use_bfloat16,
        use_mixed_precision=train_config.use_mixed_precision,
        cluster_timeout=FLAGS.cluster_timeout, forced_precision=FLAGS.precision)
    print(f"strategy: {placement.kind} with {placement.replicas} replica(s), "
          f"{placement.precision}" + (f", {placement.task}" + (" (chief)" if placement.is_chief
                                                               else "") if placement.task else ""),
          flush=True)
    if FLAGS.checkpoint_dir:
        from models.evaluation.continuous_eval import evaluate_continuously

        results = evaluate_continuously(built, FLAGS.model_dir, FLAGS.checkpoint_dir,
                                        placement, FLAGS.eval_timeout)
        print(f"evaluated {len(results)} checkpoint(s); metrics in "
              f"{os.path.join(FLAGS.model_dir, 'eval')}")
        return 0
    from models.training.train_loop import train

    result = train(built, FLAGS.model_dir, placement, FLAGS.checkpoint_every_n,
                   record_summaries=FLAGS.record_summaries)
    if placement.is_chief:
        print(f"trained to step {result['step']}; last checkpoint {result['checkpoint']}")
        print(f"TensorBoard: tensorboard --logdir {FLAGS.model_dir}")
    else:
        print(f"trained to step {result['step']}; the chief writes the checkpoints and "
              f"summaries to {FLAGS.model_dir}")
    return 0


def run() -> None:
    """The `model_main_tf2` command."""
    run_absl_main(main)


if __name__ == "__main__":
    run()
