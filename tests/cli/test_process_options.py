"""``--pid``, ``--user``/``--group`` and ``--umask`` (workers/process/settings.py)."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import stat
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from mioreactor import cli
from mioreactor.workers.process.settings import PidFile, ProcessError, drop_privileges

from tests.cli.proc import ROOT, ServeProcess, http_request, tcp_address

ROOT_ONLY = pytest.mark.skipif(
    os.geteuid() != 0 or not sys.platform.startswith("linux"),
    reason="dropping privileges needs root (on Linux, where /proc shows the umask)",
)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli.reactor, list(args), prog_name="reactor")


def one_error_line(result: Result) -> str:
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def nobody() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' on this host")
    return entry.pw_uid, entry.pw_gid


def reachable_by_others(path: Path) -> bool:
    """Whether a user who is neither the owner nor in the group can open ``path``:
    "other" may search every directory above it (and read it)."""
    for parent in path.parents:
        if not parent.stat().st_mode & stat.S_IXOTH:
            return False
    return bool(path.stat().st_mode & stat.S_IROTH)


@pytest.fixture
def app_dir_for_nobody() -> Iterator[Path]:
    """A directory the dropped user can read, holding ``dropped_apps.py`` (a copy of
    ``tests/cli/apps.py``), for ``--app-dir``.

    The app is imported after the privileges are dropped, so it must not come from the
    checkout: a clone may lie in a folder only root can read (``mktemp -d`` makes
    one, mode 0700), and ``--app-dir .`` is then "not a directory" to ``nobody``.
    """
    where = Path(tempfile.mkdtemp(prefix="reactor-app-"))
    try:
        where.chmod(0o755)
        module = where / "dropped_apps.py"
        shutil.copyfile(Path(__file__).with_name("apps.py"), module)
        module.chmod(0o644)
        if not reachable_by_others(module):
            pytest.skip(f"{where} (from TMPDIR) is not readable by other users, so the "
                        "dropped user could not import the app; point TMPDIR at a "
                        "world-searchable directory such as /tmp")
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)


@ROOT_ONLY
def test_user_nobody_runs_the_app_unprivileged_and_the_pid_file_comes_and_goes(
    tmp_path: Path, app_dir_for_nobody: Path,
) -> None:
    uid, gid = nobody()
    pid_path = tmp_path / "reactor.pid"
    with ServeProcess(["dropped_apps:whoami", "--app-dir", str(app_dir_for_nobody),
                       "-b", "127.0.0.1:0", "--user", "nobody",
                       "--pid", str(pid_path), "--umask", "027", "-w", "1"]) as server:
        address = tcp_address(server.wait_serving()[0])
        # The supervisor (it keeps root, as gunicorn's arbiter) wrote its own pid.
        assert pid_path.read_text() == f"{server.proc.pid}\n"
        status, _, body = http_request(address, "/")
        assert status == 200, body
        who = json.loads(body)
        assert (who["uid"], who["euid"], who["gid"]) == (uid, uid, gid), who
        assert 0 not in who["groups"], "root's supplementary groups are dropped"
        assert who["pid"] != server.proc.pid
        assert who["umask"] == 0o027
        server.signal(signal.SIGTERM)
        assert server.wait_exit(20) == 0
    assert not pid_path.exists(), "the pid file is removed on exit"


@ROOT_ONLY
def test_user_and_group_by_number(app_dir_for_nobody: Path) -> None:
    uid, gid = nobody()
    with ServeProcess(["dropped_apps:whoami", "--app-dir", str(app_dir_for_nobody),
                       "-b", "127.0.0.1:0", "--user", str(uid),
                       "--group", str(gid), "-w", "1"]) as server:
        who = json.loads(http_request(tcp_address(server.wait_serving()[0]), "/")[2])
        assert (who["uid"], who["gid"]) == (uid, gid), who


@ROOT_ONLY
def test_user_nobody_serves_when_mioreactor_lies_where_nobody_cannot_read(
    app_dir_for_nobody: Path,
) -> None:
    """The server's own modules are all imported before the drop: a copy of the code in
    a folder only root can read (as ``mktemp -d`` makes) still serves as ``nobody``."""
    nobody()
    hidden = Path(tempfile.mkdtemp(prefix="reactor-hidden-"))  # mode 0700, root's
    try:
        assert not reachable_by_others(hidden)
        code = hidden / "checkout"
        package = code / "mioreactor"  # the package as the wheel lays it out
        package.mkdir(parents=True)
        ignore = shutil.ignore_patterns("__pycache__")
        for folder in ("reactor", "workers"):
            shutil.copytree(ROOT / folder, package / folder, ignore=ignore)
        for name in ("__init__.py", "__main__.py", "cli.py"):
            shutil.copyfile(ROOT / name, package / name)
        # Run from the copy (a server process's sys.path starts with its working
        # directory), with the copy first on the path of every process.
        in_copy = ["sh", "-c", 'cd "$1" && shift && exec "$@"', "sh", str(code)]
        with ServeProcess(["dropped_apps:whoami", "--app-dir", str(app_dir_for_nobody),
                           "-b", "127.0.0.1:0", "--user", "nobody", "-w", "1"],
                          env={"PYTHONPATH": str(code)}, prefix=in_copy) as server:
            address = tcp_address(server.wait_serving()[0])
            assert json.loads(http_request(address, "/")[2])["uid"] == nobody()[0]
    finally:
        shutil.rmtree(hidden, ignore_errors=True)


def test_a_single_process_writes_its_own_pid_and_removes_it(tmp_path: Path) -> None:
    pid_path = tmp_path / "run" / "reactor.pid"
    pid_path.parent.mkdir()
    with ServeProcess(["tests.cli.apps:app", "-b", "127.0.0.1:0", "--pid", str(pid_path),
                       "-w", "1"]) as server:
        server.wait_serving()
        assert pid_path.read_text() == f"{server.proc.pid}\n"
        server.signal(signal.SIGTERM)
        assert server.wait_exit(20) == 0
    assert not pid_path.exists()
    assert list(pid_path.parent.iterdir()) == [], "no temporary file is left"


def test_a_pid_file_naming_a_running_process_refuses_to_start(tmp_path: Path) -> None:
    pid_path = tmp_path / "reactor.pid"
    pid_path.write_text(f"{os.getpid()}\n")  # this test process: alive
    with ServeProcess(["tests.cli.apps:app", "-b", "127.0.0.1:0", "--pid", str(pid_path)]) as server:
        assert server.wait_exit(20) == 1
        assert f"names process {os.getpid()}, which is running" in server.output
    assert pid_path.read_text() == f"{os.getpid()}\n", "another server's pid file is left alone"


def test_a_stale_pid_file_is_replaced(tmp_path: Path) -> None:
    pid_path = tmp_path / "reactor.pid"
    pid_path.write_text("999999999\n")  # above pid_max: no such process
    pid_file = PidFile(str(pid_path))
    pid_file.create()
    assert pid_path.read_text() == f"{os.getpid()}\n"
    pid_file.remove()
    assert not pid_path.exists()


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--user", "no_such_user_zq"], "--user 'no_such_user_zq': no such user"),
        (["--group", "no_such_group_zq"], "--group 'no_such_group_zq': no such group"),
        (["--pid", "/nonexistent/dir/reactor.pid"], "cannot write pid file /nonexistent/dir"),
    ],
)
def test_a_bad_user_group_or_pid_file_gives_one_line(args: list[str], problem: str) -> None:
    result = invoke("serve", "tests.cli.apps:app", "-b", "127.0.0.1:0", *args)
    assert problem in one_error_line(result)


def test_a_bad_umask_gives_one_line() -> None:
    result = invoke("serve", "--umask", "089")
    assert result.exit_code == 2
    assert "'089' is not an octal umask" in one_error_line(result)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user first")
def test_without_root_switching_user_is_refused_with_one_line() -> None:
    """In a forked child that made itself nobody: --user root cannot work, and says so."""
    uid, gid = nobody()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become nobody, then try
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            out = []
            try:
                drop_privileges("root", None)
                out.append("switched?!")
            except ProcessError as exc:
                out.append(str(exc))
            out.append(one_error_line(invoke("serve", "--user", "root", "-b", "127.0.0.1:0")))
            os.write(write_end, "\n".join(out).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    deadline = time.monotonic() + 20
    data = b""
    while chunk := os.read(read_end, 65536):
        data += chunk
        assert time.monotonic() < deadline
    os.close(read_end)
    os.waitpid(pid, 0)
    direct, cli_line = data.decode().split("\n")
    assert f"--user root: cannot switch to uid 0 without root (running as uid {uid})" in direct
    assert "cannot switch to uid 0 without root" in cli_line
