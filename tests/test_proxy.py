"""The chaos proxy against real sockets and the real lab PostgreSQL: every fault, as a client sees it."""

from __future__ import annotations

import argparse
import json
import random
import select
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from playbook.errors import PlaybookError
from playbook.lab import proxy_cli
from playbook.lab.proxy import ChaosProxy
from playbook.lab.server import LabServer
from playbook.lab.wait import wait_until

REPO = Path(__file__).resolve().parent.parent
SSL_REQUEST = struct.pack("!II", 8, 80877103)  # PostgreSQL answers b"N" (or b"S") to this


def proxy_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("chaos-proxy")]


@pytest.fixture
def proxy(lab: LabServer) -> Iterator[ChaosProxy]:
    chaos = ChaosProxy("127.0.0.1", lab.port)
    chaos.start()
    yield chaos
    chaos.stop()
    assert not chaos.running
    assert proxy_threads() == []


def connect(proxy: ChaosProxy, lab: LabServer, **options: Any) -> psycopg.Connection[Any]:
    return psycopg.connect(proxy.dsn_for(lab.dsn()), autocommit=True, connect_timeout=3, **options)


def flow_of(proxy: ChaosProxy, conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """The proxy's view of this connection, found by the client's local port."""
    with socket.fromfd(conn.fileno(), socket.AF_INET, socket.SOCK_STREAM) as dup:
        host, port = dup.getsockname()[:2]
    flows = [f for f in proxy.stats()["flows"] if f["client"] == f"{host}:{port}"]
    assert len(flows) == 1, proxy.stats()["flows"]
    return flows[0]


def backend_exists(lab: LabServer, pid: int) -> bool:
    with lab.admin() as admin:
        return admin.execute("select 1 from pg_stat_activity where pid = %s", [pid]).fetchone() is not None


def reply_arrives(conn: psycopg.Connection[Any], sql: bytes, within: float) -> bool:
    """Send a query at the protocol level and report whether any answer arrives in time, without hanging.

    The connection is closed afterwards: a query left in flight makes it unusable."""
    conn.pgconn.send_query(sql)
    conn.pgconn.flush()
    readable, _, _ = select.select([conn.fileno()], [], [], within)
    conn.close()
    return bool(readable)


def round_trip_ms(conn: psycopg.Connection[Any], count: int = 5) -> list[float]:
    times = []
    for _ in range(count):
        began = time.perf_counter()
        conn.execute("select 1").fetchone()
        times.append((time.perf_counter() - began) * 1000)
    return times


def fastest(action: Callable[[], object], tries: int = 3) -> float:
    """The fastest of a few timings: what the code costs, without the machine's stalls."""
    timings = []
    for _ in range(tries):
        began = time.perf_counter()
        action()
        timings.append(time.perf_counter() - began)
    return min(timings)


class Upstream:
    """A bare TCP server so RST versus FIN can be observed on both sides."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(3)
        self.port = int(self.listener.getsockname()[1])

    def accept(self) -> socket.socket:
        sock, _ = self.listener.accept()
        sock.settimeout(3)
        return sock

    def echo_one(self) -> threading.Thread:
        def run() -> None:
            with self.accept() as sock:
                while data := sock.recv(262144):
                    sock.sendall(data)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.listener.close()


def read_all(sock: socket.socket, into: bytearray) -> None:
    while data := sock.recv(262144):
        into.extend(data)


def client_to(proxy: ChaosProxy) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=3)
    return sock


# -- pass-through ---------------------------------------------------------------------------------
def test_passthrough_carries_sessions_and_counts_them(lab: LabServer, proxy: ChaosProxy) -> None:
    with connect(proxy, lab) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
        (length,) = conn.execute("select length(repeat('x', 5000000))").fetchone() or (0,)
        (big,) = conn.execute("select repeat('x', 5000000)").fetchone() or ("",)
        assert length == len(big) == 5_000_000
        pid = conn.info.backend_pid
        stats = proxy.stats()
        assert stats["open_flows"] == 1 and stats["flows_total"] == 1
        assert stats["bytes_to_client"] > 5_000_000 and stats["bytes_to_server"] > 0
        json.dumps(stats)  # the CLI and reports need it serialisable
    # the client's Terminate and FIN pass through: the server ends the session and the flow closes
    wait_until(
        lambda: proxy.stats()["open_flows"] == 0, timeout=3, what="the flow to close after the client left"
    )
    wait_until(lambda: not backend_exists(lab, pid), timeout=3, what="the backend to exit")


def test_dsn_for_points_at_the_proxy_and_keeps_passwords_out(lab: LabServer, proxy: ChaosProxy) -> None:
    params = conninfo_to_dict(proxy.dsn_for(lab.dsn() + " hostaddr=127.0.0.1"))
    assert params["host"] == "127.0.0.1" and params["port"] == str(proxy.port)
    assert "hostaddr" not in params and "password" not in params
    # the lab's passfile names the server's port; the proxy's copy names its own
    passfile = Path(str(params["passfile"]))
    assert passfile != lab.passfile
    assert passfile.read_text().startswith(f"127.0.0.1:{proxy.port}:")
    assert passfile.stat().st_mode & 0o077 == 0
    explicit = conninfo_to_dict(proxy.dsn_for("host=127.0.0.1 port=1 user=u password=secret dbname=d"))
    assert explicit["password"] == "secret" and "passfile" not in explicit
    with pytest.raises(PlaybookError, match="several"):
        proxy.dsn_for("host=a,b port=1,2")
    with pytest.raises(PlaybookError, match="malformed"):
        proxy.dsn_for("host=127.0.0.1 port")


def test_bytes_arrive_intact_and_in_order_even_with_jitter(upstream: Upstream) -> None:
    payload = random.Random(7).randbytes(8 * 1024 * 1024)
    with ChaosProxy("127.0.0.1", upstream.port) as chaos:
        for latency, jitter in ((0.0, 0.0), (3.0, 3.0)):
            chaos.set_latency(latency, jitter)
            echo = upstream.echo_one()
            with client_to(chaos) as sock:
                received = bytearray()
                reader = threading.Thread(target=read_all, args=(sock, received))
                reader.start()
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)  # the FIN must reach the echo server and come back
                reader.join(10)
                echo.join(10)
            assert bytes(received) == payload, f"stream corrupted at latency {latency} ms ± {jitter}"


def test_half_close_passes_as_fin(upstream: Upstream) -> None:
    with (
        ChaosProxy("127.0.0.1", upstream.port) as chaos,
        client_to(chaos) as client,
        upstream.accept() as server,
    ):
        client.sendall(b"last words")
        client.shutdown(socket.SHUT_WR)
        assert server.recv(100) == b"last words"
        assert server.recv(100) == b""  # EOF, not a reset
        server.sendall(b"reply after your FIN")
        server.close()
        assert client.recv(100) == b"reply after your FIN"
        assert client.recv(100) == b""
        wait_until(lambda: chaos.stats()["open_flows"] == 0, timeout=3, what="the half-closed flow to end")


# -- reset ----------------------------------------------------------------------------------------
def test_reset_all_sends_rst_both_ways(upstream: Upstream) -> None:
    with (
        ChaosProxy("127.0.0.1", upstream.port) as chaos,
        client_to(chaos) as client,
        upstream.accept() as server,
    ):
        client.sendall(b"ping")
        assert server.recv(4) == b"ping"
        chaos.reset_all()
        with pytest.raises(ConnectionResetError):
            client.recv(1)
        with pytest.raises(ConnectionResetError):
            server.recv(1)
        stats = chaos.stats()
        assert stats["resets"] == 1 and stats["open_flows"] == 0


def test_reset_all_breaks_every_session(lab: LabServer, proxy: ChaosProxy) -> None:
    with connect(proxy, lab) as one, connect(proxy, lab) as two:
        pids = [one.info.backend_pid, two.info.backend_pid]
        proxy.reset_all()
        for conn in (one, two):
            with pytest.raises(psycopg.OperationalError):
                conn.execute("select 1")
        wait_until(
            lambda: not any(backend_exists(lab, p) for p in pids), timeout=3, what="the backends to go"
        )
        with connect(proxy, lab) as fresh:  # the proxy itself carries on
            assert fresh.execute("select 1").fetchone() == (1,)
    assert proxy.stats()["resets"] == 2


def test_reset_idle_after_resets_only_idle_flows(lab: LabServer, proxy: ChaosProxy) -> None:
    with connect(proxy, lab) as idle, connect(proxy, lab) as busy:
        began = time.monotonic()
        proxy.reset_idle_after(2.0)  # the busy flow would need a 1.8 s stall of this test to look idle

        def busy_and_reset() -> bool:
            busy.execute("select 1")  # keeps this flow active while the other idles
            return bool(proxy.stats()["idle_resets"] >= 1)

        wait_until(busy_and_reset, timeout=15, what="the idle flow to be reset", poll=0.2)
        assert time.monotonic() - began >= 1.9
        with pytest.raises(psycopg.OperationalError):
            idle.execute("select 1")
        assert busy.execute("select 1").fetchone() == (1,)
        assert proxy.stats()["idle_resets"] == 1


# -- drop -----------------------------------------------------------------------------------------
def test_drop_idle_after_leaves_both_ends_hanging(lab: LabServer, proxy: ChaosProxy) -> None:
    with connect(proxy, lab, keepalives=0) as conn:
        pid = conn.info.backend_pid
        proxy.drop_idle_after(1.0)
        wait_until(lambda: proxy.stats()["drops"] >= 1, timeout=4, what="the idle flow to be dropped")
        assert flow_of(proxy, conn)["dropped"]
        # no FIN and no RST: the server keeps an idle session, the client gets no answer
        assert not reply_arrives(conn, b"select 'lost in the NAT'", within=1.5)
        with lab.admin() as admin:
            row = admin.execute("select state, query from pg_stat_activity where pid = %s", [pid]).fetchone()
        assert row is not None and row[0] == "idle" and "lost in the NAT" not in row[1]
        assert proxy.stats()["dropped_flows_open"] == 1
    # stop() is what finally closes a dropped flow; the fixture checks that it does


def test_keepalives_keep_a_flow_alive_through_drop_idle(lab: LabServer, proxy: ChaosProxy) -> None:
    keepalive = {"keepalives": 1, "keepalives_idle": 1, "keepalives_interval": 1, "keepalives_count": 3}
    with connect(proxy, lab, **keepalive) as kept, connect(proxy, lab, keepalives=0) as plain:
        sent_before = flow_of(proxy, kept)["bytes_to_server"]
        began = time.monotonic()
        proxy.drop_idle_after(3.0)
        wait_until(
            lambda: flow_of(proxy, plain)["dropped"], timeout=6, what="the flow without keepalives to drop"
        )
        most_idle = 0.0
        while time.monotonic() - began < 6.5:  # the idle period under test, sampled every 0.2 s
            flow = flow_of(proxy, kept)
            assert not flow["dropped"], f"dropped after {time.monotonic() - began:.1f} s despite keepalives"
            most_idle = max(most_idle, flow["idle_s"])
            time.sleep(0.2)
        # only keepalive probes crossed the path: no payload was sent in the idle period
        assert flow_of(proxy, kept)["bytes_to_server"] == sent_before
        assert most_idle < 2.5
        assert kept.execute("select 1").fetchone() == (1,)
        assert not reply_arrives(plain, b"select 1", within=1.0)


# -- refuse, upstream down ------------------------------------------------------------------------
def test_refuse_new_refuses_connections_but_keeps_open_ones(lab: LabServer, proxy: ChaosProxy) -> None:
    with connect(proxy, lab) as existing:
        proxy.refuse_new()
        with pytest.raises(psycopg.OperationalError, match="refused"):
            connect(proxy, lab)
        with socket.socket() as thief, pytest.raises(OSError):  # the port stays ours while refusing
            thief.bind(("127.0.0.1", proxy.port))
        assert existing.execute("select 1").fetchone() == (1,)
        assert proxy.stats()["faults"]["refuse_new"] is True
        proxy.refuse_new(False)
        with connect(proxy, lab) as again:
            assert again.execute("select 1").fetchone() == (1,)


def test_upstream_down_resets_the_client(upstream: Upstream) -> None:
    port = upstream.port
    upstream.listener.close()  # nothing listens there any more
    with ChaosProxy("127.0.0.1", port) as chaos:
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(f"host=127.0.0.1 port={chaos.port} user=x dbname=x connect_timeout=3")
        wait_until(
            lambda: chaos.stats()["upstream_failures"] == 1, timeout=3, what="the failure to be counted"
        )
        assert chaos.stats()["open_flows"] == 0


# -- latency and bandwidth ------------------------------------------------------------------------
def test_latency_and_jitter_are_added_to_round_trips(lab: LabServer, proxy: ChaosProxy) -> None:
    with connect(proxy, lab) as conn:
        base = statistics.median(round_trip_ms(conn))
        proxy.set_latency(100)
        slow = statistics.median(round_trip_ms(conn))
        assert base + 90 <= slow <= base + 250, (base, slow)
        proxy.set_latency(50, jitter_ms=40)
        jittered = round_trip_ms(conn, 8)
        assert all(base + 5 <= t for t in jittered), jittered  # latency is never taken away
        assert sum(t <= base + 200 for t in jittered) >= 6, jittered  # a loaded machine adds a stall or two
        assert max(jittered) - min(jittered) > 10, jittered
        proxy.set_latency(0)
        assert statistics.median(round_trip_ms(conn)) < base + 30


def test_bandwidth_cap_limits_both_directions(lab: LabServer, proxy: ChaosProxy) -> None:
    with connect(proxy, lab) as conn:
        uncapped = fastest(lambda: conn.execute("select repeat('x', 1000000)").fetchone())
        proxy.set_bandwidth(1_000_000)
        began = time.perf_counter()
        conn.execute("select repeat('x', 1000000)").fetchone()
        down = time.perf_counter() - began
        began = time.perf_counter()
        conn.execute("select length(%s)", ["y" * 1_000_000]).fetchone()
        up = time.perf_counter() - began
        assert uncapped < 0.5
        # the cap makes it at least this slow; a loaded machine may make it slower still
        assert 0.85 <= down <= 4.0, down
        assert 0.85 <= up <= 4.0, up
        proxy.set_bandwidth(None)
        assert fastest(lambda: conn.execute("select repeat('x', 1000000)").fetchone()) < 0.5


def test_passthrough_clears_every_fault(lab: LabServer, proxy: ChaosProxy) -> None:
    proxy.set_latency(200, 10)
    proxy.refuse_new()
    proxy.reset_idle_after(30, count_keepalives=False)
    proxy.drop_idle_after(30, count_keepalives=False)
    proxy.set_bandwidth(1000)
    assert proxy.stats()["faults"]["bandwidth_bytes_per_s"] == 1000
    proxy.passthrough()
    assert proxy.stats()["faults"] == {
        "latency_ms": 0.0,
        "jitter_ms": 0.0,
        "refuse_new": False,
        "reset_idle_after_s": None,
        "reset_idle_counts_keepalives": True,
        "drop_idle_after_s": None,
        "drop_idle_counts_keepalives": True,
        "bandwidth_bytes_per_s": None,
    }
    with connect(proxy, lab) as conn:
        assert statistics.median(round_trip_ms(conn)) < 100


# -- life cycle and input -------------------------------------------------------------------------
def test_stop_closes_everything(lab: LabServer) -> None:
    chaos = ChaosProxy("127.0.0.1", lab.port)
    chaos.start()
    dsn = chaos.dsn_for(lab.dsn())
    passfile = Path(str(conninfo_to_dict(dsn)["passfile"]))
    with (
        psycopg.connect(dsn, autocommit=True, keepalives=0) as live,
        psycopg.connect(dsn, keepalives=0) as gone,
    ):
        pids = [live.info.backend_pid, gone.info.backend_pid]
        chaos.drop_idle_after(0.3)
        wait_until(lambda: chaos.stats()["drops"] == 2, timeout=3, what="both flows to be dropped")
        chaos.stop()
        assert proxy_threads() == [] and not passfile.exists()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", chaos.port), timeout=1)
        # even dropped flows are closed, so the server sees the sessions end
        wait_until(
            lambda: not any(backend_exists(lab, p) for p in pids), timeout=3, what="the backends to exit"
        )
        with pytest.raises(psycopg.OperationalError):
            live.execute("select 1")
    with pytest.raises(PlaybookError, match="not running"):
        chaos.set_latency(10)
    chaos.stop()  # twice is harmless


def test_controls_are_thread_safe(proxy: ChaosProxy) -> None:
    errors: list[BaseException] = []

    def hammer(seed: int) -> None:
        try:
            for i in range(50):
                proxy.set_latency(seed + i % 3)
                proxy.stats()
        except BaseException as exc:  # collected: an assertion in a thread would be lost
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert proxy.stats()["faults"]["latency_ms"] in {float(n + i) for n in range(8) for i in range(3)}


def test_bad_values_are_refused_in_one_sentence(proxy: ChaosProxy) -> None:
    with pytest.raises(PlaybookError, match="latency"):
        proxy.set_latency(-1)
    with pytest.raises(PlaybookError, match="idle limit"):
        proxy.reset_idle_after(0)
    with pytest.raises(PlaybookError, match="idle limit"):
        proxy.drop_idle_after(-3)
    with pytest.raises(PlaybookError, match="bandwidth"):
        proxy.set_bandwidth(0)
    with pytest.raises(PlaybookError, match="port"):
        ChaosProxy("127.0.0.1", 70000)
    with pytest.raises(PlaybookError, match="cannot listen"):
        ChaosProxy("127.0.0.1", 5432, listen_port=proxy.port).start()
    assert proxy.stats()["faults"]["latency_ms"] == 0.0  # nothing half-applied


# -- the CLI --------------------------------------------------------------------------------------
def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    proxy_cli.add_arguments(parser)
    return proxy_cli.run(parser.parse_args(list(argv)))


def test_cli_runs_and_steers_a_proxy_in_another_process(
    lab: LabServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    process = subprocess.Popen(
        [sys.executable, "-m", "playbook.lab.proxy_cli", "start", "--upstream", f"127.0.0.1:{lab.port}"]
        + ["--state-dir", str(state)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: (state / "proxy.json").exists(), timeout=10, what="the proxy's state file")
        assert (state / "proxy.json").stat().st_mode & 0o077 == 0
        port = int(json.loads((state / "proxy.json").read_text())["listen"].rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
            sock.sendall(SSL_REQUEST)
            assert sock.recv(1) in (b"N", b"S")  # PostgreSQL itself answered through the proxy

        assert cli("set", "--state-dir", str(state), "--refuse", "--latency", "20", "--jitter", "5") == 0
        faults = json.loads(capsys.readouterr().out)
        assert faults["refuse_new"] is True and faults["latency_ms"] == 20.0 and faults["jitter_ms"] == 5.0
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=3)
        assert (
            cli("set", "--state-dir", str(state), "--passthrough", "--drop-idle", "30", "--bandwidth", "2M")
            == 0
        )
        faults = json.loads(capsys.readouterr().out)
        assert faults["refuse_new"] is False and faults["latency_ms"] == 0.0
        assert faults["drop_idle_after_s"] == 30.0 and faults["bandwidth_bytes_per_s"] == 2_000_000
        assert faults["drop_idle_counts_keepalives"] is True
        assert cli("set", "--state-dir", str(state), "--reset-idle", "40", "--payload-only") == 0
        faults = json.loads(capsys.readouterr().out)  # an application-level hop: only payload counts
        assert faults["reset_idle_after_s"] == 40.0 and faults["reset_idle_counts_keepalives"] is False

        with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
            wait_until(
                lambda: (
                    (cli("status", "--state-dir", str(state)) == 0)
                    and json.loads(capsys.readouterr().out)["open_flows"] == 1
                ),
                timeout=3,
                what="the open flow in status",
            )
            assert cli("reset-all", "--state-dir", str(state)) == 0
            assert capsys.readouterr().out.strip() == "reset 1 flow(s)"
            with pytest.raises(ConnectionResetError):
                sock.recv(1)

        assert cli("stop", "--state-dir", str(state)) == 0
        assert process.wait(10) == 0
        assert not (state / "proxy.json").exists()
        with pytest.raises(PlaybookError, match="no chaos proxy is running"):
            cli("status", "--state-dir", str(state))
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(10)
        process.communicate()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["set", "--latency", "soon"], "--latency takes zero or more milliseconds"),
        (["set", "--jitter", "5"], "--jitter goes with --latency"),
        (["set", "--bandwidth", "fast"], "--bandwidth takes bytes per second"),
        (["set", "--drop-idle", "-1"], "--drop-idle takes zero or more seconds"),
        (["set"], "nothing to set"),
        (["set", "--payload-only"], "--payload-only goes with --reset-idle or --drop-idle"),
        (["start", "--upstream", "nowhere"], "--upstream takes HOST:PORT"),
        (["start", "--upstream", "127.0.0.1:99999"], "--upstream takes a port number"),
        (
            ["start", "--upstream", "127.0.0.1:5432", "--listen-port", "x"],
            "--listen-port takes a port number",
        ),
        (["status"], "no chaos proxy is running"),
        (["reset-all"], "no chaos proxy is running"),
    ],
)
def test_cli_bad_input_is_one_sentence(tmp_path: Path, argv: list[str], message: str) -> None:
    with pytest.raises(PlaybookError, match=message) as caught:
        cli(*argv, "--state-dir", str(tmp_path))
    assert "\n" not in str(caught.value)


def test_cli_reports_a_stale_state_file(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    (tmp_path / "proxy.json").write_text(json.dumps({"control_port": dead_port, "token": "x"}))
    with pytest.raises(PlaybookError, match="does not answer"):
        cli("status", "--state-dir", str(tmp_path))
