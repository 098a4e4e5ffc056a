"""Errors a user can act on.

Every error raised for a user's mistake (a bad path, a broken checkpoint, an invalid
setting) is an ``AltDiffusionError``: the CLI prints its message on one line and exits
with status 2 instead of showing a traceback.
"""


class AltDiffusionError(Exception):
    """Base class: the message says what is wrong, where, and how to fix it."""


class ModelNotFoundError(AltDiffusionError):
    """A model name or folder cannot be resolved to files on disk."""


class CheckpointError(AltDiffusionError):
    """Files exist but do not form a loadable checkpoint (missing, corrupt, mismatched)."""


class InvalidInputError(AltDiffusionError, ValueError):
    """A user-supplied setting or input file is invalid."""


class TrainingDivergedError(AltDiffusionError):
    """A training run produced a non-finite loss, gradient or weight; nothing was exported."""
