r"""Trains or evaluates Mask R-CNN from a pipeline.config, with the OD API's flags.

    python model_main_tf2.py --pipeline_config_path=PIPELINE.config --model_dir=MODEL_DIR
    python model_main_tf2.py --pipeline_config_path=... --model_dir=MODEL_DIR \
        --checkpoint_dir=MODEL_DIR          # continuous evaluation

The flags and the driver are in models/tools/model_main.py (`--help` lists them).
"""
from models.tools.model_main import run

if __name__ == "__main__":
    run()
