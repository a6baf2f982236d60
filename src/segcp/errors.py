"""The one exception type users see.

Every problem with user input (a file, an array, a parameter) raises :class:`SegcpError`
with a single-line message that names the offending file or parameter and the problem.
The CLI prints that line and exits non-zero; it never shows a traceback for these.
"""

from __future__ import annotations


class SegcpError(ValueError):
    """Bad input or an impossible request, with a one-line, user-facing message."""

    def __init__(self, message: str) -> None:
        # Keep the message on one line whatever the caller passed.
        super().__init__(" ".join(str(message).split()))
