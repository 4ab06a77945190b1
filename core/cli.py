"""The one command runner every entry point uses.

    def main(argv: list[str] | None = None) -> int: ...
    if __name__ == "__main__":
        sys.exit(run_main(main))

A `core.errors.UserError` escaping `main` is printed as `error: <message>` on stderr with
exit code 1; Ctrl-C exits with 130 and one line; anything else is a bug and keeps its
traceback. Commands built on absl flags (model_main_tf2.py, exporter_main_v2.py) go through
`run_absl_main`, which parses the flags first, as absl's `app.run` does.

Library code reports progress with `logging`; a command shows our packages' INFO messages
on stdout as they are and warnings on stderr as `warning: ...` (`configure_logging`).
"""
from __future__ import annotations

import logging
import sys
from typing import Callable, Sequence

from core.errors import UserError

Main = Callable[[Sequence[str] | None], int]
PROJECT_PACKAGES = ("core", "records", "pipelines", "data_prep", "models")


class _BelowWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING


class _Prefixed(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {super().format(record)}"


def configure_logging(level: int = logging.INFO) -> None:
    """Our packages' log: INFO and below on stdout as written, warnings and errors on stderr
    prefixed `warning:` / `error:`. Other libraries' logs are left as they are."""
    info = logging.StreamHandler(sys.stdout)
    info.addFilter(_BelowWarning())
    info.setFormatter(logging.Formatter("%(message)s"))
    problems = logging.StreamHandler(sys.stderr)
    problems.setLevel(logging.WARNING)
    problems.setFormatter(_Prefixed("%(message)s"))
    for name in PROJECT_PACKAGES:
        logger = logging.getLogger(name)
        logger.handlers[:] = [info, problems]
        logger.setLevel(level)
        logger.propagate = False


def report(err: BaseException) -> None:
    print(f"error: {err}", file=sys.stderr, flush=True)


def run_main(main: Main, argv: Sequence[str] | None = None) -> int:
    """Runs `main(argv)`; returns its exit code, 1 after a UserError, 130 after Ctrl-C."""
    configure_logging()
    try:
        return int(main(argv) or 0)
    except UserError as err:
        report(err)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr, flush=True)
        return 130


def run_absl_main(main: Callable[[list[str]], int]) -> None:
    """absl's `app.run(main)` with the same error handling; exits the process."""
    from absl import app

    app.run(lambda argv: run_main(lambda _: main(argv)))
