"""What the small-data recipe does to overfitting, on the synthetic shapes.

    .venv/bin/python -m benchmarks.bench_overfitting --train_images 60 --budget_minutes 6

A ResNet-18 FPN is first trained on a larger synthetic set (the "pretrained" checkpoint our
users would download). Then, from that checkpoint, two runs get the same wall-clock budget
on a small training split:
  baseline  everything trainable, no augmentation, no weight decay;
  recipe    the augmentation of the tiny-VOC recipe, weight decay, and staged
            fine-tuning (heads, then ResNet stage 4 and up).
Printed for both: mask and box mAP on the training images and on held-out images, and the
gap between them.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from benchmarks.training_runs import (
    make_records,
    overrides,
    score_checkpoints,
    train_for,
)

RECIPE_AUGMENTATION = """
  data_augmentation_options { random_horizontal_flip { } }
  data_augmentation_options { random_crop_image { min_area: 0.81 max_area: 1.0
      min_aspect_ratio: 0.9 max_aspect_ratio: 1.1 random_coef: 0.5 } }
  data_augmentation_options { random_gaussian_blur { probability: 0.5 max_sigma: 0.5 } }
  data_augmentation_options { random_adjust_contrast { min_delta: 0.75 max_delta: 1.5 } }
  data_augmentation_options { random_multiply_brightness { min_factor: 0.8 max_factor: 1.2 } }
  data_augmentation_options { random_affine { probability: 0.5 min_scale: 0.8 max_scale: 1.2
      max_translate: 0.2 max_rotation_degrees: 25 max_shear_degrees: 8 } }
"""

# The model and optimizer these figures were measured with (README, section 6), pinned so that
# retuning the shipped shapes config for speed does not change this comparison: the stage
# learning rates below are momentum-SGD rates.
MEASURED_MODEL = [
    "model { faster_rcnn { second_stage_num_sampled_masks: 32 "
    "feature_extractor { batch_norm_momentum: 0.997 } second_stage_box_predictor { "
    "mask_rcnn_box_predictor { mask_prediction_conv_depth: 128 } } } }",
    "train_config { optimizer { momentum_optimizer { momentum_optimizer_value: 0.9 "
    "learning_rate { cosine_decay_learning_rate { learning_rate_base: 0.02 total_steps: 2000 "
    "warmup_learning_rate: 0.002 warmup_steps: 100 } } } } }",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train_images", type=int, default=60)
    parser.add_argument("--eval_images", type=int, default=60)
    parser.add_argument("--pretrain_images", type=int, default=300)
    parser.add_argument("--pretrain_minutes", type=float, default=5.0)
    parser.add_argument("--budget_minutes", type=float, default=6.0)
    parser.add_argument("--work_dir", help="keep everything here (default: temporary)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work_dir or tmp)
        records = make_records(work, {"pretrain": args.pretrain_images,
                                      "small": args.train_images,
                                      "heldout": args.eval_images}, seed=23)
        pretrain_dir = work / "pretrained"
        pretrain_steps = int(args.pretrain_minutes * 60 / 0.42)
        written = train_for(args.pretrain_minutes * 60, pretrain_dir,
                            overrides(records, "pretrain", "heldout", pretrain_steps,
                                      MEASURED_MODEL),
                            checkpoint_every_n=100)
        checkpoint = pretrain_dir / f"ckpt-{max(written)}"
        steps = int(args.budget_minutes * 60 / 0.42)
        half = steps // 2
        start = (f'train_config {{ fine_tune_checkpoint: "{checkpoint}" '
                 'fine_tune_checkpoint_type: "full" }')
        runs = {
            "baseline": [*MEASURED_MODEL, start,
                         f"train_config {{ num_steps: {steps} weight_decay: 0 }}"],
            "recipe": [*MEASURED_MODEL, start, "train_config { num_steps: 0 weight_decay: 0.0005 "
                       f'stage {{ name: "heads" num_steps: {half} learning_rate: 0.01 '
                       'trainable_layers: "heads" } '
                       f'stage {{ name: "4+" num_steps: {steps - half} learning_rate: 0.005 '
                       f'trainable_layers: "4+" }} {RECIPE_AUGMENTATION} }}'],
        }
        table = {}
        for name, extra in runs.items():
            model_dir = work / name
            config = overrides(records, "small", "heldout", None, extra)
            written = train_for(args.budget_minutes * 60, model_dir, config, 50)
            last = max(written)
            heldout = score_checkpoints(model_dir, config, [last])[last]
            on_train = score_checkpoints(model_dir, overrides(records, "small", "small", None,
                                                              extra), [last])[last]
            table[name] = (last, on_train, heldout)
        print(f"\n{args.train_images} training images, {args.eval_images} held-out; "
              f"{args.budget_minutes:g} min per run from a checkpoint pretrained "
              f"{args.pretrain_minutes:g} min on {args.pretrain_images} other images")
        print(f"{'run':<9} {'steps':>5} {'train mask mAP':>15} {'held-out mask mAP':>18} "
              f"{'gap':>6} {'held-out box mAP':>17}")
        for name, (last, on_train, heldout) in table.items():
            train_map = on_train["DetectionMasks_Precision/mAP"]
            heldout_map = heldout["DetectionMasks_Precision/mAP"]
            print(f"{name:<9} {last:5d} {train_map:15.3f} {heldout_map:18.3f} "
                  f"{train_map - heldout_map:6.3f} "
                  f"{heldout['DetectionBoxes_Precision/mAP']:17.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
