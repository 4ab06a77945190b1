"""PipelineConfigError: one problem of a pipeline.config, or every problem of one file.

A user fixing a config wants all of its problems in one run, not one per run, so the
loader collects them and raises a single error listing each with its line:

    error: my.config: 3 problems:
      my.config:9: unknown field 'num_clases' in FasterRcnn (...)
      my.config:14: model.faster_rcnn.second_stage_batch_size: ...
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Iterator, TypeVar

from core.errors import UserError
from pipelines import text_fields

T = TypeVar("T")


class PipelineConfigError(UserError, ValueError):
    """A pipeline config is malformed or asks for something this project does not do.

    `field` is the dotted path of the offending field (e.g. "train_config.batch_size");
    `detail` says what is wrong with it. A combined error (see `combine`) keeps the single
    problems in `problems` and takes `field` from the first.
    """

    def __init__(self, detail: str, field: str = "", source: str = "", line: int | None = None,
                 problems: Iterable["PipelineConfigError"] = ()):
        self.detail, self.field, self.source, self.line = detail, field, source, line
        self.problems = list(problems)
        if self.problems:
            self.field = self.problems[0].field
            sources = {p.source for p in self.problems if p.source}
            head = (next(iter(sources)) + ": " if len(sources) == 1 else "")
            lines = "\n".join(f"  {p}" for p in self.problems)
            super().__init__(f"{head}{len(self.problems)} problems:\n{lines}")
            return
        where = source + (f":{line}" if line else "")
        super().__init__(": ".join(p for p in (where, field, detail) if p))

    @classmethod
    def combine(cls, problems: Iterable["PipelineConfigError"]) -> "PipelineConfigError":
        """One error for all `problems` (flattened, ordered by file and line)."""
        flat: list[PipelineConfigError] = []
        for problem in problems:
            for single in problem.problems or [problem]:
                if not any(str(single) == str(seen) for seen in flat):
                    flat.append(single)
        flat.sort(key=lambda p: (p.source, p.line is None, p.line or 0))
        if len(flat) == 1:
            return flat[0]
        return cls(f"{len(flat)} problems", problems=flat)

    def located(self, source: str, text: str) -> "PipelineConfigError":
        """The same error, pointing at the field's line in `text` when it can be found."""
        if self.problems:
            return PipelineConfigError.combine(p.located(source, text) for p in self.problems)
        if self.source and self.source != source:  # e.g. a --config_override fragment
            return self
        line = self.line or (text_fields.line_of(text_fields.scan(text), self.field)
                             if self.field else None)
        return PipelineConfigError(self.detail, self.field, source, line)


class Problems:
    """Collects PipelineConfigErrors, so a builder checks everything before it reports."""

    def __init__(self) -> None:
        self.found: list[PipelineConfigError] = []

    def add(self, detail: str, field: str) -> None:
        self.found.append(PipelineConfigError(detail, field))

    @contextlib.contextmanager
    def check(self) -> Iterator[None]:
        """Records a PipelineConfigError raised inside the block instead of raising it."""
        try:
            yield
        except PipelineConfigError as err:
            self.found.append(err)

    def value(self, function: Callable[..., T], *args, default: T) -> T:
        """function(*args), or `default` after recording the error it raised."""
        try:
            return function(*args)
        except PipelineConfigError as err:
            self.found.append(err)
            return default

    def raise_any(self) -> None:
        if self.found:
            raise PipelineConfigError.combine(self.found)
