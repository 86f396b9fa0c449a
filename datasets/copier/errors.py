"""The one exception the copier raises on purpose: a reason a program can act on, a message a person can."""

from __future__ import annotations


class CopierError(Exception):
    """Ends the run with `{"event": "error", "reason": ..., "message": ...}` and exit code 2.

    Reasons: AccessDenied, NoSuchBucket, NoSuchRepo, NoSuchRevision, EmptySource, SourceUnreachable,
    NoSpace, CopyFailed, DestinationUnwritable, Busy, Interrupted, BadArguments.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
