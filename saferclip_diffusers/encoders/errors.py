"""The errors every encoder loader raises."""

from __future__ import annotations


class PickleCheckpointError(ValueError):
    """A checkpoint holds only pickle weights and ``allow_pickle`` was not given."""


class IncompatibleEncoderError(ValueError):
    """A safe encoder does not fit the pipeline it is meant for, or its weights do not fit the model."""
