"""The ``acctsync`` command: ``sync``, ``status``, ``activities``, ``edit`` and ``demo``.

Needs the ``cli`` extra (``pip install 'acctsync[cli]'``): click parses, rich prints.
Every command takes ``--json`` and then writes one JSON document to stdout; the exit
status is an `ExitCode`.
"""

from acctsync.cli._exits import ExitCode
from acctsync.cli._main import main

__all__ = ["ExitCode", "main"]
