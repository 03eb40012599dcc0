"""WebSocket codec cost per frame, ours against wsproto, in microseconds (docs/decisions.md 8).

For each size (32-byte text and 64 KiB binary): ``parse`` feeds one masked client
frame to a server-side connection and takes the message event; ``serialize`` makes
the server's unmasked frame of one message. Medians of interleaved repeats, timeit.
wsproto is measured when it imports (it is not a dependency: run this with a Python
that has it, ``PYTHONPATH=.lint`` after ``make lint`` for our package).

    python bench/ws_codec.py [--number 20000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import timeit
from collections.abc import Callable

from mioreactor.workers.websocket import WebSocketConnection, frame_bytes


def ours(text: bool, payload: bytes) -> tuple[Callable[[], object], Callable[[], object]]:
    conn = WebSocketConnection()
    frame = frame_bytes(1 if text else 2, payload, mask=os.urandom(4))
    message: str | bytes = payload.decode() if text else payload
    receive, send = conn.receive_data, conn.send
    return (lambda: receive(frame)), (lambda: send(message))


def wsproto_pair(text: bool, payload: bytes) -> tuple[Callable[[], object], Callable[[], object]]:
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, BytesMessage, Request, TextMessage

    server = WSConnection(ConnectionType.SERVER)
    client = WSConnection(ConnectionType.CLIENT)
    server.receive_data(client.send(Request(host="x", target="/")))
    for _ in server.events():
        pass
    client.receive_data(server.send(AcceptConnection()))
    for _ in client.events():
        pass
    event = TextMessage(payload.decode()) if text else BytesMessage(payload)
    frame = client.send(event)  # masked, as a client sends it
    srecv, sevents, ssend = server.receive_data, server.events, server.send

    def parse() -> object:
        srecv(frame)
        return list(sevents())

    return parse, (lambda: ssend(event))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    impls: dict[str, Callable[[bool, bytes], tuple[Callable[[], object], Callable[[], object]]]]
    impls = {"ours": ours}
    try:
        import wsproto  # noqa: F401
        impls["wsproto"] = wsproto_pair
    except ImportError:
        print("wsproto not importable: measuring ours only")
    cases = [("32 B text", True, b"x" * 32, args.number),
             ("64 KiB binary", False, os.urandom(65536), max(200, args.number // 50))]
    print(f"{'case':<16}{'impl':<10}{'parse us':>10}{'serialize us':>14}")
    for label, text, payload, number in cases:
        results: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in impls}
        made = {k: f(text, payload) for k, f in impls.items()}
        for _ in range(args.repeats):  # interleaved
            for name, (parse, serialize) in made.items():
                results[name][0].append(timeit.timeit(parse, number=number) / number * 1e6)
                results[name][1].append(timeit.timeit(serialize, number=number) / number * 1e6)
        for name, (p, s) in results.items():
            print(f"{label:<16}{name:<10}{statistics.median(p):>10.2f}{statistics.median(s):>14.2f}")


if __name__ == "__main__":
    main()
