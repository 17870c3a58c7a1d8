"""A tour of acctsync, synced into a SQLite file: ``python -m acctsync.demo [--db PATH]``.

The same as ``acctsync demo`` (see `acctsync.cli`): a synthetic org of accounts of every
size, synced into a real database, shows the Change Data Value log, the 5,000-contact
threshold, a local edit reaching every contact and then being overwritten by Salesforce,
and Convert Person. A later run on the same file resumes from the stored watermarks.
Needs the ``cli`` extra.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the tour with ``argv`` (``--db PATH``, ``--json``); the exit status."""
    from acctsync.cli import main as acctsync

    return acctsync(["demo", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
