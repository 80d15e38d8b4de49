"""Typed, user-facing errors.

Every error the CLI can report derives from RefocusError. Its message is one line
that names the file (or argument), says what is wrong and what to do, so the CLI
prints it as is, without a traceback.
"""
from __future__ import annotations

from pathlib import Path


class RefocusError(Exception):
    """Base class: the message is meant for the user, verbatim."""

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else Path(path)
        super().__init__(f"{path}: {message}" if path is not None else message)


class InputImageError(RefocusError):
    """The input photo cannot be read or used."""


class ModelLoadError(RefocusError):
    """A model folder is missing parts or its parts do not fit together."""


class OutputExistsError(RefocusError):
    """The output folder already holds results and --force was not given."""


class InvalidArgumentError(RefocusError):
    """An option value is out of range or malformed."""


class MissingDependencyError(RefocusError):
    """An optional package needed for the requested feature is not installed."""
