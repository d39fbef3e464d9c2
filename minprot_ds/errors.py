"""The one exception users see as a message, not a traceback."""


class UserError(Exception):
    """A problem the user can fix: one sentence naming the file, record, key or flag, and the fix.

    The CLI and the launch scripts print it and exit non-zero; library code raises it wherever bad input
    can be detected.
    """
