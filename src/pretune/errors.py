"""The one exception type users see: a one-line message naming the file/field and the fix."""

from __future__ import annotations


class PretuneError(Exception):
    """A user-facing error. The CLI prints ``error: <message>`` and exits with status 2.

    Messages are one line, name the file or config field at fault, and say how to fix it.
    """
