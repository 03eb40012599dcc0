"""Profile our server under wrk load with py-spy and summarise where the time goes.

``python -m bench.profile [--seconds 8] [--app hello] [--close] [--tls]`` launches
``reactor serve`` (as ``bench.servers`` does), drives it with wrk, samples it with
``py-spy record --threads --format raw`` (from ``.bench-venv``; ``pip install py-spy``
there), and prints, per thread, the share of samples each function is on the stack
(inclusive) and at the top of it (self). ``summarise`` is pure, for the smoke test.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
import threading
from collections import Counter
from pathlib import Path

from bench.run import VENV
from bench.servers import PEERS, launch, make_certificate
from bench.wrk import run_wrk

__all__ = ["Profile", "main", "summarise"]

_FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^()]*?)(?::\d+)?\)$")


class Profile:
    """Samples per thread: total, inclusive and self counts by ``func (file)``."""

    def __init__(self) -> None:
        self.total: Counter[str] = Counter()
        self.inclusive: dict[str, Counter[str]] = {}
        self.self_: dict[str, Counter[str]] = {}


def _frame_name(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if m is None:
        return frame.strip()
    file = m.group("file").rsplit("site-packages/", 1)[-1]
    return f"{m.group('func')} ({file})"


def summarise(raw: str) -> Profile:
    """Read py-spy's raw (collapsed-stack) output: ``thread (T): f1;f2;... COUNT`` lines."""
    prof = Profile()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        thread = frames[0]
        if thread.startswith("thread ("):
            thread = thread.split(":", 1)[1].strip() if ":" in thread else thread
            frames = frames[1:]
        names = [_frame_name(f) for f in frames]
        prof.total[thread] += n
        inc = prof.inclusive.setdefault(thread, Counter())
        for name in set(names):
            inc[name] += n
        if names:
            prof.self_.setdefault(thread, Counter())[names[-1]] += n
    return prof


def format_profile(prof: Profile, top: int = 15) -> str:
    """Per thread: the top functions by self and by inclusive share of its samples."""
    out: list[str] = []
    for thread, total in prof.total.most_common():
        out.append(f"thread {thread}: {total} samples")
        out.append("  self:")
        for name, n in prof.self_.get(thread, Counter()).most_common(top):
            out.append(f"    {100 * n / total:5.1f}%  {name}")
        out.append("  inclusive:")
        for name, n in prof.inclusive.get(thread, Counter()).most_common(top):
            out.append(f"    {100 * n / total:5.1f}%  {name}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Launch, load, sample, summarise. See the module docstring."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--app", default="hello")
    p.add_argument("--close", action="store_true", help="wrk with Connection: close")
    p.add_argument("--tls", action="store_true", help="serve and load over TLS (https)")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args(argv)
    bin_dir = VENV / "bin"
    pyspy = bin_dir / "py-spy"
    if not pyspy.exists():
        print(f"py-spy is not installed in {VENV} (pip install py-spy there)")
        return 1
    headers = ("Connection: close",) if args.close else ()
    with tempfile.TemporaryDirectory() as tmp, \
            launch(PEERS["ours"], bin_dir, app=args.app, threads=args.workers,
                   tls=make_certificate(tmp) if args.tls else None) as srv:
        run_wrk(srv.url, duration=1, latency=False)
        result: list[str] = []
        load = threading.Thread(
            target=lambda: result.append(
                f"{run_wrk(srv.url, duration=args.seconds + 3, headers=headers).rps:,.0f} req/s"),
            daemon=True,
        )
        load.start()
        out = Path(tmp) / "raw.txt"
        subprocess.run(
            [str(pyspy), "record", "--pid", str(srv.proc.pid), "--threads", "--rate", "250",
             "--duration", str(int(args.seconds)), "--format", "raw", "--nonblocking",
             "--output", str(out)],
            capture_output=True, timeout=args.seconds + 60, check=False,
        )
        load.join(args.seconds + 40)
        raw = out.read_text() if out.exists() else ""
    print(f"load: {result[0] if result else '?'} (wrk -c50{' close' if args.close else ''})")
    print(format_profile(summarise(raw), args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
