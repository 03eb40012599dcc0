"""What gunicorn and uvicorn users type, and what it is here: one-line hints.

``reactor serve`` takes many of the peers' options with the same name and meaning
(``--bind``, ``--timeout``, ``--certfile``, ``--host``, ``--port``, ...). For the others,
``PEER_OPTIONS`` maps the option a peer's user types to the hint the CLI prints in
place of click's "no such option" (whose "did you mean" guesses by spelling:
``--threads`` was offered ``--max-headers``). docs/deployment.md has the full tables.
"""

from __future__ import annotations

__all__ = ["PEER_OPTIONS", "hint_for"]

PEER_OPTIONS: dict[str, str] = {
    # gunicorn
    "--threads": "threads per process are -w/--workers here (gunicorn's -w, processes, is "
                 "-p/--processes)",
    "--preload": "there is no --preload: the supervisor never imports the app; each "
                 "process imports it (a broken deploy fails the new process only)",
    "--worker-class": "there are no worker classes: one model (an acceptor and worker "
                      "threads); --interface handler serves a raw protocol",
    "-k": "there are no worker classes (gunicorn's -k): one model, an acceptor and worker "
          "threads; --interface handler serves a raw protocol",
    "--worker-connections": "use --max-connections (open connections per process)",
    "--keep-alive": "use --keepalive-timeout SECONDS",
    "--limit-request-line": "use --max-request-line BYTES",
    "--limit-request-fields": "use --max-headers N",
    "--limit-request-field_size": "use --max-header-size BYTES (the whole header section)",
    "--limit-request-field-size": "use --max-header-size BYTES (the whole header section)",
    "--chdir": "use --app-dir DIR",
    "--daemon": "there is no --daemon: run it under systemd or a container runtime "
                "(docs/deployment.md)",
    "-D": "there is no -D/--daemon: run it under systemd or a container runtime",
    "--access-logformat": "use --access-log-format",
    "--ssl-version": "use --ssl-min-version 1.2|1.3",
    "--reload-extra-file": "use --reload-include PATTERN (or --reload-dir DIR)",
    "--statsd-host": "use --metrics-bind HOST:PORT (Prometheus text at /metrics)",
    "--env": "use --env-file FILE, or set the service's environment",
    "-e": "use --env-file FILE, or set the service's environment (gunicorn's -e)",
    "--capture-output": "the app's stderr is the server's stderr; use --error-logfile FILE",
    "--log-syslog": "log to stderr and let systemd or the runtime route it",
    "--paste": "give MODULE:APP (or MODULE:factory() / --factory)",
    "--initgroups": "always done with --user",
    "--worker-tmp-dir": "not needed: the stuck-request watch runs inside each process",
    "--proxy-allow-from": "use --proxy-protocol with --forwarded-allow-ips",
    "--sendfile": "always on: wsgi.file_wrapper over a real file uses sendfile",
    "--no-sendfile": "sendfile is always used for wsgi.file_wrapper over a real file",
    # uvicorn
    "--ssl-certfile": "use --certfile FILE",
    "--ssl-keyfile": "use --keyfile FILE",
    "--ssl-keyfile-password": "use --keyfile-password (or REACTOR_KEYFILE_PASSWORD)",
    "--ssl-ca-certs": "use --ca-certs FILE",
    "--ssl-cert-reqs": "use --cert-reqs none|optional|required",
    "--ssl-ciphers": "use --ciphers",
    "--timeout-keep-alive": "use --keepalive-timeout SECONDS",
    "--timeout-graceful-shutdown": "use --graceful-timeout SECONDS",
    "--limit-max-requests": "use --max-requests N",
    "--fd": "use -b fd://N",
    "--http": "one HTTP/1.1 implementation (httptools/llhttp); there is no --http choice",
    "--ws": "WebSocket is not served by the WSGI interface",
    "--reload-delay": "--reload polls once a second",
    "--no-server-header": "use --server-header ''",
    "--date-header": "a Date header is always sent",
    "--no-date-header": "a Date header is always sent",
    "--use-colors": "log lines are plain text",
    "--no-use-colors": "log lines are plain text",
    "--h11-max-incomplete-event-size": "use --max-header-size BYTES",
    "--header": "use --server-header for the Server header; other headers are the app's",
    "--forwarded-allow-ip": "use --forwarded-allow-ips",
}


def hint_for(option: str) -> str | None:
    """The one-line hint for a peer's ``option`` (``--threads``), or None."""
    return PEER_OPTIONS.get(option.split("=", 1)[0])
