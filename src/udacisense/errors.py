"""The exception types users see: a one-line message that says what to do."""

from __future__ import annotations


def first_line(error: BaseException, limit: int | None = None, default: str | None = None) -> str:
    """What a one-line message quotes of another library's exception: the first line of its message (at most ``limit``
    characters), or ``default`` (the exception type's name) when it has none."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else default or type(error).__name__


class UdaciSenseError(Exception):
    """A problem with the user's input or environment (not a bug).

    The CLI prints its message on one line, after ``label``, and exits with ``exit_status`` (2); anything
    else that escapes is a bug and keeps its traceback.
    """

    exit_status = 2
    label = "error"


class TrainingFailed(UdaciSenseError):
    """A training job that ran but produced no usable model (diverged, or ended at chance): exit status 1."""

    exit_status = 1
    label = "TRAINING FAILED"


class CompressionFailed(TrainingFailed):
    """A compression stage that ran but left no usable model: its model fell to chance, or the artifact it built
    disagrees with the model it was converted from. Exit status 1."""

    label = "COMPRESSION FAILED"


class ValidationFailed(UdaciSenseError):
    """A shipped artifact failed its check in its own runtime (agreement with its source, logit drift): the job
    wrote everything (bundle, report) and says which artifact failed which check. Exit status 1."""

    exit_status = 1
    label = "VALIDATION FAILED"


class ExportFailed(UdaciSenseError):
    """A format's converter could not handle the model (an operator it has no lowering for): one line in its words,
    which name the operator, and exit status 1."""

    exit_status = 1
    label = "EXPORT FAILED"


class StorageFull(UdaciSenseError):
    """A write failed because the disk or quota is full: the job stopped (exit status 1), and files written before,
    each written atomically, are intact."""

    exit_status = 1
