r"""Lists the model's readable variable paths, which freeze_variables and
update_trainable_variables match, and marks those a trainable_layers preset trains.

    python -m models.tools.list_variables --pipeline_config_path=PIPELINE.config \
        [--trainable_layers 4+]
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from core.cli import run_main


def main(argv: Sequence[str] | None = None) -> int:
    from models.builders.stage_builder import PRESETS

    parser = argparse.ArgumentParser(prog="python -m models.tools.list_variables",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline_config_path", required=True)
    parser.add_argument("--trainable_layers", default="all", choices=sorted(PRESETS))
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from models.builders.experiment_builder import load_and_build
    from models.modeling.trainable_layers import select_trainable
    from models.modeling.variable_paths import variable_paths
    from models.tasks.maskrcnn_task import MaskRCNNTask

    built = load_and_build(args.pipeline_config_path, checkpoint_every_n=1)
    model = MaskRCNNTask(built).build_model()
    paths = variable_paths(model)
    chosen = select_trainable(model, PRESETS[args.trainable_layers], [])
    for variable in model.weights:
        if variable.trainable:
            mark = "train" if variable.ref() in chosen else "     "
            print(f"{mark}  {paths[variable.ref()]:<70} {list(variable.shape)}")
    return 0


def console_main() -> None:
    """The installed command (pyproject.toml [project.scripts])."""
    sys.exit(run_main(main))


if __name__ == "__main__":
    console_main()
