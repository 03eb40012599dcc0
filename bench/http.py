"""Issue 4's HTTP benchmark: keep-alive and ``Connection: close`` hello, 50 connections.

``python3 -m bench.http [run.py options]`` is ``bench.run`` limited to those two
scenarios and to ours, uvicorn (WSGI interface), waitress and gunicorn (gthread);
the issue-4 target (ours >= 2x waitress keep-alive) is among the printed checks.
Run it as a module: as a script its directory would shadow the standard ``http``.
"""

from __future__ import annotations

import sys

from bench.run import main as run_main

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run the two HTTP scenarios; extra arguments go to ``bench.run``."""
    args = list(sys.argv[1:] if argv is None else argv)
    return run_main(["--scenarios", "keepalive,close", "--servers",
                     "ours,uvicorn,waitress,gunicorn", *args])


if __name__ == "__main__":
    raise SystemExit(main())
