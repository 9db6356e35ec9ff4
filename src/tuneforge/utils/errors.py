"""Errors meant for people: the CLI prints their message and exits without a traceback.

Every error tuneforge raises for people derives from `TuneforgeError` (its `exit_code` is what the CLI
exits with): `UserError` here, `ConfigError` (config/loader.py), `DataError` (data/conversation.py) and
the server's `ApiError` (serve/app.py, which answers with an HTTP status instead).
"""


class TuneforgeError(Exception):
    """The root of every error meant for people."""

    exit_code = 2


class UserError(TuneforgeError):
    """Something the user can fix (a missing package, a bad path, bad data). The message says how."""

    exit_code = 2


class NothingToDo(UserError):
    """The command has nothing to do (a finished run run again): said in a sentence, exit status 0."""

    exit_code = 0
