"""How much the inference gateway adds to a call, against a direct call and a peer proxy.

One run, one mock model server (tests/gateway/upstream.py in its own process: fixed 20 ms before
every answer, SSE chunks 20 ms apart), three ways in:
- direct: the client calls the mock server;
- gateway: `manage.py run_gateway` (1 worker) with key checks on: an `iek_` key from the
  console's own action, checked against the in-process cache, plus the limit check (the key has
  a requests-per-minute limit far above the load, so every call is counted; the counts go to
  Redis every 50 ms, see gateway/limits.py);
- peer: LiteLLM's proxy (PyPI `litellm[proxy]`, in its own venv: --peer-venv) with a master key
  (see README: virtual keys need LiteLLM's Prisma database), else nginx with
  `proxy_buffering off` when nginx is installed, else none.

Measured, interleaved round by round so a noisy moment hits all three:
1. latency: sequential keep-alive calls of POST /v1/chat/completions (one client, http.client),
   p50/p99 and what each proxy adds to the direct call's p50/p99;
2. SSE: time to the first `data:` chunk of a streamed chat completion, added p50/p99;
3. throughput: a load generator process (aiohttp, --concurrency connections) for --seconds;
   requests/s and requests per CPU-second of the proxy's processes (utime+stime from /proc):
   "requests per second per core".

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test REDIS_URL=redis://127.0.0.1:6379/15 \\
        .venv/bin/python bench/gateway.py [--peer-venv /tmp/bench-peer-venv] [--calls 400]

DATABASE_URL names the PostgreSQL server (its database is never touched: bench_gateway is
created and dropped); REDIS_URL the Redis database (keys under `bench-gw:` are deleted).
A benchmark, not a test: it prints figures and exits 0 whatever they are.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import benchdb  # bench/benchdb.py: this folder is on sys.path when a bench runs

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB = "bench_gateway"
DEFAULT_SERVER_URL = "postgres://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
REDIS_PREFIX = "bench-gw:"
LATENCY = 0.020
CHAT = {"model": "mock", "messages": [{"role": "user", "content": "hi"}]}
PEER_KEY = "sk-bench-peer-master-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(port: int, path: str, timeout: float = 60.0, headers: dict | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", path, headers=headers or {})
            if connection.getresponse().status < 500:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"nothing answered on 127.0.0.1:{port}{path} within {timeout}s")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and all its descendants (LiteLLM and uvicorn fork workers)."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        pids.extend(int(child) for child in children)
    return total


@dataclass
class Target:
    name: str
    port: int
    chat_path: str
    headers: dict[str, str]
    pid: int | None = None  # whose CPU counts as the proxy's (None: direct)
    latencies: list[float] = field(default_factory=list)
    ttfc: list[float] = field(default_factory=list)

    connection: http.client.HTTPConnection | None = None

    def _open(self, body: bytes) -> tuple[http.client.HTTPResponse, float]:
        """Send the request on the kept-alive connection; a connection the server closed while
        idle (uvicorn's keep-alive timeout is 5 s) is reopened and the call repeated, untimed."""
        for attempt in range(2):
            if self.connection is None:
                self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            started = time.perf_counter()
            try:
                self.connection.request("POST", self.chat_path, body=body, headers=self.headers)
                return self.connection.getresponse(), started
            except (http.client.RemoteDisconnected, ConnectionError):
                self.connection.close()
                self.connection = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def call(self, body: bytes) -> float:
        response, started = self._open(body)
        data = response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"{self.name}: {response.status} {data[:300]!r}")
        return elapsed

    def first_chunk(self, body: bytes) -> float:
        response, started = self._open(body)
        if response.status != 200:
            raise RuntimeError(f"{self.name}: {response.status} {response.read()[:300]!r}")
        first = None
        while True:
            line = response.readline()
            if not line:
                break
            if first is None and line.startswith(b"data:"):
                first = time.perf_counter() - started
        if first is None:
            raise RuntimeError(f"{self.name}: no SSE data")
        return first


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


# --- the processes ---------------------------------------------------------------------------
def serve_upstream(port: int) -> None:
    sys.path.insert(0, str(ROOT))
    from aiohttp import web

    from tests.gateway.upstream import MockUpstream

    latency = float(os.environ.get("BENCH_UPSTREAM_LATENCY", LATENCY))
    mock = MockUpstream(latency=latency, chunk_gap=latency, chunks=5, record=False)
    app = web.Application()
    app.router.add_post("/v1/chat/completions", mock.chat)
    app.router.add_get("/v1/models", mock.models)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def serve_relay(port: int, upstream_port: int) -> None:
    """A bare TCP relay on uvloop: bytes in, bytes out, nothing parsed or checked. The floor that
    any proxy process in the path pays (one more hop, one more process to wake up)."""
    import asyncio

    import uvloop

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        await asyncio.gather(
            pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer), return_exceptions=True
        )

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        await server.serve_forever()

    uvloop.run(main())


def start_gateway(port: int, env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "run_gateway", "--port", str(port), "--workers", "1"],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def start_litellm(venv: Path, port: int, upstream_port: int, workdir: Path) -> subprocess.Popen | None:
    binary = venv / "bin" / "litellm"
    if not binary.exists():
        return None
    config = workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: mock\n"
        "    litellm_params:\n"
        "      model: openai/mock\n"
        f"      api_base: http://127.0.0.1:{upstream_port}/v1\n"
        "      api_key: upstream-key\n"
        "general_settings:\n"
        f"  master_key: {PEER_KEY}\n"
        "litellm_settings:\n"
        "  drop_params: true\n"
        "  telemetry: false\n"
    )
    # No DATABASE_URL: LiteLLM would try to set up its Prisma database (virtual keys), whose CLI
    # is not installable here; the master key is its key check.
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({"LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False", "DISABLE_ADMIN_UI": "True"})
    return subprocess.Popen(
        [
            str(binary),
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
        ],
        cwd=workdir,
        env=env,
        stdout=(workdir / "litellm.log").open("wb"),
        stderr=subprocess.STDOUT,
    )


def start_nginx(port: int, upstream_port: int, workdir: Path) -> subprocess.Popen | None:
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if binary is None:
        return None
    conf = workdir / "nginx.conf"
    conf.write_text(
        f"""worker_processes 1; daemon off; pid {workdir}/nginx.pid; error_log {workdir}/nginx.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {workdir}/body; proxy_temp_path {workdir}/proxy;
  upstream model {{ server 127.0.0.1:{upstream_port}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      if ($http_authorization != "Bearer {PEER_KEY}") {{ return 401; }}
      proxy_pass http://model; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_buffering off; proxy_request_buffering off;
    }}
  }}
}}
"""
    )
    return subprocess.Popen([binary, "-c", str(conf), "-p", str(workdir)], cwd=workdir)


# --- the load generator (its own process) ------------------------------------------------------
def run_load(port: int, path: str, headers: dict[str, str], seconds: float, concurrency: int) -> None:
    import aiohttp

    body = json.dumps(CHAT).encode()

    async def main() -> None:
        done = errors = 0
        deadline = time.perf_counter() + seconds
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def worker() -> None:
                nonlocal done, errors
                while time.perf_counter() < deadline:
                    async with session.post(
                        f"http://127.0.0.1:{port}{path}",
                        data=body,
                        headers={**headers, "Content-Type": "application/json"},
                    ) as response:
                        await response.read()
                        if response.status == 200:
                            done += 1
                        else:
                            errors += 1

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            print(json.dumps({"done": done, "errors": errors, "seconds": time.perf_counter() - started}))

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())


def load(target: Target, seconds: float, concurrency: int) -> tuple[float, float | None, int]:
    cpu_before = cpu_seconds(target.pid) if target.pid else None
    output = subprocess.run(
        [
            sys.executable,
            __file__,
            "--load",
            json.dumps([target.port, target.chat_path, target.headers, seconds, concurrency]),
        ],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    result = json.loads(output.strip().splitlines()[-1])
    rps = result["done"] / result["seconds"]
    per_core = None
    if target.pid:
        used = cpu_seconds(target.pid) - cpu_before
        per_core = result["done"] / used if used > 0 else None
    return rps, per_core, result["errors"]


# --- the benchmark ---------------------------------------------------------------------------
def seed(upstream_port: int) -> tuple[str, str]:
    """A Running service bound to the mock, a key with a limit far above the load (every call is
    counted against it) and a key without limits (the key check alone)."""
    from django.contrib.auth import get_user_model

    from auth.key_actions import inference_key_create
    from console.audit import SYSTEM
    from datasets.models import Dataset
    from deploy.clusters import get_cluster
    from queues.actions import queue_create
    from services import phases
    from services.models import InferenceService

    user = get_user_model().objects.create_user("bench", "bench@example.com", "bench-password-1")
    queue = queue_create(name="bench", gpu_quota=8, cpu_quota=64, memory_quota_gib=512)
    dataset = Dataset.objects.create(
        name="bench", kind=Dataset.Kind.NFS, nfs_server="10.0.0.5", nfs_path="/m", owner=user,
        phase=Dataset.Phase.READY,
    )  # fmt: skip
    service = InferenceService.objects.create(
        name="chat", namespace="inference", owner=user, queue=queue, dataset=dataset, model_path="m",
        phase=phases.RUNNING,
    )  # fmt: skip
    get_cluster().bind_endpoint(namespace="inference", name="chat", url=f"http://127.0.0.1:{upstream_port}")
    _key, limited = inference_key_create(
        owner=user, created_by=user, name="bench", services=[service], rpm_limit=100_000_000, context=SYSTEM
    )
    _key, unlimited = inference_key_create(
        owner=user, created_by=user, name="bench-unlimited", services=[service], context=SYSTEM
    )
    return limited, unlimited


def stop(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def run(args: argparse.Namespace, server_url: str, redis_url: str, var_dir: str) -> None:
    workdir = Path(var_dir)
    key, unlimited_key = seed(upstream_port := args._upstream_port)
    from django.db import connections

    connections.close_all()
    processes: list[subprocess.Popen] = []
    try:
        gateway_port = free_port()
        env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "GATEWAY_REDIS_PREFIX": REDIS_PREFIX,
            "SIMULATED_STATE_DIR": str(workdir / "simulated"),
            "LOG_LEVEL": "WARNING",
            "GATEWAY_GRPC_PORT": "0",
        }
        gateway = start_gateway(gateway_port, env, workdir / "gateway.log")
        processes.append(gateway)
        wait_http(gateway_port, "/-/health")
        relay_port = free_port()
        relay = subprocess.Popen(
            [sys.executable, __file__, "--serve-relay", json.dumps([relay_port, upstream_port])], cwd=ROOT
        )
        processes.append(relay)
        wait_http(relay_port, "/v1/models")
        plain = {"Content-Type": "application/json"}
        targets = [
            Target("direct", upstream_port, "/v1/chat/completions", plain),
            Target("tcp relay", relay_port, "/v1/chat/completions", plain, pid=relay.pid),
            Target(
                "gateway",
                gateway_port,
                "/chat/v1/chat/completions",
                {"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
                pid=gateway.pid,
            ),
            Target(
                "gw no limit",
                gateway_port,
                "/chat/v1/chat/completions",
                {"Content-Type": "application/json", "Authorization": f"Bearer {unlimited_key}"},
                pid=gateway.pid,
            ),
        ]
        peer_port = free_port()
        peer = (
            start_litellm(Path(args.peer_venv), peer_port, upstream_port, workdir) if args.peer_venv else None
        )
        peer_name = "litellm"
        if peer is not None:
            processes.append(peer)
            try:
                wait_http(peer_port, "/health/liveliness", timeout=120)
            except TimeoutError:
                print("LiteLLM did not start; its log:\n" + (workdir / "litellm.log").read_text()[-3000:])
                stop(peer)
                peer = None
        if peer is None:
            peer = start_nginx(peer_port, upstream_port, workdir)
            peer_name = "nginx"
            if peer is not None:
                processes.append(peer)
                wait_http(peer_port, "/v1/models", headers={"Authorization": f"Bearer {PEER_KEY}"})
        if peer is not None:
            targets.append(
                Target(
                    peer_name,
                    peer_port,
                    "/v1/chat/completions",
                    {"Content-Type": "application/json", "Authorization": f"Bearer {PEER_KEY}"},
                    pid=peer.pid,
                )
            )
        else:
            print("No peer: LiteLLM not installed (--peer-venv) and no nginx.")

        body = json.dumps(CHAT).encode()
        stream_body = json.dumps({**CHAT, "stream": True}).encode()
        for target in targets:  # warm-up: imports, pools, caches
            for _ in range(20):
                target.call(body)
                target.first_chunk(stream_body)
        rounds = 10
        for round_ in range(rounds):
            order = targets if round_ % 2 == 0 else list(reversed(targets))
            for target in order:
                for _ in range(args.calls // rounds):
                    target.latencies.append(target.call(body))
                for _ in range(args.streams // rounds):
                    target.ttfc.append(target.first_chunk(stream_body))

        load_avg = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        direct = targets[0]
        print(
            f"\nLatency: {len(direct.latencies)} sequential calls per target, interleaved "
            f"(ms; mock answers after {args.latency_ms:.0f} ms; load average {load_avg})"
        )
        print(f"  {'target':<12}{'p50':>9}{'p99':>9}{'added p50':>11}{'added p99':>11}")
        for target in targets:
            p50, p99 = pct(target.latencies, 50) * 1000, pct(target.latencies, 99) * 1000
            d50, d99 = pct(direct.latencies, 50) * 1000, pct(direct.latencies, 99) * 1000
            print(f"  {target.name:<12}{p50:>9.2f}{p99:>9.2f}{p50 - d50:>11.2f}{p99 - d99:>11.2f}")
        print(f"\nSSE time to first chunk: {len(direct.ttfc)} streams per target (ms)")
        print(f"  {'target':<12}{'p50':>9}{'p99':>9}{'added p50':>11}{'added p99':>11}")
        for target in targets:
            p50, p99 = pct(target.ttfc, 50) * 1000, pct(target.ttfc, 99) * 1000
            d50, d99 = pct(direct.ttfc, 50) * 1000, pct(direct.ttfc, 99) * 1000
            print(f"  {target.name:<12}{p50:>9.2f}{p99:>9.2f}{p50 - d50:>11.2f}{p99 - d99:>11.2f}")

        print(f"\nThroughput: {args.concurrency} connections for {args.seconds:.0f} s per target, twice")
        print(f"  {'target':<12}{'req/s':>10}{'req per CPU-s':>15}{'errors':>8}")
        results = {}
        for _ in range(2):
            for target in targets:
                rps, per_core, errors = load(target, args.seconds, args.concurrency)
                best = results.get(target.name)
                if best is None or rps > best[0]:
                    results[target.name] = (rps, per_core, errors)
        for target in targets:
            rps, per_core, errors = results[target.name]
            shown = f"{per_core:>15.0f}" if per_core else f"{'-':>15}"
            print(f"  {target.name:<12}{rps:>10.0f}{shown}{errors:>8}")
        if peer is not None:
            ours, theirs = results["gateway"], results[peer_name]
            print(
                f"\nGateway vs {peer_name}: {ours[0] / theirs[0]:.2f}x the requests/s, "
                f"{ours[1] / theirs[1]:.2f}x the requests per CPU-second"
                if ours[1] and theirs[1]
                else ""
            )
    finally:
        for process in reversed(processes):
            stop(process)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=400, help="sequential calls per target (default 400)")
    parser.add_argument("--streams", type=int, default=200, help="SSE streams per target (default 200)")
    parser.add_argument("--seconds", type=float, default=8.0, help="throughput run per target (default 8)")
    parser.add_argument(
        "--concurrency", type=int, default=64, help="connections of the load run (default 64)"
    )
    parser.add_argument("--peer-venv", default="/tmp/bench-peer-venv", help="venv with litellm[proxy]")
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=LATENCY * 1000,
        help="the mock's delay before answering (default 20)",
    )
    parser.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-relay", help=argparse.SUPPRESS)
    parser.add_argument("--load", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_upstream:
        serve_upstream(args.serve_upstream)
        return 0
    if args.serve_relay:
        serve_relay(*json.loads(args.serve_relay))
        return 0
    if args.load:
        run_load(*json.loads(args.load))
        return 0

    server_url = os.environ.get("DATABASE_URL") or DEFAULT_SERVER_URL
    redis_url = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    args._upstream_port = free_port()
    os.environ["BENCH_UPSTREAM_LATENCY"] = str(args.latency_ms / 1000)
    upstream = subprocess.Popen(
        [sys.executable, __file__, "--serve-upstream", str(args._upstream_port)], cwd=ROOT
    )
    benchdb.create_database(server_url, BENCH_DB)
    try:
        wait_http(args._upstream_port, "/v1/models")
        with tempfile.TemporaryDirectory(prefix="bench-gateway-") as var_dir:
            benchdb.setup_django(benchdb.database_url(server_url, BENCH_DB), var_dir)
            run(args, server_url, redis_url, var_dir)
            from django.db import connections

            connections.close_all()
    finally:
        stop(upstream)
        benchdb.drop_database(server_url, BENCH_DB)
        import redis

        client = redis.Redis.from_url(redis_url)
        names = list(client.scan_iter(match=f"{REDIS_PREFIX}*", count=1000))
        if names:
            client.delete(*names)
    return 0


if __name__ == "__main__":
    sys.exit(main())
