"""Pass-through throughput and connection set-up cost of the lab's chaos proxy, against going direct.

A child process runs a sink server (reads until EOF, answers with the byte count) and a one-byte
echo server; other child processes push bytes, so the parent process holds nothing but the proxy
thread, exactly as a test or a notebook would. Prints MB/s (1 MB = 10^6 bytes) for one flow and for
several parallel flows, and the cost of a connect + one round trip + close.

    .venv/bin/python bench/proxy.py [--mib 1024] [--flows 4] [--connections 500]

It prints figures; it is not a test and asserts nothing.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from playbook.lab.proxy import ChaosProxy  # noqa: E402

BLOCK = 1024 * 1024


def _sink_client(conn: socket.socket) -> None:
    total = 0
    buf = bytearray(BLOCK)
    while n := conn.recv_into(buf):
        total += n
    conn.sendall(struct.pack("!Q", total))
    conn.close()


def _echo_client(conn: socket.socket) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while data := conn.recv(1):
        conn.sendall(data)
    conn.close()


def _serve(listener: socket.socket, handler: Callable[[socket.socket], None]) -> None:
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=handler, args=(conn,), daemon=True).start()


def servers(ready: Connection) -> None:
    """Child process: a sink and an echo server on 127.0.0.1; sends their ports, then serves forever."""
    sink = socket.create_server(("127.0.0.1", 0), backlog=128)
    echo = socket.create_server(("127.0.0.1", 0), backlog=128)
    threading.Thread(target=_serve, args=(echo, _echo_client), daemon=True).start()
    ready.send((sink.getsockname()[1], echo.getsockname()[1]))
    _serve(sink, _sink_client)


def push(port: int, nbytes: int, start: mp.synchronize.Event, out: Connection) -> None:
    """Child process: send `nbytes` to the sink through `port` and report the seconds it took."""
    payload = memoryview(bytes(BLOCK))
    sock = socket.create_connection(("127.0.0.1", port))
    start.wait()
    began = time.perf_counter()
    sent = 0
    while sent < nbytes:
        sock.sendall(payload[: min(BLOCK, nbytes - sent)])
        sent += min(BLOCK, nbytes - sent)
    sock.shutdown(socket.SHUT_WR)
    acked = struct.unpack("!Q", sock.recv(8, socket.MSG_WAITALL))[0]
    out.send((time.perf_counter() - began, acked))
    sock.close()


def throughput(port: int, total: int, flows: int) -> float:
    """MB/s for `total` bytes split over `flows` parallel connections, start to last byte acknowledged."""
    start = mp.Event()
    pipes, procs = [], []
    for _ in range(flows):
        recv, send = mp.Pipe(duplex=False)
        proc = mp.Process(target=push, args=(port, total // flows, start, send))
        proc.start()
        pipes.append(recv)
        procs.append(proc)
    time.sleep(0.3)  # let every pusher connect so the clock measures moving bytes, not process start
    start.set()
    results = [p.recv() for p in pipes]
    for proc in procs:
        proc.join()
    moved = sum(r[1] for r in results)
    if moved != total // flows * flows:
        raise SystemExit(f"the sink received {moved} bytes, expected {total // flows * flows}")
    return moved / max(r[0] for r in results) / 1e6


def setup_cost(port: int, count: int) -> float:
    """Microseconds for connect + one-byte round trip + close."""
    began = time.perf_counter()
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(b"x")
            sock.recv(1)
    return (time.perf_counter() - began) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="bytes to move per run, in MiB")
    parser.add_argument("--flows", type=int, default=4, help="parallel flows for the second run")
    parser.add_argument("--connections", type=int, default=500, help="connections for the set-up cost")
    args = parser.parse_args()

    recv, send = mp.Pipe(duplex=False)
    server = mp.Process(target=servers, args=(send,), daemon=True)
    server.start()
    sink_port, echo_port = recv.recv()
    total = args.mib * 1024 * 1024
    try:
        sink_proxy, echo_proxy = ChaosProxy("127.0.0.1", sink_port), ChaosProxy("127.0.0.1", echo_port)
        with sink_proxy, echo_proxy:
            print(f"moving {args.mib} MiB through 127.0.0.1 (MB = 10^6 bytes)")
            for flows in (1, args.flows):
                direct = throughput(sink_port, total, flows)
                proxied = throughput(sink_proxy.port, total, flows)
                print(
                    f"  {flows} flow(s):  direct {direct:8.0f} MB/s   proxy {proxied:8.0f} MB/s   "
                    f"({proxied / direct:.0%} of direct)"
                )
            direct_us = setup_cost(echo_port, args.connections)
            proxied_us = setup_cost(echo_proxy.port, args.connections)
            print(
                f"connect + 1-byte round trip + close, {args.connections} times:  "
                f"direct {direct_us:6.0f} us   proxy {proxied_us:6.0f} us   "
                f"(+{proxied_us - direct_us:.0f} us)"
            )
            stats = sink_proxy.stats()
            print(f"proxy counted {stats['bytes_to_server'] / 2**20:.0f} MiB in {stats['flows_total']} flows")
    finally:
        server.terminate()
        server.join()


if __name__ == "__main__":
    main()
