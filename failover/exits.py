"""Exit codes shared by every command, and the error that carries one.

0 done, 1 failed, 2 usage or configuration error, 3 refused. A small module
of its own so that the on-call modules need not import the CLI."""

from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED = 0, 1, 2, 3


class Fail(Exception):
    """A command ends with `code` after printing `message` (one sentence, no traceback)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
