"""Typed failures: one sentence for the operator, an exit code for scripts.

Every face (CLI, TUI) turns these into what the operator sees; nothing else should
reach the operator, so the message must say what is wrong and what to do next.
"""


class CutoverError(Exception):
    """A failure the operator must read; `exit_code` follows the CLI contract."""

    exit_code = 1
    title = "Cutover error"

    def __init__(self, message: str, *, title: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if title is not None:
            self.title = title

    def __str__(self) -> str:
        return self.message


class Refused(CutoverError):
    """A gate, a lock or a check said no; nothing was changed."""

    title = "Refused"


class BadInput(CutoverError):
    """The operator's input (arguments, files) is wrong; nothing was changed."""

    exit_code = 2
    title = "Bad input"


class RunbookError(BadInput):
    title = "Runbook file"


class EnvFileError(BadInput):
    title = "Deploy env file"


class DatabaseUnreachable(CutoverError):
    exit_code = 3
    title = "Database unreachable"


class MigrationError(Refused):
    title = "Migration"
