"""Process titles: what ``ps`` and ``top`` say a server process is (``--name``).

With ``setproctitle`` installed (optional, not a dependency) the whole command line
reads ``reactor: server [NAME]``, ``reactor: supervisor [NAME]`` or
``reactor: server process [NAME]``, as gunicorn's do. Without it, on Linux, the
kernel's short name (``/proc/self/comm``, 15 bytes, what ``top``, ``pgrep`` and
``ps -o comm`` show) becomes NAME, or ``reactor`` for an unnamed server. Children of
the supervisor run ``python -m mioreactor.workers.process.child``, so even their full
command line says what they are.
"""

from __future__ import annotations

import contextlib
import importlib

__all__ = ["set_title", "title"]

COMM_MAX = 15  # TASK_COMM_LEN - 1


def title(role: str, name: str | None) -> str:
    """``reactor: ROLE [NAME]`` (without the brackets when there is no name)."""
    return f"reactor: {role} [{name}]" if name else f"reactor: {role}"


def set_title(role: str, name: str | None) -> str:
    """Set this process's title for ``role`` (``server``, ``supervisor``,
    ``server process``); return the title. Never fails: a title is a courtesy."""
    text = title(role, name)
    try:
        module = importlib.import_module("setproctitle")
    except ImportError:
        module = None
    if module is not None:
        with contextlib.suppress(Exception):
            module.setproctitle(text)
    short = (name or "reactor").encode("utf-8", "replace")[:COMM_MAX]
    with contextlib.suppress(OSError), open("/proc/self/comm", "wb") as f:
        f.write(short)
    return text
