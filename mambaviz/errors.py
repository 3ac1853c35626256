"""Exceptions for mistakes a user can make, shown as one sentence without a traceback."""


class MambavizError(Exception):
    """An invalid input or setting: the message names the bad value and what is accepted."""


class ModelLoadError(MambavizError):
    """A checkpoint that is missing, corrupt, pickle-only or incompatible with the target."""


class TraceError(MambavizError):
    """A trace file that is malformed, of an unknown schema version or too large."""
