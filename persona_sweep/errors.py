"""The one error a user sees, and how a library's error becomes one line of it.

Everyone imports this module; it imports nothing of ours.
"""
from __future__ import annotations


class SweepError(ValueError):
    """A sweep file or override that cannot be used; the message is one line for the user."""


def first_line(error: BaseException) -> str:
    """A library error's first line (or its type), for a one-line message to the user."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
