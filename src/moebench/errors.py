"""The user-facing errors of every study.

Everything a user can cause with a bad file, value, key or command line raises a subclass of
:class:`MoebenchError` whose ``str()`` is one line naming the file, key or value. The CLIs
print such errors as one line (exit code 2); every other exception is a bug and keeps its
traceback.
"""
from __future__ import annotations


class MoebenchError(Exception):
    """Base of all user-facing errors; ``str()`` is one line."""


class ParamsError(MoebenchError, ValueError):
    """A bad params key or value (the message names the file and the key)."""


class HparamsError(ParamsError):
    """A bad hyperparameter key or value."""


class DataError(MoebenchError, ValueError):
    """A data file, folder or download that cannot be used as it is."""


class RunError(MoebenchError, RuntimeError):
    """A run directory, checkpoint or plan that cannot be used as it is."""


class UsageError(MoebenchError, ValueError):
    """A bad command line or argument combination."""
