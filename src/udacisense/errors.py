"""The exception types users see: a one-line message that says what to do."""


class UdaciSenseError(Exception):
    """A problem with the user's input or environment (not a bug).

    The CLI prints its message on one line and exits with ``exit_status`` (2); anything
    else that escapes is a bug and keeps its traceback.
    """

    exit_status = 2


class TrainingFailed(UdaciSenseError):
    """A training job that ran but produced no usable model (diverged, or ended at chance): exit status 1."""

    exit_status = 1


class StorageFull(UdaciSenseError):
    """A write failed because the disk or quota is full: the job stopped (exit status 1), and files written before,
    each written atomically, are intact."""

    exit_status = 1
