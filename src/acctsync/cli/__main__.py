"""``python -m acctsync.cli``: the ``acctsync`` command."""

from acctsync.cli import main

raise SystemExit(main())
