"""``reactor``: the command line of mioreactor (serve, bench, doctor, top).

A thin front end: each command turns its options into a value of the library
(``mioreactor.workers.process.config.Config``, ``mioreactor.workers.tools.loadgen.BenchConfig``) and calls the library
(``mioreactor.workers.process.supervisor.run``, ``mioreactor.workers.tools.loadgen.run_bench``, ``mioreactor.workers.tools.doctor.diagnose``,
``mioreactor.workers.tools.top.run_terminal``).
Every option has help text, shows its default, and reads an environment variable:
``REACTOR_<OPTION>`` for ``serve`` (``REACTOR_BIND``, ``REACTOR_WORKERS``, ...),
``REACTOR_BENCH_<OPTION>``, ``REACTOR_DOCTOR_<OPTION>`` and ``REACTOR_TOP_<OPTION>`` for
the others. A mistake
ends with one line naming it and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any

import click

try:
    from .workers.http.limits import HttpConfig
    from .workers.process.config import (
        DEFAULT_BIND,
        LOG_LEVELS,
        Config,
        ConfigError,
        check_access_log_format,
        parse_forwarded_allow_ips,
        parse_size,
        parse_unix_mode,
    )
    from .workers.tls.context import CERT_REQS, MIN_VERSIONS, TlsConfig, TlsError
except ImportError as exc:  # REACTOR_BACKEND (--backend's variable) names a missing backend
    if "REACTOR_BACKEND" not in str(exc):
        raise
    sys.exit(f"Error: {exc}")

__all__ = ["bench", "doctor", "main", "reactor", "serve", "top"]

HTTP = HttpConfig()  # the defaults every HTTP option shows
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


if TYPE_CHECKING:  # click >= 8.2 types ParamType as a generic; 8.1 does not subscript
    _IntParamType = click.ParamType[int]
else:
    _IntParamType = click.ParamType


class Size(_IntParamType):
    """A byte count: ``65536``, ``64k``, ``1M``, ``2G`` (binary units)."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            return parse_size(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


SIZE = Size()
POSITIVE_INT = click.IntRange(min=1)
SECONDS = click.FloatRange(min=0, min_open=True)


def _check_binds(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    from .workers.server.binds import BindError, parse_bind

    for spec in value:
        try:
            parse_bind(spec)
        except BindError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


def _check_mode(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    try:
        return parse_unix_mode(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _check_umask(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    try:
        return parse_unix_mode(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc).replace("file mode", "umask")) from None


def _check_ips(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    try:
        return parse_forwarded_allow_ips(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _check_log_format(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        check_access_log_format(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def _check_metrics_bind(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from .reactor.net import parse_host_port

    if value is not None:
        try:
            parse_host_port(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


def _check_app(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from .workers.process.appload import AppLoadError, split_app_spec

    if value is not None:
        try:
            split_app_spec(value)
        except AppLoadError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


class _Processes(click.IntRange):
    """``--processes/-p``: a count; gunicorn's ``-p FILE`` (a pid file) gets a hint."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip().lstrip("+-").isdigit():
            self.fail(f"{value!r} is not a number of processes; a pid file is --pid FILE "
                      "here (gunicorn's -p)", param, ctx)
        return super().convert(value, param, ctx)


class _ServeCommand(click.Command):
    """``reactor serve``: an option of gunicorn or uvicorn that is not ours gets a
    one-line hint naming ours (``mioreactor.workers.process.habits``), not click's guess
    by spelling."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            from .workers.process.habits import hint_for

            hint = hint_for(exc.option_name)
            if hint is None:
                raise
            raise click.UsageError(f"no option {exc.option_name} here: {hint}", ctx) from None


# -- config files and --print-config ------------------------------------------------------
_NOT_IN_FILES = frozenset({"config_file", "print_config", "check_config", "help"})
_LIST_AS_TEXT = frozenset({"forwarded_allow_ips"})  # a list in a file, a comma list on the CLI


def _load_config_file(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Eager: read the TOML file and make its values the command's defaults.

    Click then takes each value from the command line, else the environment, else
    this ``default_map``, else the option's default; ``ctx.get_parameter_source``
    says which, for ``--print-config``. Every key is checked here, so a mistake
    names the file and the key.
    """
    if not value:
        return value
    from .workers.process.configfile import read_config_file

    try:
        data = read_config_file(value)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    params = {p.name: p for p in ctx.command.params if p.name and p.name not in _NOT_IN_FILES}
    defaults: dict[str, Any] = {}
    for name, raw in data.items():
        key = name.replace("_", "-")
        target = params.get(name)
        if target is None:
            import difflib

            close = difflib.get_close_matches(key, [n.replace("_", "-") for n in params], 1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise click.ClickException(
                f"config file {value!r}: unknown key {key!r}{hint}; keys are the long "
                "options of reactor serve"
            )
        defaults[name] = _file_value(ctx, target, key, raw, value)
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    ctx.meta["mioreactor.reactor.config_file"] = value
    return value


def _file_value(ctx: click.Context, param: click.Parameter, key: str, raw: Any, path: str) -> Any:
    """``raw`` from the file, checked as ``param`` would check it; what goes to default_map."""
    from .workers.process.configfile import format_value

    def wrong(why: str) -> click.ClickException:
        shown = format_value(raw) if isinstance(raw, (str, int, float, list)) else "{...}"
        return click.ClickException(f"config file {path!r}: {key} = {shown}: {why}")

    flag = isinstance(param, click.Option) and param.is_flag
    if isinstance(raw, dict):
        raise wrong("expected a value, not a table")
    if param.multiple:
        items = [raw] if isinstance(raw, str) else raw
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise wrong("expected a string or a list of strings")
        value: Any = tuple(items)
    elif isinstance(raw, list):
        if param.name not in _LIST_AS_TEXT or not all(isinstance(i, str) for i in raw):
            raise wrong("expected one value, not a list")
        value = ",".join(raw)
    elif flag or param.type is click.BOOL:
        if not isinstance(raw, bool):
            raise wrong("expected true or false")
        value = raw
    elif isinstance(raw, bool):
        raise wrong(f"expected {param.type.name}, not true/false")
    elif param.name in ("unix_mode", "umask") and isinstance(raw, int):
        value = f"{raw:o}"  # TOML's 0o660 is an int; the option reads octal text
    elif isinstance(param.type, click.types.IntParamType) and not isinstance(raw, int):
        raise wrong("expected an integer")
    elif isinstance(param.type, click.types.FloatParamType) and not isinstance(raw, (int, float)):
        raise wrong("expected a number")
    elif isinstance(param.type, (click.types.StringParamType, click.Choice, click.Path)) and (
        not isinstance(raw, str)
    ):
        raise wrong("expected a string")
    else:
        value = raw
    try:
        converted = param.type_cast_value(ctx, value)
        if param.callback is not None:
            param.callback(ctx, param, converted)
    except click.BadParameter as exc:
        raise wrong(exc.format_message()) from None
    return value


def _source_label(ctx: click.Context, param: click.Parameter) -> str:
    from click.core import ParameterSource

    assert param.name is not None
    source = ctx.get_parameter_source(param.name)
    if source is ParameterSource.COMMANDLINE:
        return "command line"
    if source is ParameterSource.ENVIRONMENT:
        env = param.envvar if isinstance(param.envvar, str) else f"REACTOR_{param.name.upper()}"
        return f"environment {env}"
    if source is ParameterSource.DEFAULT_MAP:
        return f"config file {ctx.meta.get('mioreactor.reactor.config_file', '?')}"
    return "default"


def effective_settings(ctx: click.Context) -> str:
    """``--print-config``: every setting of ``reactor serve`` as TOML, with its source.

    The output is itself a valid config file (each line's source is a comment).
    """
    from .workers.process.configfile import format_value

    lines = ["# reactor serve: effective settings. Precedence: command line > REACTOR_*",
             "# environment > config file > default."]
    rows: list[tuple[str, str]] = []
    for param in ctx.command.params:
        name = param.name
        if name is None or name in _NOT_IN_FILES:
            continue
        key = name.replace("_", "-")
        value = ctx.params.get(name)
        where = _source_label(ctx, param)
        shown_default = getattr(param, "show_default", None)
        if name in ("unix_mode", "umask") and isinstance(value, int):
            value = f"{value:o}"
        elif name == "keyfile_password" and value:
            value = "********"  # never printed
        elif name in _LIST_AS_TEXT:
            value = list(value or ())
        if value is None:
            note = shown_default if isinstance(shown_default, str) else "unset"
            rows.append((f"# {key} = ({note})", where))
        elif value == () and isinstance(shown_default, str) and where == "default":
            rows.append((f"{key} = []", f"default: {shown_default}"))
        else:
            rows.append((f"{key} = {format_value(value)}", where))
    width = min(max(len(r[0]) for r in rows), 48)
    lines += [f"{text:<{width}}  # {where}" for text, where in rows]
    return "\n".join(lines) + "\n"


class _OneLineGroup(click.Group):
    """The ``reactor`` group: every click error is one ``Error: ...`` line on stderr.

    Click prints a usage error as four lines (the usage, a hint, a blank line, the
    error); docs/cli.md promises one. Run in standalone mode, this catches what click
    would print and prints the error line alone, with click's exit status (2 for a
    usage error, 1 otherwise).
    """

    def main(self, args: Any = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        run = super().main
        if not standalone_mode:
            return run(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            status = run(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as exc:
            click.echo(f"Error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(status if isinstance(status, int) else 0)


def version_text() -> str:
    """``reactor --version``: the versions that decide how it behaves."""
    import platform
    import ssl
    from importlib.metadata import PackageNotFoundError, version

    def of(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return (f"reactor (mioreactor) {of('mioreactor')}\n"
            f"Python {platform.python_version()} ({platform.python_implementation()}, "
            f"{sys.platform})\nhttptools {of('httptools')}\n{ssl.OPENSSL_VERSION}")


def _show_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(version_text())
        ctx.exit()


@click.group(cls=_OneLineGroup, context_settings={**CONTEXT, "auto_envvar_prefix": "REACTOR"})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_show_version,
              help="Show the version, and those of Python, httptools and OpenSSL, and exit.")
def reactor() -> None:
    """mioreactor: a multithreaded edge-triggered WSGI and raw-protocol server.

    \b
      reactor serve [MODULE:APP]   serve a WSGI app (or the built-in demo app)
      reactor bench URL            load a server and say what happened to every connection
      reactor doctor               say which host limits a load test will hit, and the fix
      reactor top URL              watch a server live from its --metrics-bind endpoint
    """


@reactor.command(cls=_ServeCommand, context_settings={**CONTEXT, "auto_envvar_prefix": "REACTOR"})
@click.argument("app", required=False, envvar="REACTOR_APP", callback=_check_app)
@click.option("--factory", is_flag=True, show_default="off", show_envvar=True,
              help="APP names a zero-argument callable that returns the app; call it.")
@click.option("--app-dir", default=".", show_default=True, show_envvar=True,
              type=click.Path(file_okay=False),
              help="Directory put first on sys.path before importing APP.")
@click.option("--interface", type=click.Choice(["auto", "wsgi", "asgi", "handler"]),
              default="auto", show_default=True, show_envvar=True,
              help="auto: tell by the app's shape (async def or an async __call__: ASGI; one "
                   "parameter or a BaseHandler class: handler; else WSGI). wsgi: a WSGI "
                   "application over HTTP/1.1. asgi: an ASGI 3 app (or ASGI 2 class). handler: a "
                   "handler factory (factory(worker) -> Handler) for a raw protocol, e.g. "
                   "mioreactor.workers.core.handler:EchoHandler.")
@click.option("--lifespan", type=click.Choice(["auto", "on", "off"]), default="auto",
              show_default=True, show_envvar=True,
              help="ASGI lifespan (startup, shutdown, state). auto: run it, go on if the app "
                   "does not speak it; on: its failure stops the server; off: never.")
@click.option("--loop", type=click.Choice(["auto", "asyncio", "uvloop"]), default="auto",
              show_default=True, show_envvar=True,
              help="The ASGI event loop, stepped by the worker threads (docs/asgi.md). "
                   "auto: asyncio's (the faster here). uvloop: uvloop's, if installed "
                   "(pip install 'mioreactor[uvloop]').")
@click.option("--ws", type=click.Choice(["auto", "none"]), default="auto", show_default=True,
              show_envvar=True,
              help="WebSocket for ASGI apps. none: an upgrade request reaches the app as a "
                   "plain http request.")
@click.option("--ws-max-size", type=POSITIVE_INT, default=16 * 1024 * 1024, show_default=True,
              show_envvar=True,
              help="The largest WebSocket message in bytes, after decompression (1009 beyond).")
@click.option("--ws-ping-interval", type=click.FloatRange(min=0), default=20.0,
              show_default=True, show_envvar=True,
              help="Seconds between WebSocket keep-alive pings; 0: none.")
@click.option("--ws-ping-timeout", type=click.FloatRange(min=0), default=20.0,
              show_default=True, show_envvar=True,
              help="Seconds a WebSocket pong may take before the connection is closed "
                   "(1011); 0: never.")
@click.option("--ws-per-message-deflate", type=click.BOOL, default=True, show_default=True,
              show_envvar=True, metavar="BOOLEAN",
              help="Offer permessage-deflate (RFC 7692) to WebSocket clients (as uvicorn: "
                   "--ws-per-message-deflate false turns it off).")
@click.option("--bind", "-b", multiple=True, callback=_check_binds, show_envvar=True,
              show_default=f"{DEFAULT_BIND}, or the systemd sockets",
              help="Where to listen; repeat for several: HOST:PORT, [IPV6]:PORT, unix:PATH or "
                   "fd://N. Sockets passed by systemd socket activation (LISTEN_FDS) are "
                   "always served. In REACTOR_BIND, separate several with spaces.")
@click.option("--unix-mode", callback=_check_mode, show_envvar=True, metavar="OCTAL",
              show_default="from the umask",
              help="Permission bits of unix: socket files, in octal (e.g. 660).")
@click.option("--workers", "-w", type=POSITIVE_INT, default=4, show_default=True,
              show_envvar=True,
              help="Worker threads per process (threads, not gunicorn's or uvicorn's "
                   "processes: those are --processes).")
@click.option("--processes", "-p", type=_Processes(min=1), default=1, show_default=True,
              show_envvar=True,
              help="Server processes. More than 1 runs a supervisor that restarts a process "
                   "that dies, forwards SIGTERM/SIGINT and does a rolling restart on SIGHUP.")
@click.option("--share", type=click.Choice(["auto", "reuseport", "inherit"]), default="auto",
              show_default=True, show_envvar=True,
              help="How --processes share a TCP port: reuseport (a SO_REUSEPORT listener per "
                   "process, the kernel balances; asked for by name, it also joins another "
                   "server's SO_REUSEPORT listeners on the port, with a warning), inherit (one "
                   "listener, inherited), auto (reuseport on Linux, else inherit; a port "
                   "another process listens on is refused).")
@click.option("--backlog", type=POSITIVE_INT, default=1024, show_default=True, show_envvar=True,
              help="Listen backlog asked of the kernel (capped by net.core.somaxconn; see "
                   "reactor doctor).")
@click.option("--max-connections", type=POSITIVE_INT, default=10000, show_default=True,
              show_envvar=True,
              help="Open connections per process at most; beyond, clients wait in the backlog.")
@click.option("--run-slots", type=POSITIVE_INT, default=None, show_envvar=True,
              show_default="1 with a GIL, the CPU count without",
              help="Worker threads that may run Python code at once.")
@click.option("--handoff-ms", type=click.FloatRange(min=0), default=2.0, show_default=True,
              show_envvar=True,
              help="Milliseconds a blocking app call keeps its run slot before another worker "
                   "may run.")
@click.option("--backend", type=click.Choice(["epoll", "kqueue", "fallback"]), default=None,
              show_default="the best the kernel offers", show_envvar=True,
              help="Force a poll backend.")
@click.option("--max-request-line", type=SIZE, default=HTTP.max_request_line, show_default=True,
              show_envvar=True, help="Longest request target in bytes; longer gets 414.")
@click.option("--max-header-size", type=SIZE, default=HTTP.max_header_size, show_default=True,
              show_envvar=True,
              help="Bytes of the whole header section at most; more gets 431.")
@click.option("--max-headers", type=POSITIVE_INT, default=HTTP.max_headers, show_default=True,
              show_envvar=True, help="Header fields per request at most; more gets 431.")
@click.option("--max-body-size", type=SIZE, default=HTTP.max_body_size, show_default=True,
              show_envvar=True,
              help="Largest request body in bytes (k, M, G allowed); larger gets 413.")
@click.option("--body-spool-threshold", type=SIZE, default=HTTP.body_spool_threshold,
              show_default=True, show_envvar=True,
              help="Request bodies up to this size stay in memory; larger ones go to a "
                   "temporary file.")
@click.option("--max-pipeline-buffer", type=SIZE, default=HTTP.max_pipeline_buffer,
              show_default=True, show_envvar=True,
              help="Bytes of pipelined requests held during a response before reading pauses.")
@click.option("--header-timeout", type=SECONDS, default=HTTP.header_timeout, show_default=True,
              show_envvar=True,
              help="Seconds a request head may take to arrive; a partial head then gets 408.")
@click.option("--keepalive-timeout", type=SECONDS, default=HTTP.keepalive_timeout,
              show_default=True, show_envvar=True,
              help="Seconds an idle keep-alive connection waits for its next request.")
@click.option("--body-timeout", type=SECONDS, default=HTTP.body_timeout, show_default=True,
              show_envvar=True,
              help="Seconds a request body may stall before the server answers 408.")
@click.option("--send-timeout", type=SECONDS, default=HTTP.send_timeout, show_default=True,
              show_envvar=True,
              help="Seconds a response may stay blocked on a client that does not read.")
@click.option("--linger-timeout", type=SECONDS, default=HTTP.linger_timeout, show_default=True,
              show_envvar=True,
              help="Seconds a connection keeps reading and discarding after an error "
                   "response, so that a client still sending can read it.")
@click.option("--linger-max-bytes", type=SIZE, default=HTTP.linger_max_bytes,
              show_default=True, show_envvar=True,
              help="Bytes discarded at most while lingering after an error response.")
@click.option("--graceful-timeout", type=click.FloatRange(min=0), default=30.0,
              show_default=True, show_envvar=True,
              help="Seconds in-flight requests get to finish on SIGTERM/SIGINT.")
@click.option("--timeout", "-t", type=click.FloatRange(min=0), default=30.0, show_default=True,
              show_envvar=True,
              help="Seconds a request may stay inside the app before it is logged with the "
                   "stack of its thread (it is left to finish); with --processes, a process "
                   "whose every worker is stuck is replaced. 0: never.")
@click.option("--max-requests", type=click.IntRange(min=0), default=0, show_default=True,
              show_envvar=True,
              help="Replace a process once it has served this many requests (plus the "
                   "jitter): a new one starts first, the old one drains. 0: never. Runs "
                   "the supervisor even with one process.")
@click.option("--max-requests-jitter", type=click.IntRange(min=0), default=0,
              show_default=True, show_envvar=True,
              help="Add a random 0..N to each process's --max-requests, so processes "
                   "started together are not replaced together.")
@click.option("--pid", type=click.Path(dir_okay=False), default=None,
              show_default="none", show_envvar=True,
              help="Write the process id here once the listeners are bound (the "
                   "supervisor's, if one runs); removed on exit.")
@click.option("--user", "-u", default=None, show_default="the current user", show_envvar=True,
              help="Run the app as this user (name or uid): listeners are bound first, then "
                   "privileges are dropped, then the app is imported. Needs root.")
@click.option("--group", "-g", default=None, show_default="the user's group",
              show_envvar=True, help="Run the app with this group (name or gid). Needs root.")
@click.option("--umask", "-m", callback=_check_umask, show_envvar=True, metavar="OCTAL",
              show_default="inherited",
              help="The process umask, in octal (e.g. 027), set before anything is created.")
@click.option("--server-header", default=HTTP.server_header, show_default=True,
              show_envvar=True, help="Value of the Server response header; empty sends none.")
@click.option("--url-scheme", type=click.Choice(["http", "https"]), default=HTTP.url_scheme,
              show_default=True, show_envvar=True,
              help="wsgi.url_scheme, unless a trusted proxy says otherwise.")
@click.option("--access-log/--no-access-log", default=HTTP.access_log, show_default=True,
              show_envvar=True, help="Log one line per response (logger mioreactor.http.access).")
@click.option("--express/--no-express", default=HTTP.express, show_default=True,
              show_envvar=True,
              help="Serve the common request (one whole bodiless head) in the express lane; "
                   "off, every request goes through llhttp. Same answers either way.")
@click.option("--access-log-format", default=HTTP.access_log_format, show_default=True,
              show_envvar=True, callback=_check_log_format,
              help="%-style access log format over h r m U q H s b D T a f (gunicorn's names).")
@click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False), default="info", show_default=True,
              show_envvar=True, help="Least severe log level written to stderr.")
@click.option("--forwarded-allow-ips", default="", callback=_check_ips, show_envvar=True,
              show_default="none trusted",
              help="Comma-separated peer addresses trusted to set X-Forwarded-For and "
                   "X-Forwarded-Proto; '*' trusts every peer.")
@click.option("--proxy-protocol", is_flag=True, show_default="off", show_envvar=True,
              help="Expect a PROXY protocol v1/v2 header first on every connection.")
@click.option("--certfile", type=click.Path(dir_okay=False), default=None, show_envvar=True,
              show_default="none: plain HTTP",
              help="PEM certificate (chain) to serve TLS with, on every TCP bind except "
                   "those written http://HOST:PORT (docs/tls.md). SIGHUP reloads it.")
@click.option("--keyfile", type=click.Path(dir_okay=False), default=None, show_envvar=True,
              show_default="the key in --certfile",
              help="PEM private key of --certfile; it must match the certificate.")
@click.option("--keyfile-password", default=None, show_envvar=True, show_default="none",
              help="Password of an encrypted --keyfile (prefer the environment variable to "
                   "the command line).")
@click.option("--ca-certs", type=click.Path(dir_okay=False), default=None, show_envvar=True,
              show_default="none",
              help="PEM file of the CAs client certificates must chain to (for --cert-reqs).")
@click.option("--cert-reqs", type=click.Choice(CERT_REQS), default="none", show_default=True,
              show_envvar=True,
              help="Client certificates: not asked for, optional (checked when sent), or "
                   "required.")
@click.option("--ciphers", default=None, show_envvar=True, show_default="OpenSSL's",
              help="OpenSSL cipher string for TLS 1.2 (TLS 1.3 suites are OpenSSL's own).")
@click.option("--ssl-min-version", type=click.Choice(MIN_VERSIONS), default="1.2",
              show_default=True, show_envvar=True,
              help="Oldest TLS version accepted; TLS 1.0 and 1.1 are never offered.")
@click.option("--reload", is_flag=True, show_default="off", show_envvar=True,
              help="Development: restart the server processes when a .py file under "
                   "--app-dir (or --reload-dir) changes.")
@click.option("--reload-dir", multiple=True, type=click.Path(file_okay=False, exists=True),
              show_default="--app-dir", show_envvar=True,
              help="Directory to watch with --reload; repeatable.")
@click.option("--metrics-bind", metavar="HOST:PORT", callback=_check_metrics_bind,
              show_default="none", show_envvar=True,
              help="Serve /metrics here (Prometheus text format, summed over --processes), "
                   "on threads of its own; watch it live with reactor top.")
# -- what gunicorn's and uvicorn's users bring (docs/deployment.md has both tables) -------
@click.option("--name", "-n", default=None, show_default="none", show_envvar=True,
              help="Name the processes: their titles read 'reactor: server [NAME]' (with "
                   "setproctitle installed; else the kernel's 15-character name is NAME).")
@click.option("--access-logfile", metavar="FILE", default=None, show_default="none",
              show_envvar=True,
              help="Write access lines to FILE ('-': stdout); turns --access-log on.")
@click.option("--error-logfile", metavar="FILE", default=None, show_default="stderr",
              show_envvar=True,
              help="Write the server's log to FILE ('-': stderr); reopened when rotated.")
@click.option("--log-config", type=click.Path(dir_okay=False), default=None,
              show_default="none", show_envvar=True,
              help="A logging configuration file: dictConfig as .json or .toml, fileConfig "
                   "as .ini/.conf; it replaces the handlers of --error-logfile.")
@click.option("--host", default=None, show_default="127.0.0.1 with --port", show_envvar=True,
              help="uvicorn's --host: with --port, one more bind HOST:PORT (port 8000 "
                   "without --port).")
@click.option("--port", type=click.IntRange(0, 65535), default=None, show_envvar=True,
              show_default="8000 with --host",
              help="uvicorn's --port: with --host, one more bind HOST:PORT (host 127.0.0.1 "
                   "without --host).")
@click.option("--uds", metavar="PATH", default=None, show_default="none", show_envvar=True,
              help="uvicorn's --uds: one more bind, unix:PATH.")
@click.option("--root-path", default=HTTP.root_path, show_default="none", show_envvar=True,
              help="The prefix the app is mounted under behind a proxy (/api): SCRIPT_NAME, "
                   "taken off the front of PATH_INFO when a path starts with it.")
@click.option("--env-file", type=click.Path(dir_okay=False), default=None,
              show_default="none", show_envvar=True,
              help="A dotenv file (KEY=value lines) put into the environment of the app "
                   "before it is imported; variables already set win.")
@click.option("--proxy-headers/--no-proxy-headers", default=False, show_default=True,
              show_envvar=True,
              help="uvicorn's: believe X-Forwarded-For/-Proto from --forwarded-allow-ips, "
                   "or from 127.0.0.1 when that is not given.")
@click.option("--limit-concurrency", type=POSITIVE_INT, default=None, show_default="none",
              show_envvar=True,
              help="Open connections per process beyond which a new one is answered 503 "
                   "and closed (--max-connections makes it wait instead).")
@click.option("--reload-include", multiple=True, metavar="GLOB", show_default="*.py",
              show_envvar=True,
              help="With --reload, also watch files matching GLOB (*.html, "
                   "templates/*); repeatable.")
@click.option("--reload-exclude", multiple=True, metavar="GLOB", show_default="none",
              show_envvar=True,
              help="With --reload, never watch files or directories matching GLOB; "
                   "repeatable.")
@click.option("--check-config", is_flag=True, show_default="off", show_envvar=True,
              help="Check the settings, the TLS files and the log config, import the app, "
                   "then exit (0: all good) without serving.")
@click.option("--config", "-c", "config_file", is_eager=True, callback=_load_config_file,
              type=click.Path(dir_okay=False), envvar="REACTOR_CONFIG", show_envvar=True,
              show_default="none",
              help="TOML file of settings, keys named as these options (bind = [...], "
                   "workers = 8). The command line and REACTOR_* variables override it.")
@click.option("--print-config", is_flag=True, show_default="off", show_envvar=True,
              help="Print the effective settings, and where each came from, as TOML; "
                   "then exit.")
@click.pass_context
def serve(ctx: click.Context, /, app: str | None, **opts: Any) -> None:
    """Serve APP (MODULE:APP, e.g. myproject.wsgi:application) until SIGTERM or SIGINT.

    Without APP, a built-in demo app: a page saying what serves it, and /stats.
    """
    from .workers.process.appload import AppLoadError
    from .workers.process.runner import ServeError
    from .workers.process.supervisor import run

    try:
        config = build_serve_config(app, opts)
    except (ConfigError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    if opts["env_file"] and not opts["print_config"]:
        import os

        from .workers.process.configfile import read_env_file

        try:
            for key, value in read_env_file(opts["env_file"]).items():
                os.environ.setdefault(key, value)  # the server processes inherit them
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None
    if opts["print_config"]:
        click.echo(effective_settings(ctx), nl=False)
        return
    if opts["check_config"]:
        from .workers.process.runner import check_config

        try:
            click.echo(check_config(config))
        except ServeError as exc:
            raise click.ClickException(str(exc)) from None
        return
    try:
        status = run(config)
    except (ServeError, AppLoadError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot start: {exc.strerror or exc}") from None
    sys.exit(status)


def build_serve_config(app: str | None, opts: dict[str, Any]) -> Config:
    """The ``Config`` for ``reactor serve`` given its parsed options.

    Raises:
        ConfigError / ValueError: a combination of values that cannot work.
    """
    http = HttpConfig(
        max_request_line=opts["max_request_line"],
        max_header_size=opts["max_header_size"],
        max_headers=opts["max_headers"],
        max_body_size=opts["max_body_size"],
        body_spool_threshold=opts["body_spool_threshold"],
        max_pipeline_buffer=opts["max_pipeline_buffer"],
        header_timeout=opts["header_timeout"],
        keepalive_timeout=opts["keepalive_timeout"],
        body_timeout=opts["body_timeout"],
        send_timeout=opts["send_timeout"],
        linger_timeout=opts["linger_timeout"],
        linger_max_bytes=opts["linger_max_bytes"],
        server_header=opts["server_header"],
        url_scheme=opts["url_scheme"],
        access_log=opts["access_log"] or bool(opts["access_logfile"]),
        access_log_format=opts["access_log_format"],
        forwarded_allow_ips=opts["forwarded_allow_ips"] or (
            ("127.0.0.1",) if opts["proxy_headers"] else ()),
        proxy_protocol=opts["proxy_protocol"],
        express=opts["express"],
        root_path=opts["root_path"],
    )
    return Config(
        app=app,
        factory=opts["factory"],
        app_dir=opts["app_dir"],
        interface=opts["interface"],
        lifespan=opts["lifespan"],
        loop=opts["loop"],
        ws=opts["ws"],
        ws_max_size=opts["ws_max_size"],
        ws_ping_interval=opts["ws_ping_interval"],
        ws_ping_timeout=opts["ws_ping_timeout"],
        ws_per_message_deflate=opts["ws_per_message_deflate"],
        binds=(*opts["bind"], *_uvicorn_binds(opts)),
        unix_mode=opts["unix_mode"],
        workers=opts["workers"],
        processes=opts["processes"],
        share=opts["share"],
        backlog=opts["backlog"],
        max_connections=opts["max_connections"],
        run_slots=opts["run_slots"],
        handoff_ms=opts["handoff_ms"],
        graceful_timeout=opts["graceful_timeout"],
        timeout=opts["timeout"],
        max_requests=opts["max_requests"],
        max_requests_jitter=opts["max_requests_jitter"],
        pid_file=opts["pid"],
        user=opts["user"],
        group=opts["group"],
        umask=opts["umask"],
        backend=opts["backend"],
        http=http,
        log_level=opts["log_level"],
        access_logfile=opts["access_logfile"],
        error_logfile=opts["error_logfile"],
        log_config=opts["log_config"],
        name=opts["name"],
        reload=opts["reload"],
        reload_dirs=tuple(opts["reload_dir"]),
        reload_includes=tuple(opts["reload_include"]),
        reload_excludes=tuple(opts["reload_exclude"]),
        limit_concurrency=opts["limit_concurrency"],
        metrics_bind=opts["metrics_bind"],
        tls=_tls_config(opts),
    )


def _uvicorn_binds(opts: dict[str, Any]) -> tuple[str, ...]:
    """``--host``/``--port`` (uvicorn's defaults: 127.0.0.1, 8000) and ``--uds`` as binds."""
    from .workers.server.binds import DEFAULT_HOST, DEFAULT_PORT

    binds: list[str] = []
    host, port = opts.get("host"), opts.get("port")
    if host is not None or port is not None:
        host = (host or DEFAULT_HOST).strip()
        shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
        binds.append(f"{shown}:{DEFAULT_PORT if port is None else port}")
    if opts.get("uds"):
        binds.append(f"unix:{opts['uds']}")
    return tuple(binds)


_TLS_ONLY = ("keyfile", "keyfile_password", "ca_certs", "ciphers")


def _tls_config(opts: dict[str, Any]) -> TlsConfig | None:
    """``TlsConfig`` from the TLS options; None without ``--certfile``.

    Raises:
        ConfigError: a TLS option without ``--certfile``, or values that cannot work.
    """
    if not opts.get("certfile"):
        extra = [n for n in _TLS_ONLY if opts.get(n)]
        if opts.get("cert_reqs", "none") != "none":
            extra.append("cert_reqs")
        if opts.get("ssl_min_version", "1.2") != "1.2":
            extra.append("ssl_min_version")
        if extra:
            raise ConfigError(f"--{extra[0].replace('_', '-')} needs --certfile")
        return None
    try:
        return TlsConfig(
            certfile=opts["certfile"],
            keyfile=opts.get("keyfile"),
            keyfile_password=opts.get("keyfile_password"),
            ca_certs=opts.get("ca_certs"),
            cert_reqs=opts.get("cert_reqs", "none"),
            ciphers=opts.get("ciphers"),
            min_version=opts.get("ssl_min_version", "1.2"),
        )
    except TlsError as exc:
        raise ConfigError(str(exc)) from None


def _header(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    out = []
    for item in value:
        name, sep, val = item.partition(":")
        if not sep or not name.strip():
            raise click.BadParameter(f"{item!r}: expected 'Name: value'")
        out.append((name.strip(), val.strip()))
    return tuple(out)


def _body(ctx: click.Context, param: click.Parameter, value: str) -> bytes:
    if value.startswith("@"):
        try:
            with open(value[1:], "rb") as f:
                return f.read()
        except OSError as exc:
            raise click.BadParameter(f"cannot read {value[1:]!r}: {exc.strerror}") from None
    return value.encode()


class _Progress:
    """One plain progress line on stderr: rewritten in place on a terminal, else ~1/s."""

    def __init__(self, duration: float | None, requests: int | None) -> None:
        self.duration = duration
        self.requests = requests
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def __call__(self, elapsed: float, snap: Any) -> None:
        now = time.monotonic()
        if not self.tty and now - self.last < 1.0:
            return
        self.last = now
        c = snap.connections
        failed = c.failed
        goal = f"/{self.duration:g}s" if self.duration else ""
        done = f"/{self.requests:,}" if self.requests else ""
        line = (f"[{elapsed:6.1f}s{goal}] {snap.responses:,}{done} {snap.unit}, "
                f"{snap.throughput_rps:,.0f}/s, {c.established:,} connected, {failed:,} failed")
        if self.tty:
            click.echo(f"\r{line}\x1b[K", err=True, nl=False)
        else:
            click.echo(line, err=True)

    def done(self) -> None:
        if self.tty and self.last:
            click.echo("", err=True)


def _check_bench_url(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from .workers.tools.loadgen.config import bench_url

    return bench_url(value)


@reactor.command(context_settings=CONTEXT)
@click.argument("url", callback=_check_bench_url)
@click.option("--connections", "-c", type=POSITIVE_INT, default=50, show_default=True,
              show_envvar=True, help="Concurrent connections kept busy.")
@click.option("--duration", "-d", type=SECONDS, default=None, show_envvar=True,
              show_default="10 s, or until --requests are done",
              help="Seconds to run.")
@click.option("--requests", "-n", type=POSITIVE_INT, default=None, show_envvar=True,
              show_default="no limit", help="Requests (ws://: messages) to make in total; with "
                                            "--duration, whichever comes first ends the run.")
@click.option("--keepalive/--close", default=True, show_default=True, show_envvar=True,
              help="Reuse connections, or open a new one per request (Connection: close).")
@click.option("--method", "-m", default="GET", show_default=True, show_envvar=True,
              help="Request method.")
@click.option("--header", "-H", multiple=True, callback=_header, show_envvar=True,
              show_default="none", help="Extra request header 'Name: value'; repeatable.")
@click.option("--body", default="", callback=_body, show_envvar=True, show_default="empty",
              help="Request body; @FILE reads it from a file.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None,
              show_envvar=True, show_default="closed loop, as fast as answers come",
              help="Open loop: total requests per second, latency counted from when each "
                   "was due.")
@click.option("--timeout", type=SECONDS, default=5.0, show_default=True, show_envvar=True,
              help="Seconds a connect, then a response, may take before it counts as timed out.")
@click.option("--json", "as_json", is_flag=True, show_default="off", show_envvar=True,
              envvar="REACTOR_BENCH_JSON", help="Print the result as JSON on stdout.")
@click.option("--allow-remote", is_flag=True, show_default="off", show_envvar=True,
              help="Allow a target that is not loopback (only a host you are responsible for).")
@click.option("--quiet", "-q", is_flag=True, show_default="off", show_envvar=True,
              help="No progress line on stderr.")
@click.option("--insecure", "-k", is_flag=True, show_default="off", show_envvar=True,
              help="https://, wss://: do not verify the server's certificate (a test server only).")
@click.option("--cacert", type=click.Path(dir_okay=False), default=None, show_envvar=True,
              show_default="the system's CAs",
              help="https://, wss://: PEM file of the CAs that signed the server's certificate.")
@click.option("--size", type=Size(), default=None, show_envvar=True,
              show_default="32", help="ws://: bytes per message (64k, 1M: binary units).")
@click.option("--text", is_flag=True, show_default="off (binary)", show_envvar=True,
              help="ws://: send text messages instead of binary ones.")
def bench(url: str, connections: int, duration: float | None, requests: int | None,
          keepalive: bool, method: str, header: tuple[tuple[str, str], ...], body: bytes,
          rate: float | None, timeout: float, as_json: bool, allow_remote: bool,
          quiet: bool, insecure: bool, cacert: str | None, size: int | None,
          text: bool) -> None:
    """Load URL (http:// or https://HOST:PORT/PATH, or HOST:PORT; loopback unless
    --allow-remote) and report; ws:// or wss:// loads a WebSocket echo endpoint.

    Reports what happened to connections (attempted, established, refused, reset, timed
    out), requests, status codes, latency percentiles and throughput, and when connects
    fail, the likely cause. For ws://: handshakes, messages echoed per second (each
    connection keeps one in flight), send-to-echo latency, the server's close codes and
    protocol errors. Exits 1 when the run failed (no answer, or failed connections).
    """
    try:
        from .workers.tools.loadgen import BenchConfig, run_bench
    except ImportError as exc:  # pragma: no cover - the load generator ships with workers
        raise click.ClickException(f"the load generator is not available: {exc}") from None
    if duration is None and requests is None:
        duration = 10.0
    try:
        config = BenchConfig(
            url=url, connections=connections, duration=duration, requests=requests,
            keepalive=keepalive, method=method.upper(), headers=header, body=body, rate=rate,
            timeout=timeout, allow_remote=allow_remote, insecure=insecure, cacert=cacert,
            message_size=size, text=text,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    progress = None if quiet else _Progress(duration, requests)
    try:
        result = run_bench(config, progress=progress)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        raise click.ClickException("interrupted") from None
    finally:
        if progress is not None:
            progress.done()
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2, sort_keys=True))
    else:
        click.echo(result.to_text())
    if not result.ok:
        sys.exit(1)


@reactor.command(context_settings=CONTEXT)
@click.option("--backlog", type=POSITIVE_INT, default=1024, show_default=True, show_envvar=True,
              help="The listen backlog the server will ask for (as reactor serve --backlog).")
@click.option("--json", "as_json", is_flag=True, show_default="off", show_envvar=True,
              envvar="REACTOR_DOCTOR_JSON", help="Print the report as JSON on stdout.")
def doctor(backlog: int, as_json: bool) -> None:
    """Say which host limits a load test will hit, with the numbers and the fix.

    Ephemeral ports and how many are in use, TIME_WAIT and tcp_tw_reuse, somaxconn and
    the backlog the server really gets, open-file limits, listen-queue overflow
    counters, the poll backend. Anything unreadable is reported as unknown.
    """
    from .workers.tools.doctor import diagnose

    report = diagnose(backlog)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        click.echo(report.to_text())


def _check_target(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from .workers.tools.top import target_url

    try:
        return target_url(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@reactor.command(context_settings=CONTEXT)
@click.argument("url", callback=_check_target)
@click.option("--interval", "-i", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              show_envvar=True, help="Seconds between refreshes (and the window of the rates).")
@click.option("--once", is_flag=True, show_default="off", show_envvar=True,
              help="Print one plain frame (two scrapes --interval apart) and exit; exit "
                   "status 1 if the endpoint does not answer.")
def top(url: str, interval: float, once: bool) -> None:
    """Watch a server live from its metrics endpoint (reactor serve --metrics-bind).

    URL is http://HOST:PORT/metrics, or just HOST:PORT. Shows connections, req/s,
    p50/p99, queue and listen-queue depth, hand-offs, stuck requests and each worker's
    state, refreshed every --interval. q or Ctrl-C quits. If the server goes away the
    view says unreachable and keeps trying.
    """
    from .workers.tools.top import run_once, run_terminal

    if once:
        sys.exit(run_once(url, interval, sys.stdout))
    sys.exit(run_terminal(url, interval, sys.stdin, sys.stdout))


def main() -> None:
    """Console script entry point (``reactor``)."""
    reactor(prog_name="reactor")


if __name__ == "__main__":
    main()
