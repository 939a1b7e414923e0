"""Exceptions raised by pyro_saccade; the CLI prints their message as one line."""

from __future__ import annotations


class SaccadeError(Exception):
    """Base class of every error pyro_saccade raises on purpose."""


class CheckpointError(SaccadeError):
    """A checkpoint is missing, corrupted, of another format version or of another config."""


class TrainingDiverged(SaccadeError):
    """The loss became NaN or infinite; the last good checkpoint was kept."""
