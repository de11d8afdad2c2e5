"""HTTP load for the service benchmarks: a bounded asyncio load generator (keep-alive HTTP/1.1, pre-built
requests) and the start-wait-warm-measure-stop cycle of a server run in its own process group."""

from __future__ import annotations

import asyncio
import os
import signal as signals_os
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Load:
    requests: int
    errors: int
    seconds: float
    latencies: list[float]
    cpu_s: float = 0.0           # CPU seconds the server's processes spent meanwhile (0: not measured)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_per_request_ms(self) -> float:
        return self.cpu_s / self.requests * 1e3 if self.requests else 0.0


def http_request(port: int, path: str, body: bytes) -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    return status, await reader.readexactly(int(headers["content-length"]))     # both servers send a length


async def load(port: int, requests: Sequence[bytes], connections: int, seconds: float) -> Load:
    """``connections`` keep-alive connections sending ``requests`` round robin for ``seconds``."""
    latencies: list[float] = []
    errors = [0]
    deadline = time.perf_counter() + seconds

    async def worker(i: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        j = i
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            writer.write(requests[j % len(requests)])
            try:
                status, _ = await read_response(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                errors[0] += 1
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                continue
            latencies.append(time.perf_counter() - start)
            errors[0] += status != 200
            j += connections
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(connections)))
    return Load(len(latencies), errors[0], time.perf_counter() - start, latencies)


def wait_http(url: str, body: bytes, proc: subprocess.Popen[bytes], timeout: float = 90) -> dict[str, Any]:
    """Poll until the server answers ``body`` with 200; its JSON answer."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {proc.returncode}")
        try:
            response = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=10)
            if response.status_code == 200:
                answer: dict[str, Any] = response.json()
                return answer
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url}: no answer within {timeout:.0f} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signals_os.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signals_os.SIGKILL)
            proc.wait()


def measure(cmd: list[str], env: dict[str, str], cwd: Path, port: int, path: str,
            bodies: Sequence[Sequence[bytes]], connections: int, seconds: float) -> list[tuple[Load, dict[str, Any]]]:
    """Start a server (``cmd`` in its own session), then per list of request bodies: wait until it answers the
    first with 200, load it 1 s to warm up, load it ``seconds``; stop it. The loads and first answers."""
    proc = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    out = []
    try:
        for group in bodies:
            answer = wait_http(f"http://127.0.0.1:{port}{path}", group[0], proc)
            requests = [http_request(port, path, b) for b in group]
            asyncio.run(load(port, requests, connections, 1.0))                  # warm-up
            out.append((asyncio.run(load(port, requests, connections, seconds)), answer))
    finally:
        stop(proc)
    return out


@dataclass(frozen=True)
class Server:
    """A server to load: its command line and environment, the port it listens on and the path it answers."""

    cmd: list[str]
    env: dict[str, str]
    port: int
    path: str


def merged(loads: Sequence[Load]) -> Load:
    """Several loads of one server as one: requests, errors and seconds summed, latencies pooled."""
    return Load(sum(x.requests for x in loads), sum(x.errors for x in loads), sum(x.seconds for x in loads),
                [t for x in loads for t in x.latencies], sum(x.cpu_s for x in loads))


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a process and its live descendants (a server and its workers)."""
    import psutil

    try:
        root = psutil.Process(pid)
        total = 0.0
        for proc in [root, *root.children(recursive=True)]:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total
    except psutil.NoSuchProcess:
        return 0.0


def measure_interleaved(servers: dict[str, Server], cwd: Path, bodies: dict[str, Sequence[Sequence[bytes]]],
                        connections: int, seconds: float, rounds: int) -> dict[str, list[tuple[Load, dict[str, Any]]]]:
    """Every server started at once (each in its own session; an idle one costs nothing); per group of request
    bodies (``bodies[name][g]``): wait until each answers the group's first with 200, warm each up 1 s, then
    ``rounds`` rounds of ``seconds / rounds`` per server, the order alternating round by round, so a change
    in the machine's load falls on every server alike, each with the CPU time its processes spent. Per
    server, per group: the merged load and the first answer."""
    procs = {name: subprocess.Popen(s.cmd, cwd=cwd, env={**os.environ, **s.env}, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True) for name, s in servers.items()}
    out: dict[str, list[tuple[Load, dict[str, Any]]]] = {name: [] for name in servers}
    try:
        groups = len(next(iter(bodies.values())))
        for g in range(groups):
            answers, requests = {}, {}
            for name, s in servers.items():
                answers[name] = wait_http(f"http://127.0.0.1:{s.port}{s.path}", bodies[name][g][0], procs[name])
                requests[name] = [http_request(s.port, s.path, b) for b in bodies[name][g]]
                asyncio.run(load(s.port, requests[name], connections, 1.0))                  # warm-up
            runs: dict[str, list[Load]] = {name: [] for name in servers}
            names = list(servers)
            for r in range(rounds):
                for name in names if r % 2 == 0 else names[::-1]:
                    before = cpu_seconds(procs[name].pid)
                    got = asyncio.run(load(servers[name].port, requests[name], connections, seconds / rounds))
                    got.cpu_s = cpu_seconds(procs[name].pid) - before
                    runs[name].append(got)
            for name in servers:
                out[name].append((merged(runs[name]), answers[name]))
    finally:
        for proc in procs.values():
            stop(proc)
    return out
