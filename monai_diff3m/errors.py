"""Errors a user can act on, and the hook that prints them last.

``python -m monai.bundle run`` evaluates configs through MONAI's ``ConfigExpression``, which re-raises any error as
``RuntimeError: Failed to evaluate ConfigExpression ...``; Python then prints the useful message (a missing
checkpoint, an empty image folder) in the middle of a long chained traceback. Errors of the types below say what to
do, and :func:`install_excepthook` (called when ``monai_diff3m`` is imported, which every bundle config does) prints
their message as the last line, after the usual traceback. Every other exception is printed as Python always does.
"""

from __future__ import annotations

import sys
from types import TracebackType

PREFIX = "monai-diff3m error: "


class UserInputError(Exception):
    """A problem with the user's files or settings, whose message names the file and says what to do."""


class MissingInputError(UserInputError, FileNotFoundError):
    """A file or folder the run needs does not exist (a checkpoint not trained yet, an image folder)."""


class InvalidInputError(UserInputError, ValueError):
    """A file exists but cannot be used (an empty or foreign checkpoint, one that does not fit the network)."""


def user_error_in(error: BaseException | None) -> UserInputError | None:
    """The first ``UserInputError`` in ``error``'s chain of causes (MONAI wraps it in a ``RuntimeError``), if any."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, UserInputError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def install_excepthook() -> None:
    """Print the message of an uncaught ``UserInputError`` (or of one it wraps) as the last line; idempotent."""
    if getattr(sys.excepthook, "__name__", "") == "_print_user_error_last":
        return
    previous = sys.excepthook

    def _print_user_error_last(
        kind: type[BaseException], error: BaseException, traceback: TracebackType | None
    ) -> None:
        previous(kind, error, traceback)
        user_error = user_error_in(error)
        if user_error is not None:
            print(f"\n{PREFIX}{user_error}", file=sys.stderr, flush=True)

    sys.excepthook = _print_user_error_last
