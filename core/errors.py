"""The one base class of every error a user can cause and fix.

Bad annotations, a malformed pipeline.config, a checkpoint that does not fit, corrupt
records, a label map that disagrees with the model: each package raises its own subclass
(LabelMapError, PipelineConfigError, CheckpointError, ...), and every command prints any
of them as one `error: <message>` line through `core.cli`, never as a traceback. An
exception that is not a UserError is a bug of ours and keeps its traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """Something in the user's input, configuration or environment that they can fix; the
    message names the file, record or field and what to change."""


class UsageError(UserError):
    """The command line is incomplete or inconsistent."""


class OutputError(UserError):
    """An output path cannot be written as asked (a file where a directory is needed, a
    directory holding someone else's files, no space left, read-only)."""
