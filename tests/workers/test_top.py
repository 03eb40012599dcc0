"""``reactor top`` without a terminal: the text-format parser, rates, quantiles, frames,
and ``--once`` against a real server."""

from __future__ import annotations

import math
import re
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from click.testing import CliRunner
from mioreactor import cli
from mioreactor.workers import Server
from mioreactor.workers.ops.metrics import BUCKETS, DURATION_BOUNDS, parse_text, render
from mioreactor.workers.tools.top import (
    Scrape,
    Top,
    bucket_deltas,
    quantile,
    rate,
    render_frame,
    target_url,
)


def test_the_parser_reads_labels_escapes_special_values_and_timestamps() -> None:
    text = (
        "# HELP x_total a counter\n"
        "# TYPE x_total counter\n"
        "\n"
        'x_total{a="1",b="quote \\" backslash \\\\ newline \\n end"} 3 1700000000000\n'
        "plain 2.5\n"
        'inf{le="+Inf"} +Inf\n'
        "nan NaN\n"
        'spaced{ a = "x" , } -1e3\n'
    )
    samples = parse_text(text)
    assert samples[0] == ("x_total", {"a": "1", "b": 'quote " backslash \\ newline \n end'}, 3.0)
    assert samples[1] == ("plain", {}, 2.5)
    assert samples[2][2] == math.inf and samples[2][1] == {"le": "+Inf"}
    assert math.isnan(samples[3][2])
    assert samples[4] == ("spaced", {"a": "x"}, -1000.0)


@pytest.mark.parametrize("bad", ["lonely", 'x{a="1"', 'x{a=1} 2', "x notanumber", 'x{a="1"} '])
def test_the_parser_rejects_what_is_not_a_sample(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_text(bad + "\n")


def stats_doc(accepted: int = 10, two: int = 7, four: int = 2, buckets: list[int] | None = None,
              workers: int = 2, handoffs: int = 1) -> dict[str, Any]:
    counts = buckets if buckets is not None else [3, 4, 2] + [0] * (BUCKETS - 3)
    return {
        "pid": 42, "accepted": accepted, "closed": accepted - 1, "active": 1, "shed": 0,
        "paused_at_max": 0, "accept_errors": {"ECONNABORTED": 2}, "handoffs": handoffs,
        "queue_depth": 3, "listen_queue": {'unix:/tmp/we"ird': 5},
        "workers": [{"name": f"reactor-worker-{i}", "state": "running" if i == 0 else "standby",
                     "stuck_for": 42.25 if i == 0 else 0.0}
                    for i in range(workers)],
        "stuck_now": 1,
        "requests": {"2xx": two, "4xx": four},
        "request_duration": {"bounds": list(DURATION_BOUNDS), "buckets": counts,
                             "sum": 1.0, "count": sum(counts)},
        "stuck_requests": 4,
    }


def test_a_scrape_reads_back_what_the_endpoint_renders() -> None:
    s = Scrape.from_text(render(stats_doc()), at=5.0)
    assert (s.accepted, s.closed, s.active, s.queue_depth, s.handoffs, s.stuck) == (10, 9, 1, 3, 1, 4)
    assert s.requests["2xx"] == 7 and s.requests["4xx"] == 2 and s.requests_total == 9
    assert s.accept_errors == {"ECONNABORTED": 2}
    assert s.listen_queue == {'unix:/tmp/we"ird': 5}
    assert s.buckets[0] == (0.0005, 3) and s.buckets[1] == (0.001, 7)
    assert s.buckets[-1] == (math.inf, 9)
    assert s.workers == [("42", "reactor-worker-0", "running"), ("42", "reactor-worker-1", "standby")]
    assert s.stuck_now == 1 and s.stuck_for == {("42", "reactor-worker-0"): 42.25}
    assert s.processes == 1


def test_a_page_without_reactor_metrics_is_refused() -> None:
    with pytest.raises(ValueError, match="mioreactor"):
        Scrape.from_text("other_metric 1\n", at=0.0)


def test_rates_and_counter_resets() -> None:
    assert rate(100, 150, 2.0) == 25.0
    assert rate(100, 30, 1.0) == 30.0  # restarted: counts from zero
    assert rate(1, 2, 0.0) == 0.0


def test_quantiles_interpolate_inside_the_bucket_like_histogram_quantile() -> None:
    buckets = [(0.1, 10.0), (0.2, 20.0), (math.inf, 20.0)]
    assert quantile(0.5, buckets) == pytest.approx(0.1)
    assert quantile(0.75, buckets) == pytest.approx(0.15)
    assert quantile(0.99, buckets) == pytest.approx(0.198)
    assert quantile(0.25, buckets) == pytest.approx(0.05)  # the first bucket starts at 0
    # Past the last finite bound: the largest finite bound.
    assert quantile(0.99, [(0.1, 1.0), (0.5, 1.0), (math.inf, 10.0)]) == pytest.approx(0.5)
    assert quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]) is None
    assert quantile(0.5, []) is None


def test_bucket_deltas_are_the_window_and_a_reset_starts_over() -> None:
    prev = [(0.1, 5.0), (math.inf, 8.0)]
    cur = [(0.1, 9.0), (math.inf, 20.0)]
    assert bucket_deltas(prev, cur) == [(0.1, 4.0), (math.inf, 12.0)]
    assert bucket_deltas(cur, prev) == prev
    assert bucket_deltas([(1.0, 1.0)], cur) == cur


def test_a_frame_shows_rates_quantiles_and_every_worker() -> None:
    # One second apart: 20 more requests, all of them in the 1-2.5 ms bucket.
    before = Scrape.from_text(render(stats_doc(accepted=10, two=7, handoffs=1)), at=10.0)
    later = [3, 4, 22] + [0] * (BUCKETS - 3)
    after = Scrape.from_text(render(stats_doc(accepted=30, two=27, buckets=later,
                                              handoffs=3)), at=11.0)
    frame = render_frame(after, before, url="http://h:1/metrics", interval=1.0, width=120,
                         height=40, clock="12:00:00")
    assert re.search(r"per second\s+20\.0", frame), frame
    assert re.search(r"accepted\s+30\b", frame) and re.search(r"total\s+29\b", frame)
    p50 = 0.001 + (0.0025 - 0.001) * 0.5  # rank 10 of 20, all in (1 ms, 2.5 ms]
    assert f"p50 {p50 * 1000:.1f} ms".replace(" ", "") in frame.replace(" ", "")
    assert re.search(r"hand-offs\s+total\s+3\s+per second\s+2\.0", frame), frame
    assert re.search(r"stuck\s+total\s+4\s+now\s+1\b", frame), frame
    assert "reactor-worker-0      running  stuck in the app for 42.2 s" in frame
    assert "reactor-worker-1      standby" in frame
    assert "running 1  standby 1  detached 0" in frame
    assert all(len(line) <= 120 for line in frame.splitlines())


def test_the_first_frame_has_no_rates_and_quantiles_since_start() -> None:
    s = Scrape.from_text(render(stats_doc()), at=1.0)
    frame = render_frame(s, None, url="u", interval=1.0)
    assert re.search(r"per second\s+-", frame)
    assert "since start" in frame


def test_a_small_terminal_gets_a_truncated_frame() -> None:
    s = Scrape.from_text(render(stats_doc(workers=30)), at=1.0)
    frame = render_frame(s, None, url="u", interval=1.0, width=40, height=20)
    lines = frame.splitlines()
    assert len(lines) == 20 and all(len(line) <= 40 for line in lines)
    assert lines[-1].startswith("... and ") and lines[-1].endswith(" more")
    shown = sum(1 for line in lines if "reactor-worker-" in line)
    assert shown + int(lines[-1].split()[2]) == 30


def test_top_says_unreachable_keeps_the_last_figures_and_recovers() -> None:
    pages = [render(stats_doc(accepted=5)), OSError("Connection refused"),
             render(stats_doc(accepted=8)), render(stats_doc(accepted=9))]

    def get(url: str, timeout: float) -> str:
        page = pages.pop(0)
        if isinstance(page, Exception):
            raise page
        return page

    top = Top("http://127.0.0.1:1/metrics", 1.0, get=get)
    assert top.refresh()
    assert not top.refresh()
    frame = top.frame(100, 40)
    assert "UNREACHABLE: Connection refused" in frame and "retrying every 1s" in frame
    assert re.search(r"accepted\s+5\b", frame), "the last figures stay on screen"
    assert top.refresh()
    assert top.prev is None, "no rate across the gap"
    assert "UNREACHABLE" not in top.frame(100, 40)
    assert top.refresh()
    assert top.prev is not None and top.prev.accepted == 8


@pytest.mark.parametrize(
    ("target", "url"),
    [
        ("127.0.0.1:9100", "http://127.0.0.1:9100/metrics"),
        ("[::1]:9100", "http://[::1]:9100/metrics"),
        ("http://h:1", "http://h:1/metrics"),
        ("http://h:1/", "http://h:1/metrics"),
        ("http://h:1/custom?x=1", "http://h:1/custom?x=1"),
    ],
)
def test_target_urls(target: str, url: str) -> None:
    assert target_url(target) == url


@pytest.mark.parametrize("bad", ["ftp://h:1/metrics", "http://", "http://h:notaport/"])
def test_a_bad_target_is_one_error_line(bad: str) -> None:
    result = CliRunner().invoke(cli.reactor, ["top", bad], env={"REACTOR_TOP_INTERVAL": None})
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "URL" in errors[0], result.output


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]


def test_once_prints_the_servers_figures() -> None:
    with Server(app, bind="127.0.0.1:0", workers=3, metrics_bind="127.0.0.1:0") as server:
        assert server.metrics is not None
        for _ in range(12):
            urllib.request.urlopen(server.url, timeout=5).read()
        result = CliRunner().invoke(cli.reactor, ["top", server.metrics.url, "--once",
                                                  "--interval", "0.2"])
        stats = server.stats()
    assert result.exit_code == 0, result.output
    out = result.output
    assert re.search(rf"accepted\s+{stats['accepted']}\b", out), out
    assert re.search(rf"requests\s+total\s+{sum(stats['requests'].values())}\b", out), out
    assert stats["accepted"] == 12
    assert sum(1 for line in out.splitlines() if "reactor-worker-" in line) == 3
    assert "\x1b" not in out and "q quits" not in out


def test_once_against_nothing_exits_1_with_a_message() -> None:
    result = CliRunner().invoke(cli.reactor, ["top", "127.0.0.1:1", "--once"])
    assert result.exit_code == 1
    assert "unreachable" in result.output


def test_odd_values_from_an_endpoint_do_not_break_a_frame() -> None:
    text = render(stats_doc()).replace("reactor_queue_depth 3", "reactor_queue_depth NaN")
    text = text.replace("reactor_connections_active 1", "reactor_connections_active +Inf")
    frame = render_frame(Scrape.from_text(text, at=1.0), None, url="u", interval=1.0)
    assert re.search(r"depth\s+nan", frame) and re.search(r"active\s+inf", frame), frame


def test_a_frame_shows_the_collectors_runs_and_pauses() -> None:
    def gc(full: int, pauses: list[float], longest: float) -> dict[str, Any]:
        return {**stats_doc(), "gc": {"collections": [100, 10, full],
                                      "pause_seconds": pauses, "longest_pause": longest}}

    before = Scrape.from_text(render(gc(1, [0.01, 0.005, 0.012], 0.012)), at=10.0)
    # two seconds later: two more full collections of 10 ms each, 4 ms of young ones
    after = Scrape.from_text(render(gc(3, [0.014, 0.005, 0.032], 0.0121)), at=12.0)
    assert after.gc_runs == 113 and after.gc_full == 3
    frame = render_frame(after, before, url="http://h:1/metrics", interval=2.0, width=120,
                         height=40)
    line = next(x for x in frame.splitlines() if x.startswith("gc "))
    assert re.search(r"runs\s+113\s+full\s+3\s+paused ms/s 12\.00\s+longest 12\.1 ms", line), line
    first = render_frame(after, None, url="http://h:1/metrics", interval=2.0, width=120, height=40)
    assert "paused ms/s -" in first
