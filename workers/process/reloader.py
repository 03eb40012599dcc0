"""``--reload``: notice when a source file changes, by polling mtimes.

Standard library only (no inotify/FSEvents dependency): every ``interval`` seconds the
supervisor calls ``Watcher.changed()``, which walks the watched directories and
compares each ``*.py`` file's modification time and size with the previous scan
(``--reload-include`` globs add files, ``--reload-exclude`` globs take some away).
Virtual environments, caches and hidden directories are skipped. Meant for
development: a scan of a few thousand files takes milliseconds.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Iterator

__all__ = ["SKIP_DIRS", "Watcher"]

SKIP_DIRS = frozenset(
    {"__pycache__", "node_modules", "site-packages", "venv", ".venv", "env", "build", "dist"}
)
"""Directory names never descended into (besides hidden ones)."""


class Watcher:
    """Polls ``*.py`` files under ``dirs`` for changes.

    Args:
        dirs: directories to watch (recursively).
        patterns: file name globs that count (``--reload-include`` adds to ``*.py``);
            a glob with a ``/`` is matched against the path under the watched
            directory (``templates/*.html``).
        excludes: globs of files or directories never watched (``--reload-exclude``),
            matched against the name and against the path under the watched directory.
    """

    def __init__(
        self,
        dirs: Iterable[str],
        patterns: tuple[str, ...] = ("*.py",),
        excludes: tuple[str, ...] = (),
    ) -> None:
        self.dirs = [os.path.abspath(d) for d in dirs]
        self.patterns = patterns
        self.excludes = excludes
        self._seen = self._scan()

    @staticmethod
    def _matches(name: str, rel: str, globs: tuple[str, ...]) -> bool:
        return any(fnmatch.fnmatch(rel if "/" in g else name, g) for g in globs)

    def _files(self) -> Iterator[str]:
        for root in self.dirs:
            for dirpath, dirnames, filenames in os.walk(root):
                here = os.path.relpath(dirpath, root).replace(os.sep, "/")
                prefix = "" if here == "." else here + "/"
                dirnames[:] = [
                    d for d in dirnames if not d.startswith(".") and d not in SKIP_DIRS
                    and not self._matches(d, prefix + d, self.excludes)
                ]
                for name in filenames:
                    rel = prefix + name
                    if self._matches(name, rel, self.patterns) and not self._matches(
                        name, rel, self.excludes
                    ):
                        yield os.path.join(dirpath, name)

    def _scan(self) -> dict[str, tuple[int, int]]:
        seen: dict[str, tuple[int, int]] = {}
        for path in self._files():
            try:
                st = os.stat(path)
            except OSError:  # removed between the walk and the stat
                continue
            seen[path] = (st.st_mtime_ns, st.st_size)
        return seen

    @property
    def count(self) -> int:
        """How many files the last scan found."""
        return len(self._seen)

    def display(self, path: str) -> str:
        """``path`` relative to the watched directory holding it (for log lines)."""
        for root in self.dirs:
            if path.startswith(root + os.sep):
                return os.path.relpath(path, root)
        return path

    def changed(self) -> list[str]:
        """Rescan; return the files added, removed or modified since the last scan."""
        now = self._scan()
        before = self._seen
        self._seen = now
        diff = [p for p, sig in now.items() if before.get(p) != sig]
        diff += [p for p in before if p not in now]
        return sorted(diff)
