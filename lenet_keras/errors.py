"""Errors a user can cause and fix: bad experiment files, missing or corrupted data, run clashes.

The command line turns every `LenetKerasError` into a one-paragraph message on stderr and
exit code 2; anything else is a bug and keeps its traceback (exit code 1).
"""


class LenetKerasError(Exception):
    """Base class of the errors caused by user input (files, keys, values, paths)."""


class ConfigError(LenetKerasError):
    """An experiment file or override is invalid: unknown key, wrong type or impossible value."""


class DataNotFoundError(LenetKerasError):
    """A dataset is in none of the searched places and could not be downloaded."""


class ChecksumError(LenetKerasError):
    """A dataset file's content does not have the expected SHA-256 (or is truncated/corrupted)."""


class RunDirectoryError(LenetKerasError):
    """A run directory already exists, or the runs folder holds nothing usable for a report."""


class TrainingDivergedError(LenetKerasError):
    """The training loss became NaN or infinite (usually a learning rate far too high)."""
