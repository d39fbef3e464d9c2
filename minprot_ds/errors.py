"""The one exception users see as a message, not a traceback."""


class UserError(Exception):
    """A problem the user can fix: one sentence naming the file, record, key or flag, and the fix.

    The CLI and the launch scripts print it and exit non-zero; library code raises it wherever bad input
    can be detected.
    """


def os_error_line(err: OSError) -> str:
    """An OSError as the one line a CLI or launch script prints: the file it names and the reason, no traceback
    (a file the user named could not be read or written: a read-only folder, /proc, a full disk)."""
    reason = err.strerror or str(err) or type(err).__name__
    if err.filename:
        return f"error: {err.filename}: {reason}"
    return f"error: {reason} (reading or writing one of the files given; check them and the disk)"
