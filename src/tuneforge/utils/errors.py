"""Errors meant for people: the CLI prints their message and exits without a traceback."""


class UserError(Exception):
    """Something the user can fix (a missing package, a bad path, bad data). The message says how."""

    exit_code = 2


class NothingToDo(UserError):
    """The command has nothing to do (a finished run run again): said in a sentence, exit status 0."""

    exit_code = 0
