"""Exceptions for mistakes a user can make, shown as one sentence without a traceback."""

import sys


class MambavizError(Exception):
    """An invalid input or setting: the message names the bad value and what is accepted."""


class ModelLoadError(MambavizError):
    """A checkpoint that is missing, corrupt, pickle-only or incompatible with the target."""


class TraceError(MambavizError):
    """A trace file that is malformed, of an unknown schema version or too large."""


def run_with_exit_status(args) -> int:
    """Run the command that argparse chose (`args.run`); on MambavizError print its sentence and return 2."""
    try:
        return args.run(args)
    except MambavizError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
