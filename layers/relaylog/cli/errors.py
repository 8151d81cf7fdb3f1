"""The two ways a command fails, and their exit codes."""


class UsageError(Exception):
    """Bad command line: exit code 2."""


class CommandError(Exception):
    """The command could not do its job: exit code 1."""
