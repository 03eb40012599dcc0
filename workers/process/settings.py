"""Process-level settings of ``reactor serve``: pid file, user and group, umask.

The order is what makes them safe, and it is gunicorn's: set the umask first (it
governs the Unix socket files and the pid file), bind every listener (ports below 1024
need root), write the pid file, drop privileges, and only then import the app, so the
app's code never runs as root. Under the supervisor, the supervisor keeps its user
(it never imports the app; it binds, writes and removes the pid file, and starts the
replacements), and each server process binds its listeners and then drops its
privileges before it imports the app.

Every failure is a ``ServeError`` whose message is the one line the CLI prints.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import pwd
from collections.abc import Sequence
from typing import Any

__all__ = [
    "PidFile",
    "ProcessError",
    "apply_umask",
    "check_can_switch",
    "chown_unix_sockets",
    "drop_privileges",
    "resolve_ids",
]


class ProcessError(RuntimeError):
    """A pid file, user, group or umask that cannot work; one line naming it."""


def resolve_ids(user: str | None, group: str | None) -> tuple[int | None, int | None]:
    """``(uid, gid)`` for ``user`` and ``group`` (names or numbers); None where not given.

    A user without a group runs with the user's primary group.

    Raises:
        ProcessError: no such user or group.
    """
    uid = gid = None
    if user:
        try:
            entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        except KeyError:
            if not user.isdigit():
                raise ProcessError(f"--user {user!r}: no such user") from None
            uid = int(user)  # a uid with no passwd entry is allowed (containers)
        else:
            uid, gid = entry.pw_uid, entry.pw_gid
    if group:
        try:
            gid = grp.getgrgid(int(group)).gr_gid if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            if not group.isdigit():
                raise ProcessError(f"--group {group!r}: no such group") from None
            gid = int(group)
    return uid, gid


def check_can_switch(user: str | None, group: str | None) -> None:
    """Fail early (before anything starts) when this process cannot become ``user``/``group``.

    Raises:
        ProcessError: no such user or group, or not allowed to switch (not root).
    """
    uid, gid = resolve_ids(user, group)
    if os.geteuid() == 0:
        return
    if uid is not None and uid != os.geteuid():
        raise ProcessError(
            f"--user {user}: cannot switch to uid {uid} without root (running as uid "
            f"{os.geteuid()}); start as root, or leave out --user"
        )
    if gid is not None and gid != os.getegid():
        raise ProcessError(
            f"--group {group}: cannot switch to gid {gid} without root (running as gid "
            f"{os.getegid()}); start as root, or leave out --group"
        )


def drop_privileges(user: str | None, group: str | None) -> None:
    """Become ``user`` (and ``group``) for good: supplementary groups, gid, then uid.

    Raises:
        ProcessError: the switch failed, or root could be regained afterwards.
    """
    if not user and not group:
        return
    check_can_switch(user, group)
    uid, gid = resolve_ids(user, group)
    try:
        if gid is not None and os.geteuid() == 0:
            name = pwd.getpwuid(uid).pw_name if uid is not None and _has_passwd(uid) else None
            if name is not None:
                os.initgroups(name, gid)
            else:
                os.setgroups([gid])
        if gid is not None:
            os.setgid(gid)
        if uid is not None:
            os.setuid(uid)
    except OSError as exc:
        who = f"uid {uid}" if uid is not None else f"gid {gid}"
        raise ProcessError(f"cannot switch to {who}: {exc.strerror or exc}") from None
    if uid is not None and uid != 0:
        with contextlib.suppress(OSError):
            os.setuid(0)
            raise ProcessError(f"switched to uid {uid} but could become root again: refusing")


def _has_passwd(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def chown_unix_sockets(paths: Sequence[str], user: str | None, group: str | None) -> None:
    """Give the Unix socket files this process created to ``user``/``group`` (as gunicorn).

    Raises:
        ProcessError: the change failed.
    """
    uid, gid = resolve_ids(user, group)
    if uid is None and gid is None:
        return
    for path in paths:
        try:
            os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid)
        except OSError as exc:
            raise ProcessError(f"cannot chown {path!r}: {exc.strerror or exc}") from None


class PidFile:
    """``--pid FILE``: this process's id, written once the listeners are bound.

    ``create()`` refuses a file naming another process that still runs (two servers
    would fight over it); a stale file (its process is gone) is replaced. The write is
    atomic (a temporary file renamed over it). ``remove()`` removes the file only if it
    still names this process.
    """

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.pid = 0

    def check(self) -> None:
        """Fail before anything starts when another live process owns the file.

        Raises:
            ProcessError: the file names another process that still runs.
        """
        other = self._read()
        if other and other != os.getpid() and _alive(other):
            raise ProcessError(f"pid file {self.path} names process {other}, which is running")

    def create(self) -> None:
        """Raises: ProcessError: another live process owns it, or it cannot be written."""
        self.check()
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w") as f:
                f.write(f"{os.getpid()}\n")
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise ProcessError(f"cannot write pid file {self.path}: {exc.strerror or exc}") from None
        self.pid = os.getpid()

    def remove(self) -> None:
        if self.pid and self._read() == self.pid:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        self.pid = 0

    def _read(self) -> int:
        try:
            with open(self.path) as f:
                return int(f.read().strip() or 0)
        except (OSError, ValueError):
            return 0

    def __enter__(self) -> PidFile:
        self.create()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM  # exists, owned by someone else
    return True


def apply_umask(mask: int | None) -> None:
    """Set the process umask (inherited by the server processes); None leaves it."""
    if mask is not None:
        os.umask(mask)
