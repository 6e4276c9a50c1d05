"""`playbook lab proxy …`: run the chaos proxy in the foreground and steer it from other shells.

`start` runs a ChaosProxy until Ctrl-C, SIGTERM or `playbook lab proxy stop`, and serves a tiny
control endpoint on 127.0.0.1: one JSON object per line in, one per line out,
`{"token": …, "op": "status" | "set" | "reset_all" | "stop", "args": {…}}` ->
`{"ok": true, "stats": {…}}` or `{"ok": false, "error": "one sentence"}`. Its port and a random
token sit in `<state-dir>/proxy.json` (mode 0600), so only whoever can read that file steers it.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import json
import os
import re
import secrets
import signal
import socket
import socketserver
import sys
import threading
import time
from pathlib import Path
from typing import Any

from playbook.errors import PlaybookError
from playbook.lab.proxy import ChaosProxy

STATE_NAME = "proxy.json"
CONTROL_TIMEOUT = 10.0
MAX_REQUEST = 64 * 1024
OFF = ("off", "none", "0")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `proxy` sub-commands; values are parsed in run() so bad ones get one sentence and exit 3."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where the running proxy leaves its control address (default: the lab's)",
    )
    sub = parser.add_subparsers(dest="proxy_command", metavar="COMMAND", required=True)

    start = sub.add_parser(
        "start", parents=[common], help="run the proxy in the foreground until Ctrl-C or stop"
    )
    start.add_argument(
        "--upstream", metavar="HOST:PORT", help="the server to forward to (default: the lab server)"
    )
    start.add_argument(
        "--listen-port", metavar="N", default="0", help="port on 127.0.0.1 (default: any free one)"
    )

    sub.add_parser("status", parents=[common], help="faults, counters and open flows as JSON")

    fault = sub.add_parser("set", parents=[common], help="switch faults on or off")
    fault.add_argument("--passthrough", action="store_true", help="clear every fault first")
    fault.add_argument("--latency", metavar="MS", help="hold data to the client back this long (0: off)")
    fault.add_argument("--jitter", metavar="MS", help="± this much, uniformly, with --latency")
    refuse = fault.add_mutually_exclusive_group()
    refuse.add_argument(
        "--refuse", dest="refuse", action="store_true", default=None, help="refuse new connections"
    )
    refuse.add_argument("--accept", dest="refuse", action="store_false", help="accept new connections again")
    fault.add_argument("--reset-idle", metavar="S", help="RST flows idle this many seconds (off: never)")
    fault.add_argument(
        "--drop-idle", metavar="S", help="silently drop flows idle this many seconds (off: never)"
    )
    fault.add_argument(
        "--payload-only",
        action="store_true",
        help="--reset-idle/--drop-idle count only relayed data, not TCP keepalives (an application-level "
        "proxy such as HAProxy's timeout client); default: any segment counts (a NAT or load balancer)",
    )
    fault.add_argument(
        "--bandwidth", metavar="BYTES", help="bytes per second each way, k/M/G allowed (off: no cap)"
    )

    sub.add_parser("reset-all", parents=[common], help="reset every open flow now (RST both ways)")
    sub.add_parser("stop", parents=[common], help="stop the running proxy")


def run(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir) if getattr(args, "state_dir", None) else _default_state_dir()
    command = args.proxy_command
    if command == "start":
        return _start(args, state_dir)
    if command == "status":
        print(json.dumps(request(state_dir, "status"), indent=2))
        return 0
    if command == "set":
        settings = _settings_from(args)
        print(json.dumps(request(state_dir, "set", settings)["faults"]))
        return 0
    if command == "reset-all":
        before = request(state_dir, "status")["open_flows"]
        request(state_dir, "reset_all")
        print(f"reset {before} flow(s)")
        return 0
    if command == "stop":
        request(state_dir, "stop")
        state_file = state_dir / STATE_NAME
        end = time.monotonic() + CONTROL_TIMEOUT
        while state_file.exists() and time.monotonic() < end:
            time.sleep(0.05)  # the proxy removes its state file as the last thing it does
        print("chaos proxy stopped")
        return 0
    raise PlaybookError(f"unknown proxy command {command!r}")


# -- the foreground proxy ----------------------------------------------------------------------
def _start(args: argparse.Namespace, state_dir: Path) -> int:
    host, port = _upstream(args.upstream)
    listen_port = _parse_port(args.listen_port, "--listen-port", allow_zero=True)
    state_file = state_dir / STATE_NAME
    if state_file.exists() and _answers(state_dir):
        raise PlaybookError(
            f"a chaos proxy is already running with its state in {state_file}; "
            "stop it first with `playbook lab proxy stop`"
        )
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PlaybookError(f"cannot create the state directory {state_dir}: {exc.strerror}") from None

    proxy = ChaosProxy(host, port, listen_port=listen_port)
    proxy.start()
    stop = threading.Event()
    token = secrets.token_hex(16)
    try:
        control = _ControlServer(proxy, token, stop)
    except BaseException:
        proxy.stop()
        raise
    control_thread = threading.Thread(target=control.serve_forever, name="chaos-proxy-control", daemon=True)
    control_thread.start()
    previous = _on_sigterm(stop)
    try:
        state = {
            "pid": os.getpid(),
            "listen": f"127.0.0.1:{proxy.port}",
            "upstream": f"{host}:{port}",
            "control_port": control.server_address[1],
            "token": token,
        }
        _write_private(state_file, json.dumps(state))
        print(
            f"chaos proxy on 127.0.0.1:{proxy.port} -> {host}:{port}; "
            "steer it with `playbook lab proxy set …`, "
            "end it with Ctrl-C or `playbook lab proxy stop`",
            flush=True,
        )
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        control.shutdown()
        control.server_close()
        proxy.stop()
        with contextlib.suppress(OSError, ValueError):
            if json.loads(state_file.read_text()).get("token") == token:
                state_file.unlink()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _answers(state_dir: Path) -> bool:
    try:
        request(state_dir, "status")
    except PlaybookError:
        return False
    return True


def _on_sigterm(stop: threading.Event) -> Any:
    """Let SIGTERM end the proxy cleanly; only possible from the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())


class _ControlServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, proxy: ChaosProxy, token: str, stop: threading.Event) -> None:
        self.proxy = proxy
        self.token = token
        self.stop = stop
        super().__init__(("127.0.0.1", 0), _ControlHandler)


class _ControlHandler(socketserver.StreamRequestHandler):
    timeout = CONTROL_TIMEOUT

    def handle(self) -> None:
        server = self.server
        assert isinstance(server, _ControlServer)
        try:
            message = json.loads(self.rfile.readline(MAX_REQUEST))
            if not isinstance(message, dict) or not hmac.compare_digest(
                str(message.get("token", "")), server.token
            ):
                raise PlaybookError("the control request carries no valid token")
            reply: dict[str, Any] = {"ok": True, "stats": _perform(server, message)}
        except PlaybookError as exc:
            reply = {"ok": False, "error": str(exc)}
        except (ValueError, OSError) as exc:
            reply = {"ok": False, "error": f"bad control request: {exc}"}
        with contextlib.suppress(OSError):
            self.wfile.write(json.dumps(reply).encode() + b"\n")


def _perform(server: _ControlServer, message: dict[str, Any]) -> dict[str, Any]:
    proxy, op, settings = server.proxy, message.get("op"), message.get("args") or {}
    if op == "set":
        apply_settings(proxy, settings)
    elif op == "reset_all":
        proxy.reset_all()
    elif op == "stop":
        server.stop.set()
    elif op != "status":
        raise PlaybookError(f"unknown control operation {op!r}")
    return proxy.stats()


def apply_settings(proxy: ChaosProxy, settings: dict[str, Any]) -> None:
    """Apply `set` settings in a fixed order: passthrough first, so it can be combined with new faults."""
    if settings.get("passthrough"):
        proxy.passthrough()
    if "latency_ms" in settings:
        proxy.set_latency(float(settings["latency_ms"]), float(settings.get("jitter_ms") or 0.0))
    if "refuse" in settings:
        proxy.refuse_new(bool(settings["refuse"]))
    counts = bool(settings.get("count_keepalives", True))
    if "reset_idle_s" in settings:
        proxy.reset_idle_after(_optional_float(settings["reset_idle_s"]), count_keepalives=counts)
    if "drop_idle_s" in settings:
        proxy.drop_idle_after(_optional_float(settings["drop_idle_s"]), count_keepalives=counts)
    if "bandwidth" in settings:
        value = settings["bandwidth"]
        proxy.set_bandwidth(None if value is None else int(value))


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


# -- the client side ---------------------------------------------------------------------------
def request(state_dir: Path, op: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    """Send one control request to the proxy whose state is in `state_dir`; returns its stats."""
    state_file = state_dir / STATE_NAME
    try:
        state = json.loads(state_file.read_text())
        address = ("127.0.0.1", int(state["control_port"]))
        token = str(state["token"])
    except FileNotFoundError:
        raise PlaybookError(
            f"no chaos proxy is running (no {state_file}); start one with `playbook lab proxy start`"
        ) from None
    except (OSError, ValueError, KeyError, TypeError):
        raise PlaybookError(f"the chaos proxy state file {state_file} is unreadable") from None
    payload = json.dumps({"token": token, "op": op, "args": args or {}}).encode() + b"\n"
    try:
        with socket.create_connection(address, timeout=CONTROL_TIMEOUT) as sock:
            sock.sendall(payload)
            reply = json.loads(sock.makefile("rb").readline(16 * MAX_REQUEST))
    except (OSError, ValueError):
        raise PlaybookError(
            f"the chaos proxy named in {state_file} does not answer; it has probably exited"
        ) from None
    if not reply.get("ok"):
        raise PlaybookError(str(reply.get("error") or "the chaos proxy refused the request"))
    stats: dict[str, Any] = reply["stats"]
    return stats


def _settings_from(args: argparse.Namespace) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    if args.passthrough:
        settings["passthrough"] = True
    if args.latency is not None:
        settings["latency_ms"] = _parse_number(args.latency, "--latency", "milliseconds")
        settings["jitter_ms"] = 0.0
    if args.jitter is not None:
        if args.latency is None:
            raise PlaybookError("--jitter goes with --latency, e.g. --latency 50 --jitter 10")
        settings["jitter_ms"] = _parse_number(args.jitter, "--jitter", "milliseconds")
    if args.refuse is not None:
        settings["refuse"] = args.refuse
    if args.reset_idle is not None:
        settings["reset_idle_s"] = _parse_limit(args.reset_idle, "--reset-idle")
    if args.drop_idle is not None:
        settings["drop_idle_s"] = _parse_limit(args.drop_idle, "--drop-idle")
    if args.payload_only:
        if args.reset_idle is None and args.drop_idle is None:
            raise PlaybookError(
                "--payload-only goes with --reset-idle or --drop-idle, e.g. --reset-idle 30 --payload-only"
            )
        settings["count_keepalives"] = False
    if args.bandwidth is not None:
        settings["bandwidth"] = _parse_bandwidth(args.bandwidth)
    if not settings:
        raise PlaybookError(
            "nothing to set; give --passthrough, --latency, --refuse/--accept, --reset-idle, --drop-idle "
            "or --bandwidth"
        )
    return settings


def _parse_number(value: str, flag: str, unit: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number >= 0 or number == float("inf"):
        raise PlaybookError(f"{flag} takes zero or more {unit}, not {value!r}")
    return number


def _parse_limit(value: str, flag: str) -> float | None:
    if value.strip().lower() in OFF:
        return None
    seconds = _parse_number(value, flag, "seconds (or off)")
    return seconds if seconds > 0 else None


def _parse_bandwidth(value: str) -> int | None:
    text = value.strip()
    if text.lower() in OFF:
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kKmMgG]?)", text)
    if not match:
        raise PlaybookError(f"--bandwidth takes bytes per second such as 500000, 500k or 2M, not {value!r}")
    factor = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}[match.group(2).lower()]
    rate = int(float(match.group(1)) * factor)
    if rate <= 0:
        raise PlaybookError("--bandwidth must be at least 1 byte per second (or off)")
    return rate


def _parse_port(value: str, flag: str, *, allow_zero: bool = False) -> int:
    low = 0 if allow_zero else 1
    if not value.isdigit() or not low <= int(value) <= 65535:
        raise PlaybookError(f"{flag} takes a port number from {low} to 65535, not {value!r}")
    return int(value)


def _upstream(value: str | None) -> tuple[str, int]:
    if value is None:
        from playbook.extras import missing
        from playbook.lab.server import LabServer, default_lab_dir

        if missing("lab"):  # no lab server can exist: its default upstream is no default here
            raise PlaybookError("--upstream HOST:PORT is needed: the lab server comes with the [lab] extra")
        return "127.0.0.1", LabServer(default_lab_dir()).port
    match = re.fullmatch(r"\[([^\]]+)\]:(\S+)|([^:\s]+):(\S+)", value.strip())
    if not match:
        raise PlaybookError(f"--upstream takes HOST:PORT such as 127.0.0.1:5432, not {value!r}")
    host = match.group(1) or match.group(3)
    return host, _parse_port(match.group(2) or match.group(4), "--upstream")


def _default_state_dir() -> Path:
    from playbook.lab.server import default_lab_dir

    return default_lab_dir() / "proxy"


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (`python -m playbook.lab.proxy_cli …`), same behaviour as the CLI."""
    parser = argparse.ArgumentParser(prog="playbook lab proxy", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except PlaybookError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
