r"""Rewrites an Object Detection API pipeline.config into this project's schema.

    python -m pipelines.port_od_config mask_rcnn_resnet101_pets.config pets.config

The loader already reads OD API configs (pipelines/od_api.py); porting writes the result
down, so the file says what trains: the OD API's meanings translated into this engine's
fields, its defaults written out, the fields without an effect left out, and a backbone
Model Garden lacks (Inception-ResNet-v2, Inception-v2, NASNet) replaced by the nearest
ResNet-FPN. Every change is printed, and listed at the top of the new file as comments; the
new file loads without a warning. Nothing is written when the file has errors.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Sequence

from core.atomic_io import write_text_atomic
from core.cli import run_main
from core.errors import UsageError
from pipelines.config_util import format_pipeline_config, read_pipeline_config
from pipelines.od_api_report import DOC, Note


@dataclasses.dataclass
class PortResult:
    target: Path
    was_od_api: bool  # False: the file set no OD API-only field and is written unchanged
    changes: list[tuple[str, Note]]  # ("changed" or "left out", note), in file order
    defaults: list[Note]  # the OD API's defaults written out

    def lines(self) -> list[str]:
        """One line a change: what the command prints and the new file's header lists."""
        return [f"{kind:8}  {note}" for kind, note in self.changes] + \
            [f"default   {note} (the OD API's default, written out)" for note in self.defaults]


def _header(source: Path, result: PortResult) -> str:
    lines = [f"# Ported from {source.name} by `python -m pipelines.port_od_config` ({DOC}).",
             "# The OD API's meanings are written in this project's fields (lines are the "
             f"lines of {source.name}):"]
    lines += [f"#   {line}" for line in result.lines()]
    return "\n".join(lines) + "\n"


def port_od_config(source: str | Path, target: str | Path) -> PortResult:
    """Ports `source` (an OD API config) to `target`; raises PipelineConfigError listing
    every problem of `source` (and writes nothing) when it cannot be ported."""
    source, target = Path(source), Path(target)
    if target.resolve() == source.resolve():
        raise UsageError(f"{target} is the file being ported; write the port elsewhere")
    loaded = read_pipeline_config(source, substitute_backbones=True, quiet=True)
    loaded.raise_problems()
    reading = loaded.od_api
    result = PortResult(target, reading is not None, reading.file_notes() if reading else [],
                        list(reading.defaults) if reading else [])
    text = format_pipeline_config(loaded.config)
    write_text_atomic(target, (_header(source, result) if reading else "") + text)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.port_od_config",
        description="Rewrite an Object Detection API pipeline.config into this project's "
                    "schema, printing every change.")
    parser.add_argument("source", help="the OD API pipeline.config")
    parser.add_argument("target", help="where the ported config is written")
    args = parser.parse_args(argv)
    result = port_od_config(args.source, args.target)
    if not result.was_od_api:
        print(f"{args.source} sets no field only the OD API has: it is already in this "
              f"project's schema; written to {result.target} as it is")
        return 0
    for line in result.lines():
        print(f"  {line}")
    print(f"wrote {result.target}: {len(result.changes)} fields changed or left out, "
          f"{len(result.defaults)} OD API defaults written out (see {DOC})")
    return 0


def console_main() -> None:
    """The `port_od_config` command."""
    sys.exit(run_main(main))


if __name__ == "__main__":
    console_main()
