"""Errors that reach the user as one clear message (file + problem), without a traceback."""


class SensoriumError(Exception):
    """Base class: the CLI prints the message and exits non-zero."""


class DataError(SensoriumError):
    """A dataset file is missing, unreadable or malformed. The message names the file and the problem."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class DoctorError(SensoriumError):
    """A training run is broken in a way that would silently waste it (see engine/doctor.py)."""
