"""The exit codes of the ``acctsync`` command, one per kind of outcome a script acts on."""

from __future__ import annotations

import enum

__all__ = ["ExitCode"]


class ExitCode(enum.IntEnum):
    """What an ``acctsync`` command's exit status means."""

    OK = 0
    """Done."""
    UNEXPECTED = 1
    """An error acctsync did not expect (a bug): the traceback is on stderr.

    Also, with nothing on stderr, how click ends a command whose reader closed the pipe.
    """
    USAGE = 2
    """The command could not start: bad arguments or settings, missing credentials or a
    missing extra. Nothing was read or written."""
    REJECTED = 3
    """The sync finished, but rejected records (rule R7): the rest was applied."""
    REFUSED = 4
    """The database holds no such record, or the rules refuse the change: no such
    contact or account, a contact without an account (rule S5), a field the org's
    accounts have not got (rule R9), a person that is already a contact (rule S6)."""
    LOCKED = 5
    """Another runner held the org's store for longer than ``--lock-timeout``."""
    SOURCE = 6
    """Salesforce or the export folder failed; what was applied before stays."""
    STORE = 7
    """The database failed, or was written by a newer acctsync."""
    BUDGET = 8
    """The API budget ran out: the org's API usage passed ``--max-api-share`` of its daily
    allowance, or Salesforce refused a request because the allowance is spent. What was
    applied before stays; the next sync goes on from there once usage has fallen."""
    CHECK_FAILED = 9
    """``status --check``: the last sync of an org failed, never ran, or ended longer ago
    than ``--max-age``."""
    INTERRUPTED = 130
    """Stopped by Ctrl-C (SIGINT) before it finished."""
    TERMINATED = 143
    """Stopped by SIGTERM before it finished."""
