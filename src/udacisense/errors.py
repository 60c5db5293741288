"""The one exception type users see: a one-line message that says what to do."""


class UdaciSenseError(Exception):
    """A problem with the user's input or environment (not a bug).

    The CLI prints its message on one line and exits with status 2; anything
    else that escapes is a bug and keeps its traceback.
    """
