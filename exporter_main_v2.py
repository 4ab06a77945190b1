r"""Exports a trained checkpoint as a SavedModel, with the Object Detection API's flags.

    python exporter_main_v2.py --input_type=image_tensor \
        --pipeline_config_path=MODEL_DIR/pipeline.config --trained_checkpoint_dir=MODEL_DIR \
        --output_directory=EXPORT_DIR

The flags and the driver are in models/tools/exporter_main.py (`--help` lists them).
"""
from models.tools.exporter_main import run

if __name__ == "__main__":
    run()
