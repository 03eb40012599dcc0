"""Config: everything ``reactor serve`` does, as one checked value.

The CLI builds a ``Config`` from its options and hands it to
``mioreactor.workers.process.supervisor.run``; Python code can do the same::

    from mioreactor.workers.process.config import Config
    from mioreactor.workers.process.supervisor import run

    run(Config(app="myproject.wsgi:application", binds=("0.0.0.0:8000",), processes=4))

A ``Config`` is plain data (it crosses a process boundary as JSON to reach the
children of ``--processes``) and is checked once, at construction: a bad value raises
``ConfigError`` whose message is the one line the CLI prints.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from ...reactor.net import parse_host_port
from ...reactor.sys import available_backends
from ..http.limits import HttpConfig
from ..server.binds import BindError, parse_bind, split_scheme
from ..tls.context import TlsConfig, TlsError
from .appload import AppLoadError, split_app_spec

__all__ = [
    "ACCESS_LOG_KEYS",
    "DEFAULT_BIND",
    "LOG_LEVELS",
    "Config",
    "ConfigError",
    "Interface",
    "Share",
    "check_access_log_format",
    "parse_forwarded_allow_ips",
    "parse_size",
    "parse_unix_mode",
]

DEFAULT_BIND = "127.0.0.1:8080"
"""Where ``reactor serve`` listens when given no ``--bind`` and no systemd sockets."""

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")

ACCESS_LOG_KEYS = ("h", "r", "m", "U", "q", "H", "s", "b", "D", "T", "a", "f")
"""The ``%(key)s`` names ``mioreactor.workers.http.accesslog`` fills in."""

Interface = Literal["auto", "wsgi", "asgi", "handler"]
Share = Literal["auto", "reuseport", "inherit"]

_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


class ConfigError(ValueError):
    """A configuration value that cannot work; the message is one line naming it."""


def parse_size(text: str | int) -> int:
    """``"65536"``, ``"64k"``, ``"1M"``, ``"2g"`` (binary units) to a byte count.

    Raises:
        ValueError: not a non-negative size.
    """
    if isinstance(text, int):
        value = text
    else:
        raw = text.strip().lower().removesuffix("b").removesuffix("i")
        unit = raw[-1:] if raw[-1:] in ("k", "m", "g") else ""
        number = raw[: len(raw) - len(unit)].strip()
        try:
            value = int(float(number) * _SIZE_UNITS[unit]) if number else -1
        except ValueError:
            value = -1
        if value < 0 or number.startswith("-"):
            raise ValueError(f"{text!r} is not a size (bytes, or with a unit: 64k, 1M, 2G)")
    if value < 0:
        raise ValueError(f"a size must not be negative, got {value}")
    return value


def parse_unix_mode(text: str | int | None) -> int | None:
    """Octal permission bits for Unix socket files: ``"660"``, ``"0o600"``, ``"0777"``.

    Raises:
        ValueError: not octal, or outside ``0..0o777``.
    """
    if text is None or isinstance(text, int):
        mode = text
    else:
        digits = text.strip().lower().removeprefix("0o")
        try:
            mode = int(digits, 8)
        except ValueError:
            raise ValueError(f"{text!r} is not an octal file mode such as 660") from None
    if mode is not None and not 0 <= mode <= 0o777:
        raise ValueError(f"file mode {mode:o} is outside 000..777")
    return mode


def parse_forwarded_allow_ips(text: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """A comma-separated list of IP addresses (or ``*``) to a tuple.

    Raises:
        ValueError: an entry that is neither ``*`` nor an IP address.
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        if item != "*":
            try:
                ipaddress.ip_address(item)
            except ValueError:
                raise ValueError(
                    f"{item!r} is not an IP address (give addresses, comma separated, or '*')"
                ) from None
        out.append(item)
    return tuple(out)


def check_access_log_format(fmt: str) -> None:
    """Raise ``ValueError`` naming the problem if ``fmt`` cannot format an access line."""
    atoms: dict[str, Any] = dict.fromkeys(ACCESS_LOG_KEYS, 0)
    try:
        fmt % atoms
    except KeyError as exc:
        raise ValueError(
            f"unknown access log key {exc.args[0]!r} (known: {', '.join(ACCESS_LOG_KEYS)})"
        ) from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad access log format {fmt!r}: {exc}") from None


def _systemd_sockets_waiting() -> bool:
    """True when systemd passed this process listening sockets (without taking them)."""
    try:
        return int(os.environ.get("LISTEN_PID", "")) == os.getpid() and int(
            os.environ.get("LISTEN_FDS", "")
        ) > 0
    except ValueError:
        return False


@dataclass(frozen=True)
class Config:
    """What ``reactor serve`` runs. Invalid values raise ``ConfigError``.

    Attributes:
        app: ``MODULE:ATTR`` (dotted attributes allowed) of the WSGI app or handler
            factory; ``None`` serves the built-in demo app.
        factory: ``app`` names a zero-argument callable that returns the app.
        app_dir: directory put first on ``sys.path`` before importing ``app``.
        interface: ``"wsgi"`` (HTTP/1.1 + WSGI), ``"asgi"`` (HTTP/1.1 + ASGI 3, or an
            ASGI 2 class), ``"handler"`` (a raw-protocol handler factory,
            ``factory(worker) -> Handler``) or ``"auto"``: told apart by the app's shape.
        lifespan: the ASGI lifespan protocol: ``"auto"``, ``"on"`` or ``"off"``.
        loop: the ASGI event loop: ``"auto"`` or ``"asyncio"``.
        ws: WebSocket for ASGI apps: ``"auto"`` (on) or ``"none"`` (upgrade requests
            reach the app as plain HTTP).
        ws_max_size: the largest WebSocket message, in bytes (1009 beyond).
        ws_ping_interval: seconds between keep-alive pings (0: none).
        ws_ping_timeout: seconds a pong may take before a 1011 close (0: never).
        ws_per_message_deflate: offer permessage-deflate (RFC 7692).
        binds: bind specs; empty means systemd's sockets if any, else ``DEFAULT_BIND``.
        unix_mode: permission bits for Unix socket files (``None``: the umask decides).
        workers: worker threads per process.
        processes: server processes; more than one runs a supervisor.
        share: how processes share TCP ports: ``reuseport`` (a SO_REUSEPORT listener
            per process slot and the kernel balances; an address another process
            listens on is joined, with a warning), ``inherit`` (the supervisor binds
            and the children inherit the listener), ``auto`` (reuseport on Linux,
            else inherit; either way an address another process listens on is
            refused, as a single process refuses it).
        backlog: the listen backlog asked of the kernel.
        max_connections: open connections per process at most.
        run_slots: worker threads that may run Python at once (``None``: automatic).
        handoff_ms: milliseconds a blocking app call keeps its run slot.
        graceful_timeout: seconds in-flight requests get to finish on shutdown.
        timeout: seconds a request may stay inside the app before it is logged with
            its thread's stack and counted as stuck (0: never); with several
            processes, a process whose every worker is stuck is replaced.
        pid_file: write the pid (of the supervisor, if one runs) here once the
            listeners are bound; removed on exit.
        user, group: drop privileges to them (names or numbers) after binding, before
            the app is imported; runs a supervisor, which keeps its own user.
        umask: the process umask, set first (None: leave the inherited one).
        max_requests: a process that has served this many requests is replaced
            (0: never); runs a supervisor even for one process.
        max_requests_jitter: each process's limit is ``max_requests`` plus a random
            0..jitter, so processes started together are not replaced together.
        backend: force a reactor backend (``epoll``, ``kqueue``, ``fallback``).
        http: limits, timeouts and logging of the HTTP handler.
        log_level: one of ``LOG_LEVELS`` (any case).
        access_logfile: write access lines to this file (``"-"``: stdout); the
            ``http.access_log`` switch still decides whether there are any.
        error_logfile: write the server's log to this file (``"-"``: stderr, the
            default), reopened when it is rotated away.
        log_config: a logging configuration file (dictConfig as ``.json`` or
            ``.toml``, fileConfig as ``.ini``/``.conf``), applied instead of the
            handlers above (``mioreactor.workers.process.logs``).
        name: a name for the processes' titles (``reactor: server [NAME]``).
        reload: restart the server processes when a ``.py`` file changes.
        reload_dirs: directories to watch (default: ``app_dir``).
        reload_includes: file name globs watched besides ``*.py`` (uvicorn's
            ``--reload-include``; ``*.html``, ``templates/*``).
        reload_excludes: globs of files (or directories) never watched, matched against
            the name and the path under the watched directory.
        limit_concurrency: open connections per process beyond which a new one is
            answered 503 and closed (uvicorn's); None: no limit.
        reload_interval: seconds between scans of the watched files.
        use_systemd: adopt systemd socket activation sockets (LISTEN_FDS).
        reuse_port: set SO_REUSEPORT on TCP listeners (set by the supervisor).
        startup_timeout: seconds a new process may take to start serving.
        tls: TLS settings (docs/tls.md): every TCP bind serves TLS, except binds
            written ``http://...``; ``https://unix:PATH`` serves TLS on a Unix socket.
        metrics_bind: ``HOST:PORT`` where ``/metrics`` is served (Prometheus text
            format, summed over the processes; docs/metrics.md); None serves none.
    """

    app: str | None = None
    factory: bool = False
    app_dir: str = "."
    interface: Interface = "auto"
    lifespan: str = "auto"
    loop: str = "auto"
    ws: str = "auto"
    ws_max_size: int = 16 * 1024 * 1024
    ws_ping_interval: float = 20.0
    ws_ping_timeout: float = 20.0
    ws_per_message_deflate: bool = True
    binds: tuple[str, ...] = ()
    unix_mode: int | None = None
    workers: int = 4
    processes: int = 1
    share: Share = "auto"
    backlog: int = 1024
    max_connections: int = 10000
    run_slots: int | None = None
    handoff_ms: float = 2.0
    graceful_timeout: float = 30.0
    timeout: float = 30.0
    max_requests: int = 0
    max_requests_jitter: int = 0
    pid_file: str | None = None
    user: str | None = None
    group: str | None = None
    umask: int | None = None
    backend: str | None = None
    http: HttpConfig = field(default_factory=HttpConfig)
    log_level: str = "info"
    access_logfile: str | None = None
    error_logfile: str | None = None
    log_config: str | None = None
    name: str | None = None
    reload: bool = False
    reload_dirs: tuple[str, ...] = ()
    reload_includes: tuple[str, ...] = ()
    reload_excludes: tuple[str, ...] = ()
    limit_concurrency: int | None = None
    reload_interval: float = 1.0
    use_systemd: bool = True
    reuse_port: bool = False
    startup_timeout: float = 30.0
    metrics_bind: str | None = None
    tls: TlsConfig | None = None

    def __post_init__(self) -> None:
        for spec in self.binds:
            try:
                parse_bind(spec)
            except BindError as exc:
                raise ConfigError(str(exc)) from None
            if self.tls is None and split_scheme(spec)[0] == "https":
                raise ConfigError(f"bind {spec!r}: https:// needs a certificate (--certfile)")
        if self.app is not None:
            try:
                split_app_spec(self.app)
            except AppLoadError as exc:
                raise ConfigError(str(exc)) from None
        if self.interface not in ("auto", "wsgi", "asgi", "handler"):
            raise ConfigError(f"interface must be auto, wsgi, asgi or handler, got {self.interface!r}")
        if self.lifespan not in ("auto", "on", "off"):
            raise ConfigError(f"lifespan must be auto, on or off, got {self.lifespan!r}")
        if self.loop not in ("auto", "asyncio", "uvloop"):
            raise ConfigError(f"loop must be auto, asyncio or uvloop, got {self.loop!r}")
        if self.ws not in ("auto", "none"):
            raise ConfigError(f"ws must be auto or none, got {self.ws!r}")
        if self.ws_max_size < 1 or self.ws_ping_interval < 0 or self.ws_ping_timeout < 0:
            raise ConfigError("ws_max_size must be positive, the ws ping times not negative")
        if self.app is None and self.interface not in ("auto", "wsgi"):
            raise ConfigError("the built-in demo app is WSGI: give MODULE:FACTORY with --interface handler")
        if self.share not in ("auto", "reuseport", "inherit"):
            raise ConfigError(f"share must be auto, reuseport or inherit, got {self.share!r}")
        if self.limit_concurrency is not None and self.limit_concurrency < 1:
            raise ConfigError(f"limit_concurrency must be at least 1, got {self.limit_concurrency}")
        for name in ("workers", "processes", "backlog", "max_connections"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_requests", "max_requests_jitter"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.umask is not None and not 0 <= self.umask <= 0o777:
            raise ConfigError(f"umask {self.umask:o} is outside 000..777")
        if self.run_slots is not None and self.run_slots < 1:
            raise ConfigError(f"run_slots must be at least 1, got {self.run_slots}")
        for name in ("handoff_ms", "graceful_timeout", "timeout"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)}")
        for name in ("reload_interval", "startup_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if isinstance(self.log_level, str) and self.log_level.lower() in LOG_LEVELS:
            object.__setattr__(self, "log_level", self.log_level.lower())  # DEBUG is debug
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
        if self.backend is not None and self.backend not in ("epoll", "kqueue", "fallback"):
            raise ConfigError(f"unknown backend {self.backend!r} (epoll, kqueue or fallback)")
        if self.backend is not None and self.backend not in available_backends():
            raise ConfigError(
                f"backend {self.backend} is not available on this system; it offers "
                f"{', '.join(available_backends())}"
            )
        if self.log_config is not None and not os.path.isfile(self.log_config):
            raise ConfigError(f"--log-config {self.log_config}: no such file")
        if self.name is not None and not self.name.isprintable():
            raise ConfigError(f"name {self.name!r}: only printable characters")
        if self.metrics_bind is not None:
            try:
                parse_host_port(self.metrics_bind)
            except ValueError as exc:
                raise ConfigError(f"metrics bind: {exc}") from None
        try:
            parse_unix_mode(self.unix_mode)
            check_access_log_format(self.http.access_log_format)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    # -- derived values ------------------------------------------------------------
    @property
    def effective_binds(self) -> tuple[str, ...]:
        """``binds``, or ``DEFAULT_BIND`` when none were given and systemd passed none."""
        if self.binds:
            return self.binds
        if self.use_systemd and _systemd_sockets_waiting():
            return ()
        return (DEFAULT_BIND,)

    @property
    def supervised(self) -> bool:
        """Whether a supervisor process runs the servers (``processes > 1``, ``reload``
        ``max_requests``: recycling needs someone to start the replacement, or ``user`` /
        ``group``: the supervisor keeps its user, to remove the pid file and to bind the
        replacements' listeners)."""
        return (
            self.processes > 1 or self.reload or self.max_requests > 0
            or bool(self.user) or bool(self.group)
        )

    @property
    def log_level_number(self) -> int:
        return int(getattr(logging, self.log_level.upper()))

    def server_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``mioreactor.workers.Server`` (everything but the app)."""
        http = dataclasses.replace(
            self.http,
            multiprocess=self.processes > 1 or self.http.multiprocess,
        )
        return {
            "bind": list(self.effective_binds),
            "workers": self.workers,
            "http": http if self.interface != "handler" else None,
            "backlog": self.backlog,
            "max_connections": self.max_connections,
            "graceful_timeout": self.graceful_timeout,
            "timeout": self.timeout,
            "run_slots": self.run_slots,
            "handoff_after": self.handoff_ms / 1000.0,
            "backend": self.backend,
            "reuse_port": self.reuse_port,
            "unix_mode": self.unix_mode,
            "proxy_protocol": self.http.proxy_protocol,
            "use_systemd": self.use_systemd,
            "metrics_bind": self.metrics_bind,
            "ssl": self.tls,
            **({"interface": self.interface, "lifespan": self.lifespan, "loop": self.loop,
                "ws": self.ws, "ws_max_size": self.ws_max_size,
                "ws_ping_interval": self.ws_ping_interval,
                "ws_ping_timeout": self.ws_ping_timeout,
                "ws_per_message_deflate": self.ws_per_message_deflate}
               if self.interface != "handler" else {}),
            "limit_concurrency": self.limit_concurrency,
        }

    # -- crossing a process boundary -------------------------------------------------
    def to_json(self) -> str:
        """This configuration as a JSON document (``from_json`` reads it back)."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Config:
        """Rebuild a ``Config`` written by ``to_json``.

        Raises:
            ConfigError: the document is not a valid configuration.
        """
        try:
            data = json.loads(text)
            http = dict(data.pop("http"))
            http["forwarded_allow_ips"] = tuple(http.get("forwarded_allow_ips", ()))
            data["binds"] = tuple(data.get("binds", ()))
            for key in ("reload_dirs", "reload_includes", "reload_excludes"):
                data[key] = tuple(data.get(key, ()))
            tls = data.pop("tls", None)
            data["tls"] = TlsConfig(**tls) if tls is not None else None
            return cls(http=HttpConfig(**http), **data)
        except TlsError as exc:
            raise ConfigError(str(exc)) from None
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ConfigError(f"not a valid configuration document: {exc}") from None

    def replace(self, **changes: Any) -> Config:
        """A copy with ``changes`` applied (checked again)."""
        return dataclasses.replace(self, **changes)
