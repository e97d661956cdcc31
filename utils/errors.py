"""User-facing errors.

Anything a user can fix (a missing folder, a config typo, a checkpoint for another model) raises a
subclass of :class:`TSDError` whose message names the culprit and the fix in one line. The entry
points (``train.py``, ``test.py``, ``tools/*``) print that line and exit non-zero; the traceback goes
to the log file only.
"""


class TSDError(Exception):
    """Base class of errors caused by user input (data, config, checkpoint, command line)."""


class ConfigError(TSDError):
    """Invalid configuration: unknown key, wrong type or inconsistent values."""


class DataError(TSDError):
    """Missing or malformed data set files (images, masks, split lists)."""


class CheckpointError(TSDError):
    """A checkpoint that is missing, unreadable or does not fit the model."""


def user_message(exc: BaseException) -> str:
    """The one-line message to show for ``exc``.

    DataLoader workers re-raise a worker's exception in the main process with the worker traceback
    folded into the message ("Caught DataError in DataLoader worker process 0. Original Traceback
    ..."); the user-facing part is the last line, after the exception class name.
    """
    msg = str(exc).strip()
    if "Original Traceback" in msg:
        last = msg.splitlines()[-1]
        msg = last.split(": ", 1)[1] if ": " in last else last
    return msg.splitlines()[0] if msg else type(exc).__name__
