"""User-facing errors of crbm_core.

Every problem a user can cause (a bad file, a bad parameter) raises one of these with a message
that names the file, the dataset and the problem, so the CLI and the dashboard can show it as is.
"""

from __future__ import annotations


class CrbmError(Exception):
    """Base class of errors caused by input rather than by a bug."""


class RecordingError(CrbmError, ValueError):
    """A recording file or array is unusable; names the file, the dataset and the problem."""

    def __init__(self, problem: str, *, path: str | None = None, dataset: str | None = None):
        self.path = path
        self.dataset = dataset
        self.problem = problem
        where = ":".join(str(p) for p in (path, dataset) if p)
        super().__init__(f"{where}: {problem}" if where else problem)


class ParameterError(CrbmError, ValueError):
    """An impossible or inconsistent parameter value."""
