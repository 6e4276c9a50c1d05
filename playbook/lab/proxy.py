"""The chaos TCP proxy of the lab: sits between clients and the lab server and breaks the path on demand.

`ChaosProxy` runs an asyncio loop in its own daemon thread, so synchronous code (tests, notebooks,
psycopg_pool workloads) drives it with plain method calls, which are thread-safe and take effect
before they return. Faults:

- pass-through: bytes move in 256 KiB reads with no sleeps on the way (well over 100 MB/s).
- latency with jitter: data flowing to the client is held back `ms ± jitter` (uniform), so a
  request/response round trip gets that much slower. Order is kept, like TCP keeps it. The TCP
  handshake with the proxy itself is local and not delayed; PostgreSQL's start-up round trips are.
- refuse new connections: the listening socket stops listening (Linux `shutdown(SHUT_RD)` on a
  listener) but keeps its port, so the kernel answers SYNs with RST and clients get a genuine
  "Connection refused". The kernel refuses them, so the proxy cannot count them.
- reset every open flow now: SO_LINGER 0 then close on both sockets, which sends RST (not FIN).
- reset a flow idle for N seconds: the load balancer or firewall that notices idleness and sends RST
  both ways at its idle timeout (as e.g. Azure Load Balancer does with "TCP reset on idle").
- drop a flow idle for N seconds: the NAT or load balancer that forgets. Forwarding stops both ways,
  whatever arrives is discarded, neither side is closed, so the server keeps an idle session and the
  client waits until its own timeout notices. A FIN or RST from either side is not passed on either.
  With `reset_on_data` the hop answers the client's next bytes on a forgotten flow with RST (AWS's
  NLB and NAT gateway document this) and ends the server's side with a quiet FIN.
- bandwidth cap: bytes per second for each direction, shared by all flows like one link.
- either idle fault counting only payload (`count_keepalives=False`): the application-level hop
  (HAProxy's `timeout client`/`timeout server`, PgBouncer's idle timeouts, a cloud database proxy),
  which relays data and never sees TCP keepalives, so they do not keep a flow alive through it.

Idle detection and TCP keepalives. A userspace proxy never sees keepalive probes: they carry no
payload. In real life those probes are what keeps a NAT entry fresh, and the lab must show that a
client with keepalives survives a NAT that drops idle flows. So the proxy polls Linux TCP_INFO of
both sockets of every flow every 0.1 s: `tcpi_segs_in` (Linux >= 4.2) counts every received segment,
keepalive probes and bare ACKs included. A flow is idle when neither payload nor any segment arrived
on either socket for N seconds (a hop that tracks packets: NAT, conntrack, cloud load balancer), or,
with `count_keepalives=False`, when no payload moved for N seconds (an application-level hop).
Without TCP_INFO (not Linux) only payload counts.

Honest limits:
- After a drop the proxy host's kernel still ACKs what the client sends, keepalive probes included.
  A real NAT that forgot a flow would let them vanish, and the client's keepalive (or
  tcp_user_timeout) would then declare the connection dead. Here the client notices a dropped flow
  only through its own application-level timeouts (connect_timeout does not apply, a query just
  hangs). Making probes vanish needs packet filtering in the kernel, which a userspace proxy cannot do.
- Keepalives keep a flow fresh only if their idle time is below the drop limit, as in real life; the
  granularity of idle detection is the 0.1 s poll.
- Segments the client sends that only the proxy host's kernel sees (e.g. window updates) count as
  activity, as they would for a NAT.
- Latency is applied per read chunk, not per packet; the bandwidth cap is a pacing of reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import shutil
import socket
import struct
import tempfile
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from playbook.errors import PlaybookError

log = logging.getLogger(__name__)

T = TypeVar("T")

CHUNK = 256 * 1024  # one read; large reads are what make pass-through fast
MAX_QUEUED = 4 * 1024 * 1024  # delayed bytes held per direction before reading pauses (back-pressure)
YIELD_EVERY = 16  # chunks moved without suspending before giving other flows a turn
POLL_INTERVAL = 0.1  # idle detection granularity
CONNECT_TIMEOUT = 5.0  # to the upstream server
CONTROL_TIMEOUT = 10.0  # a control call that takes longer means the loop is stuck
BACKLOG = 512
# struct tcp_info (linux/tcp.h): tcpi_segs_out at 136, tcpi_segs_in at 140 (both __u32, Linux >= 4.2)
TCPI_SEGS_IN_OFFSET = 140
TCP_INFO_LEN = 144
LINGER_RST = struct.pack("ii", 1, 0)


def _segs_in(sock: socket.socket) -> int | None:
    """Segments the kernel received on this socket, keepalive probes included; None where unknown."""
    opt = getattr(socket, "TCP_INFO", None)
    if opt is None or sock.fileno() < 0:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, opt, TCP_INFO_LEN)
    except OSError:
        return None
    if len(info) < TCP_INFO_LEN:
        return None
    return int(struct.unpack_from("I", info, TCPI_SEGS_IN_OFFSET)[0])


class _Lane:
    """One direction of a flow, with the queue that holds delayed bytes."""

    def __init__(self, src: socket.socket, dst: socket.socket, to_client: bool) -> None:
        self.src = src
        self.dst = dst
        self.to_client = to_client
        self.queue: deque[tuple[float, bytes]] = deque()
        self.queued = 0
        self.last_due = 0.0
        self.wake = asyncio.Event()  # something was queued
        self.room = asyncio.Event()  # the queue is below its limit
        self.room.set()
        self.idle = asyncio.Event()  # queue empty and the delayed writer is not sending
        self.idle.set()
        self.writer: asyncio.Task[None] | None = None
        self.failed = False


@dataclass
class _Flow:
    id: int
    client: socket.socket
    client_addr: str
    created: float
    last_active: float  # any segment (payload, keepalive probe, ACK) on either socket
    last_payload: float = 0.0  # bytes relayed either way: all an application-level hop counts
    upstream: socket.socket | None = None
    task: asyncio.Task[None] | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    segs: tuple[int | None, int | None] = (None, None)
    bytes_to_server: int = 0
    bytes_to_client: int = 0
    dropped: bool = False
    rst: bool = False  # close with RST instead of FIN
    forgotten: bool = False  # a dropped flow the client wrote to: RST to it, nothing to the server
    closing: bool = False


class _Link:
    """A shared virtual clock per direction: each chunk waits until the link has had time to carry it."""

    def __init__(self) -> None:
        self.rate: int | None = None
        self.free_at = 0.0

    async def transmit(self, loop: asyncio.AbstractEventLoop, nbytes: int) -> None:
        rate = self.rate
        if rate is None:
            return
        now = loop.time()
        self.free_at = max(now, self.free_at) + nbytes / rate
        if self.free_at - now > 0.0005:
            await asyncio.sleep(self.free_at - now)


class ChaosProxy:
    """An asyncio TCP proxy in a daemon thread, with faults switched on and off while it runs."""

    def __init__(
        self, upstream_host: str, upstream_port: int, *, listen_host: str = "127.0.0.1", listen_port: int = 0
    ) -> None:
        if not 0 < upstream_port < 65536:
            raise PlaybookError(f"the upstream port must be between 1 and 65535, not {upstream_port}")
        if not 0 <= listen_port < 65536:
            raise PlaybookError(f"the listen port must be between 0 and 65535, not {listen_port}")
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.listen_host = listen_host
        self._requested_port = listen_port
        self._port: int | None = None
        self._upstream_addrs: list[tuple[int, Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._listener: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._tmpdir: Path | None = None
        self._passfiles = 0
        self._random = random.Random()
        self._flows: dict[int, _Flow] = {}
        self._next_id = 1
        # faults; changed only on the loop thread
        self._latency = 0.0
        self._jitter = 0.0
        self._refusing = False
        self._reset_idle: float | None = None
        self._drop_idle: float | None = None
        self._reset_counts_keepalives = True
        self._drop_counts_keepalives = True
        self._reset_dropped_on_data = False
        self._links = {False: _Link(), True: _Link()}  # keyed by "to_client"
        # counters
        self._flows_total = 0
        self._bytes = {False: 0, True: 0}
        self._resets = 0
        self._idle_resets = 0
        self._drops = 0
        self._dropped_resets = 0
        self._upstream_failures = 0

    # -- life cycle ----------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._port is None:
            raise PlaybookError("the chaos proxy has not been started")
        return self._port

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Resolve the upstream, bind the listening port and start the loop thread."""
        if self._thread is not None:
            raise PlaybookError("the chaos proxy is already running")
        try:
            infos = socket.getaddrinfo(self.upstream_host, self.upstream_port, type=socket.SOCK_STREAM)
        except OSError:
            raise PlaybookError(f"cannot resolve the upstream host {self.upstream_host!r}") from None
        self._upstream_addrs = [(info[0], info[4]) for info in infos]
        self._listener = self._bind()
        self._port = int(self._listener.getsockname()[1])
        self._tmpdir = Path(tempfile.mkdtemp(prefix="chaos-proxy-"))
        loop = asyncio.new_event_loop()
        self._loop = loop
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            self._accept_task = loop.create_task(self._accept_loop())
            self._watch_task = loop.create_task(self._watch_idle())
            loop.call_soon(ready.set)
            loop.run_forever()

        self._thread = threading.Thread(target=run, name=f"chaos-proxy-{self._port}", daemon=True)
        self._thread.start()
        ready.wait()

    def _bind(self) -> socket.socket:
        # Bind an explicit port even when asked for "any": Linux keeps an explicitly bound port while
        # the listener is shut down for refuse_new(), but gives back one that bind(0) picked.
        last_error: OSError | None = None
        family = socket.AF_INET6 if ":" in self.listen_host else socket.AF_INET
        for _ in range(20):
            port = self._requested_port
            if port == 0:
                with socket.socket(family, socket.SOCK_STREAM) as probe:
                    probe.bind((self.listen_host, 0))
                    port = int(probe.getsockname()[1])
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((self.listen_host, port))
                sock.listen(BACKLOG)
            except OSError as exc:
                sock.close()
                last_error = exc
                if self._requested_port != 0:
                    break
                continue
            sock.setblocking(False)
            return sock
        raise PlaybookError(
            f"the chaos proxy cannot listen on {self.listen_host}:{self._requested_port}: "
            f"{last_error.strerror if last_error else 'no free port'}"
        )

    def stop(self) -> None:
        """Close every flow (FIN) and the listener, stop the loop and join its thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(CONTROL_TIMEOUT)
            finally:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(CONTROL_TIMEOUT)
        loop.close()
        if self._listener is not None:
            self._listener.close()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
        self._loop = None
        self._thread = None

    def __enter__(self) -> ChaosProxy:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def _shutdown(self) -> None:
        for task in (self._accept_task, self._watch_task):
            if task is not None:
                task.cancel()
        await asyncio.gather(
            *(t for t in (self._accept_task, self._watch_task) if t is not None), return_exceptions=True
        )
        await self._end_flows(list(self._flows.values()), rst=False)
        if self._listener is not None:
            self._loop_now().remove_reader(self._listener.fileno())
            self._listener.close()

    # -- running things on the loop thread -----------------------------------------------------
    def _loop_now(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop

    def _call(self, func: Callable[[], Awaitable[T]]) -> T:
        """Run a coroutine on the loop thread and wait for it, so a control has taken effect on return."""
        if not self.running or self._loop is None:
            raise PlaybookError("the chaos proxy is not running")
        if threading.current_thread() is self._thread:
            raise RuntimeError("ChaosProxy controls are for other threads; the loop thread would deadlock")
        future: Future[T] = asyncio.run_coroutine_threadsafe(_as_coroutine(func), self._loop)
        return future.result(CONTROL_TIMEOUT)

    # -- controls --------------------------------------------------------------------------------
    def passthrough(self) -> None:
        """Clear every fault: no latency, accept connections, no idle limits, no bandwidth cap."""

        async def apply() -> None:
            self._latency = self._jitter = 0.0
            self._reset_idle = self._drop_idle = None
            self._reset_counts_keepalives = self._drop_counts_keepalives = True
            for link in self._links.values():
                link.rate = None
            await self._set_refusing(False)

        self._call(apply)

    def set_latency(self, ms: float, jitter_ms: float = 0.0) -> None:
        """Hold data flowing to the client back `ms ± jitter_ms` (uniform); 0 switches latency off."""
        if ms < 0 or jitter_ms < 0:
            raise PlaybookError("latency and jitter must be zero or more milliseconds")

        async def apply() -> None:
            self._latency, self._jitter = ms / 1000.0, jitter_ms / 1000.0

        self._call(apply)

    def refuse_new(self, on: bool = True) -> None:
        """Refuse new connections (the kernel answers RST: "Connection refused"); open flows go on."""
        self._call(lambda: self._set_refusing(on))

    def reset_all(self) -> None:
        """Reset every open flow now, dropped ones included: RST to the client and to the server."""

        async def apply() -> None:
            flows = list(self._flows.values())
            self._resets += len(flows)
            await self._end_flows(flows, rst=True)

        self._call(apply)

    def reset_idle_after(self, seconds: float | None, *, count_keepalives: bool = True) -> None:
        """Reset (RST both ways) each flow once it has been idle this long; None switches it off.

        `count_keepalives` (default): any segment counts as activity, keepalive probes included, as a
        load balancer or firewall tracking packets counts them; False: only relayed payload counts,
        as an application-level proxy's idle timeout does (HAProxy `timeout client`)."""
        _check_idle_limit(seconds)

        async def apply() -> None:
            self._reset_idle = seconds
            self._reset_counts_keepalives = count_keepalives

        self._call(apply)

    def drop_idle_after(
        self, seconds: float | None, *, reset_on_data: bool = False, count_keepalives: bool = True
    ) -> None:
        """Silently drop each flow once it has been idle this long; None switches it off.

        Flows already dropped stay dropped: a NAT that forgot a flow does not remember it later.
        With `reset_on_data` the hop answers the client's next bytes on a forgotten flow with RST, as
        AWS's NLB and NAT gateway document: the client learns at its next query, the server nothing.
        `count_keepalives=False`: only relayed payload counts as activity (see reset_idle_after)."""
        _check_idle_limit(seconds)

        async def apply() -> None:
            self._drop_idle = seconds
            self._reset_dropped_on_data = reset_on_data
            self._drop_counts_keepalives = count_keepalives

        self._call(apply)

    def set_bandwidth(self, bytes_per_s: int | None) -> None:
        """Cap each direction (shared by all flows) at this many bytes per second; None removes the cap."""
        if bytes_per_s is not None and bytes_per_s <= 0:
            raise PlaybookError("the bandwidth cap must be a positive number of bytes per second")

        async def apply() -> None:
            now = self._loop_now().time()
            for link in self._links.values():
                link.rate = bytes_per_s
                link.free_at = now

        self._call(apply)

    def stats(self) -> dict[str, Any]:
        """Counters, faults and open flows, as plain JSON-serialisable values."""
        if not self.running:
            return self._stats()

        async def collect() -> dict[str, Any]:
            return self._stats()

        return self._call(collect)

    def _stats(self) -> dict[str, Any]:
        now = self._loop.time() if self._loop is not None and not self._loop.is_closed() else 0.0
        flows = [
            {
                "id": f.id,
                "client": f.client_addr,
                "age_s": round(now - f.created, 3),
                "idle_s": round(now - f.last_active, 3),
                "dropped": f.dropped,
                "bytes_to_server": f.bytes_to_server,
                "bytes_to_client": f.bytes_to_client,
            }
            for f in self._flows.values()
        ]
        return {
            "listen": f"{self.listen_host}:{self._port}",
            "upstream": f"{self.upstream_host}:{self.upstream_port}",
            "running": self.running,
            "faults": {
                "latency_ms": self._latency * 1000.0,
                "jitter_ms": self._jitter * 1000.0,
                "refuse_new": self._refusing,
                "reset_idle_after_s": self._reset_idle,
                "reset_idle_counts_keepalives": self._reset_counts_keepalives,
                "drop_idle_after_s": self._drop_idle,
                "drop_idle_counts_keepalives": self._drop_counts_keepalives,
                "bandwidth_bytes_per_s": self._links[True].rate,
            },
            "open_flows": len(flows),
            "dropped_flows_open": sum(1 for f in flows if f["dropped"]),
            "flows_total": self._flows_total,
            "bytes_to_server": self._bytes[False],
            "bytes_to_client": self._bytes[True],
            "resets": self._resets,
            "idle_resets": self._idle_resets,
            "drops": self._drops,
            "dropped_resets": self._dropped_resets,
            "upstream_failures": self._upstream_failures,
            "flows": flows,
        }

    # -- DSN rewriting -------------------------------------------------------------------------
    def dsn_for(self, dsn: str) -> str:
        """The same libpq DSN, pointed at the proxy.

        host/port become the proxy's (hostaddr is dropped). Passfile entries are matched on host
        and port, so when the DSN relies on a passfile (its `passfile`, $PGPASSFILE or ~/.pgpass) the
        matching entries are copied, re-addressed to the proxy, into a private passfile that the
        new DSN names. No password is ever written into the DSN."""
        try:
            params = conninfo_to_dict(dsn)
        except psycopg.ProgrammingError:
            raise PlaybookError("the DSN given to the chaos proxy is malformed") from None
        host = str(params.get("host") or "")
        if "," in host or "," in str(params.get("port") or ""):
            raise PlaybookError("the chaos proxy stands in for one server, but the DSN names several")
        orig_host = host if host and not host.startswith("/") else "localhost"
        orig_port = str(params.get("port") or "5432")
        params.pop("hostaddr", None)
        params["host"] = self.listen_host
        params["port"] = str(self.port)
        if "password" not in params:
            given = params.get("passfile")
            passfile = self._proxy_passfile(orig_host, orig_port, str(given) if given else None)
            if passfile is not None:
                params["passfile"] = str(passfile)
        return make_conninfo("", **params)

    def _proxy_passfile(self, host: str, port: str, passfile: str | None) -> Path | None:
        source = Path(passfile or os.environ.get("PGPASSFILE") or Path.home() / ".pgpass").expanduser()
        try:
            lines = source.read_text().splitlines()
        except OSError:
            return None
        listen = self.listen_host.replace("\\", "\\\\").replace(":", "\\:")
        out = []
        for line in lines:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            fields = _pgpass_fields(line)
            if fields is None:
                continue
            if _pgpass_unescape(fields[0]) in ("*", host) and _pgpass_unescape(fields[1]) in ("*", port):
                out.append(":".join([listen, str(self.port), *fields[2:]]))
        if not out or self._tmpdir is None:
            return None
        self._passfiles += 1
        target = self._tmpdir / f"pgpass-{self._passfiles}"
        target.touch(mode=0o600)
        target.write_text("\n".join(out) + "\n")
        return target

    # -- the loop thread -----------------------------------------------------------------------
    async def _accept_loop(self) -> None:
        loop, listener = self._loop_now(), self._listener
        assert listener is not None
        while True:
            try:
                client, addr = await loop.sock_accept(listener)
            except OSError as exc:  # e.g. out of file descriptors: keep serving the open flows
                log.warning("chaos proxy: accept failed: %s", exc)
                await asyncio.sleep(0.05)
                continue
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            now = loop.time()
            flow = _Flow(
                self._next_id, client, f"{addr[0]}:{addr[1]}", created=now, last_active=now, last_payload=now
            )
            self._next_id += 1
            self._flows_total += 1
            self._flows[flow.id] = flow
            flow.task = loop.create_task(self._serve(flow))
            flow.task.add_done_callback(_log_unexpected)

    async def _set_refusing(self, on: bool) -> None:
        listener = self._listener
        if on == self._refusing or listener is None:
            return
        self._refusing = on
        loop = self._loop_now()
        if on:
            if self._accept_task is not None:
                self._accept_task.cancel()
                await asyncio.gather(self._accept_task, return_exceptions=True)
            loop.remove_reader(listener.fileno())
            # A shut-down listener keeps its port but no longer listens: the kernel RSTs each SYN.
            listener.shutdown(socket.SHUT_RD)
        else:
            listener.listen(BACKLOG)
            self._accept_task = loop.create_task(self._accept_loop())

    async def _connect_upstream(self) -> socket.socket | None:
        loop = self._loop_now()
        for family, addr in self._upstream_addrs:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await asyncio.wait_for(loop.sock_connect(sock, addr), CONNECT_TIMEOUT)
            except (OSError, asyncio.TimeoutError):
                sock.close()
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        return None

    async def _serve(self, flow: _Flow) -> None:
        """One client connection: connect upstream, pump both ways, end the way the peers ended."""
        loop = self._loop_now()
        try:
            upstream = await self._connect_upstream()
            if upstream is None:
                # What a client sees from a proxy whose backend is down: accepted, then reset.
                self._upstream_failures += 1
                flow.rst = True
                return
            flow.upstream = upstream
            lanes = (_Lane(flow.client, upstream, False), _Lane(upstream, flow.client, True))
            pending: set[asyncio.Task[str]] = {loop.create_task(self._pump(flow, lane)) for lane in lanes}
            flow.tasks.update(pending)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if any(t.result() == "error" for t in done) and not flow.dropped:
                    flow.rst = True  # a reset on one side is passed on as a reset to the other
                    return
                if any(t.result() == "forgotten" for t in done):
                    flow.forgotten = True
                    return
        finally:
            await self._teardown(flow)

    async def _pump(self, flow: _Flow, lane: _Lane) -> str:
        """Move one direction until EOF ("eof") or a socket error ("error")."""
        loop = self._loop_now()
        link = self._links[lane.to_client]
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        moved = 0
        try:
            while True:
                size = CHUNK if link.rate is None else max(512, min(CHUNK, link.rate // 20))
                n = await loop.sock_recv_into(lane.src, view[:size])
                if n == 0:
                    break
                flow.last_active = flow.last_payload = loop.time()
                if flow.dropped:
                    if self._reset_dropped_on_data and not lane.to_client:
                        self._dropped_resets += 1
                        return "forgotten"  # the hop answers the client with RST
                    continue  # the NAT forgot this flow: whatever arrives vanishes
                self._bytes[lane.to_client] += n
                if lane.to_client:
                    flow.bytes_to_client += n
                else:
                    flow.bytes_to_server += n
                if link.rate is not None:
                    await link.transmit(loop, n)
                    if flow.dropped:
                        continue
                delay = self._delay() if lane.to_client else 0.0
                if delay > 0.0 or not lane.idle.is_set():
                    await self._enqueue(flow, lane, bytes(view[:n]), delay)
                    if lane.failed:
                        return "error"
                else:
                    await loop.sock_sendall(lane.dst, view[:n])
                moved += 1
                if moved % YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # reads and writes that never block never yield by themselves
        except OSError:
            return "error"
        if flow.dropped:
            return "eof"  # not passed on: a FIN vanishes like every other packet of a forgotten flow
        await lane.idle.wait()
        if lane.failed:
            return "error"
        try:
            lane.dst.shutdown(socket.SHUT_WR)  # half-close, the other direction may still be talking
        except OSError:
            return "error"
        return "eof"

    def _delay(self) -> float:
        if self._latency == 0.0 and self._jitter == 0.0:
            return 0.0
        return max(0.0, self._latency + self._random.uniform(-self._jitter, self._jitter))

    async def _enqueue(self, flow: _Flow, lane: _Lane, data: bytes, delay: float) -> None:
        loop = self._loop_now()
        due = max(loop.time() + delay, lane.last_due)  # jitter never reorders the byte stream
        lane.last_due = due
        lane.queue.append((due, data))
        lane.queued += len(data)
        lane.idle.clear()
        lane.wake.set()
        if lane.writer is None:
            lane.writer = loop.create_task(self._write_delayed(flow, lane))
            flow.tasks.add(lane.writer)
        if lane.queued >= MAX_QUEUED:
            lane.room.clear()
            await lane.room.wait()

    async def _write_delayed(self, flow: _Flow, lane: _Lane) -> None:
        loop = self._loop_now()
        try:
            while True:
                if not lane.queue:
                    lane.idle.set()
                    lane.wake.clear()
                    await lane.wake.wait()
                    continue
                due, data = lane.queue[0]
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                lane.queue.popleft()
                if not flow.dropped:
                    await loop.sock_sendall(lane.dst, data)
                lane.queued -= len(data)
                if lane.queued < MAX_QUEUED // 2:
                    lane.room.set()
        except OSError:
            lane.failed = True
            lane.idle.set()
            lane.room.set()
            if not flow.dropped and not flow.closing and flow.task is not None:
                flow.rst = True
                flow.task.cancel()

    async def _teardown(self, flow: _Flow) -> None:
        flow.closing = True
        tasks = [t for t in flow.tasks if not t.done()]
        for task in tasks:
            task.cancel()
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self._close(flow.client, flow.rst or flow.forgotten)
            # A forgotten flow ends quietly towards the server (a FIN it logs nothing about): the real
            # hop tells it nothing, and keeping its socket open until stop() would only hold a slot.
            self._close(flow.upstream, flow.rst)
            self._flows.pop(flow.id, None)

    def _close(self, sock: socket.socket | None, rst: bool) -> None:
        if sock is None or sock.fileno() < 0:
            return
        loop = self._loop_now()
        # Unregister before closing: a reused descriptor number must not inherit a stale watcher.
        loop.remove_reader(sock.fileno())
        loop.remove_writer(sock.fileno())
        if rst:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
        sock.close()

    async def _end_flows(self, flows: list[_Flow], *, rst: bool) -> None:
        tasks = []
        for flow in flows:
            if flow.task is None:
                continue
            if not flow.closing:
                flow.rst = rst
                flow.task.cancel()
            tasks.append(flow.task)
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _watch_idle(self) -> None:
        """Track activity from TCP_INFO segment counters and apply the idle faults."""
        loop = self._loop_now()
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            now = loop.time()
            to_reset = []
            for flow in list(self._flows.values()):
                if flow.upstream is None or flow.closing or flow.dropped:
                    continue
                segs = (_segs_in(flow.client), _segs_in(flow.upstream))
                if segs != flow.segs:
                    flow.segs = segs
                    flow.last_active = now
                idle = now - flow.last_active
                quiet = now - flow.last_payload  # what an application-level hop measures
                reset_idle = idle if self._reset_counts_keepalives else quiet
                drop_idle = idle if self._drop_counts_keepalives else quiet
                if self._reset_idle is not None and reset_idle >= self._reset_idle:
                    to_reset.append(flow)
                elif self._drop_idle is not None and drop_idle >= self._drop_idle:
                    flow.dropped = True
                    self._drops += 1
            if to_reset:
                self._idle_resets += len(to_reset)
                await self._end_flows(to_reset, rst=True)


async def _as_coroutine(func: Callable[[], Awaitable[T]]) -> T:
    return await func()


def _log_unexpected(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("chaos proxy: a flow failed", exc_info=task.exception())


def _check_idle_limit(seconds: float | None) -> None:
    if seconds is not None and seconds <= 0:
        raise PlaybookError("an idle limit must be a positive number of seconds (or None to switch it off)")


def _pgpass_fields(line: str) -> list[str] | None:
    """Split a passfile line into its five fields, escapes kept; the password is the rest of the line."""
    fields: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(line):
        char = line[i]
        if char == "\\" and i + 1 < len(line):
            current.append(line[i : i + 2])
            i += 2
            continue
        if char == ":" and len(fields) < 4:
            fields.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    fields.append("".join(current))
    return fields if len(fields) == 5 else None


def _pgpass_unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)
