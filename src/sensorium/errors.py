"""Errors that reach the user as one clear message (file + problem), without a traceback."""


class SensoriumError(Exception):
    """Base class: the CLI prints the message and exits non-zero."""


class _Located(SensoriumError):
    """`Error(where, problem)` -> "where: problem".

    Also constructible from one message, because DataLoader re-raises a worker's exception as
    `type(exc)(message)`; `user_message` then recovers the original one-line message from the
    worker's traceback text.
    """

    def __init__(self, where, problem: str | None = None):
        if problem is None:
            self.path, self.problem = None, str(where)
            super().__init__(str(where))
        else:
            self.path, self.problem = str(where), problem
            super().__init__(f"{self.path}: {problem}")


class DataError(_Located):
    """A dataset file is missing, unreadable or malformed, or a dataset cannot serve the run as
    configured: `DataError(path, problem)`."""


class ConfigError(_Located, ValueError):
    """A configuration value or command-line flag that cannot run: `ConfigError(where, problem)`,
    where `where` names the option (`data.batch_size`), the YAML or the command. A ValueError too,
    so library callers that catch ValueError for a bad argument keep working."""


class DoctorError(SensoriumError):
    """A training run is broken in a way that would silently waste it (see engine/doctor.py)."""


def user_message(error: BaseException) -> str:
    """The one line to show for an error: for an exception re-raised from a DataLoader worker
    (whose text carries the worker's traceback), the original exception's own message."""
    text = str(error).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        # "sensorium.errors.DataError: path: problem" -> "path: problem"
        return last.split(": ", 1)[1] if ": " in last else last
    return text
