"""``python -m mioreactor.workers.process.child FD``: a server process of the supervisor.

The supervisor starts each server process this way (a readable command line in ``ps``,
not ``python -c "import sys; ..."``); ``FD`` is the child's end of its socketpair.
Everything else is ``mioreactor.workers.process.runner.child_main``.
"""

from __future__ import annotations

import sys

from .runner import child_main

if __name__ == "__main__":
    child_main(int(sys.argv[1]))
