"""How fast the services list is: the page, the REST API and a raw-query baseline.

Builds its own PostgreSQL database (bench_console, dropped before and after), fills it with
services, then times GET /services/, GET /api/v1/services/?page_size=100 and a plain
values() + json.dumps of the same 100 rows, and counts the SQL queries each request makes.
A benchmark, not a test: it prints figures and exits 0 whatever they are.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python bench/services_list.py

DATABASE_URL only says which server to use; its database is never touched.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import benchdb  # bench/benchdb.py: this folder is on sys.path when a bench runs

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser
    from django.http import HttpResponseBase
    from django.test import Client

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB = "bench_console"
DEFAULT_SERVER_URL = "postgres://postgres@127.0.0.1:5432/test"
WARMUPS = 3
API_PAGE_SIZES = (10, 50, 100)
PAGE_SIZE = 25  # services.views.service_list_view

# What GET /api/v1/services/ returns for a service, as columns (access_info is computed from them).
API_COLUMNS = (
    "id", "uid", "name", "description", "queue__name", "runtime", "image", "dataset__name", "model_path",
    "served_model_name", "engine_args", "env", "replicas", "cpu", "memory", "gpu_count", "gpu_type",
    "shm_size", "auth_policy", "affinity_mode", "node_rules", "tolerations", "namespace", "owner__username",
    "phase", "reason", "message", "ready_replicas", "applied_revision", "observed_at", "created_at",
    "updated_at",
)  # fmt: skip


# --- the bench database ------------------------------------------------------------------


def bench_database_url(server_url: str) -> str:
    return benchdb.database_url(server_url, BENCH_DB)


def create_database(server_url: str) -> None:
    benchdb.create_database(server_url, BENCH_DB)


def drop_database(server_url: str) -> None:
    benchdb.drop_database(server_url, BENCH_DB)


setup_django = benchdb.setup_django


# --- data ----------------------------------------------------------------------------------


@dataclass
class Fixture:
    staff: AbstractBaseUser  # the user making every request
    token: str  # its API token, plaintext


def seed(service_count: int) -> Fixture:
    """Services across 4 queues, 3 datasets and 2 owners, in every phase, 3 events each."""
    from django.contrib.auth import get_user_model

    from auth.actions import api_token_create
    from datasets.models import Dataset
    from queues.actions import queue_create
    from services import phases
    from services.models import InferenceService, ServiceEvent

    users = get_user_model()
    staff = users.objects.create_user("bench-staff", "staff@example.com", "bench-password-1", is_staff=True)
    owners = [
        users.objects.create_user(name, f"{name}@example.com", f"{name}-password-1")
        for name in ("alice", "bob")
    ]
    queues = [
        queue_create(name=name, gpu_quota=64, cpu_quota=512, memory_quota_gib=4096)
        for name in ("gpu-a100", "gpu-h100", "gpu-l40s", "cpu-only")
    ]
    datasets = [
        Dataset.objects.create(
            name=name, kind=Dataset.Kind.NFS, nfs_server="10.0.0.5", nfs_path=f"/exports/{name}",
            owner=owners[0], phase=Dataset.Phase.READY,
        )
        for name in ("nfs-models", "nfs-llama", "nfs-qwen")
    ]  # fmt: skip
    phase_cycle = [p for p, _ in phases.CHOICES]
    services = [
        InferenceService(
            name=f"svc-{i:05d}",
            namespace="inference",
            description=f"Benchmark service {i}",
            owner=owners[i % len(owners)],
            queue=queues[i % len(queues)],
            runtime="triton" if i % 5 == 0 else "vllm",
            dataset=datasets[i % len(datasets)],
            model_path=f"org/model-{i % 17}",
            engine_args="--dtype=half --max-model-len=4096" if i % 5 else "",
            env=[{"name": "VLLM_LOGGING_LEVEL", "value": "INFO"}] if i % 2 else [],
            replicas=1 + i % 4,
            gpu_count=i % 3,
            gpu_type="NVIDIA-A100-SXM4-80GB" if i % 4 == 0 else "",
            shm_size="16Gi",
            phase=phase_cycle[i % len(phase_cycle)],
            reason="Benchmark" if i % 3 == 0 else "",
            ready_replicas=i % 2,
        )
        for i in range(service_count)
    ]
    InferenceService.objects.bulk_create(services, batch_size=500)
    events = [
        ServiceEvent(service=service, kind=kind, phase=service.phase, reason="Bench", message=f"{kind} event")
        for service in services
        for kind in ("action", "phase", "cluster")
    ]
    ServiceEvent.objects.bulk_create(events, batch_size=1000)
    _token, plaintext = api_token_create(user=staff, name="bench")
    return Fixture(staff=staff, token=plaintext)


# --- measuring -------------------------------------------------------------------------------


@dataclass
class Timing:
    label: str
    median_ms: float
    p95_ms: float


def p95(samples: list[float]) -> float:
    """Nearest-rank 95th percentile."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def timed(label: str, run: Callable[[], object], repeat: int) -> Timing:
    for _ in range(WARMUPS):
        run()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        samples.append((time.perf_counter() - start) * 1000)
    return Timing(label, statistics.median(samples), p95(samples))


def checked_get(client: Client, path: str) -> HttpResponseBase:
    response = client.get(path)
    if response.status_code != 200:
        raise RuntimeError(f"GET {path} answered {response.status_code}: {response.content[:300]!r}")
    return response


@dataclass
class QueryCount:
    label: str
    count: int
    statements: list[str]


def count_queries(label: str, run: Callable[[], object]) -> QueryCount:
    """Fewest queries of two runs: the Bearer token's last_used_at write happens once a minute."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    runs = []
    for _ in range(2):
        with CaptureQueriesContext(connection) as captured:
            run()
        runs.append([query["sql"] for query in captured.captured_queries])
    statements = min(runs, key=len)
    return QueryCount(label, len(statements), statements)


def most_repeated(statements: list[str]) -> tuple[str, int]:
    """The SQL statement run most often, with literal numbers blanked out."""
    shapes = Counter(re.sub(r"\b\d+\b", "N", statement) for statement in statements)
    return shapes.most_common(1)[0]


def run_benchmark(service_count: int, repeat: int) -> None:
    from django.test import Client

    from services import phases
    from services.models import InferenceService

    started = time.perf_counter()
    fixture = seed(service_count)
    print(f"Seeded {service_count} services (3 events each) in {time.perf_counter() - started:.1f} s")

    page_client = Client()
    page_client.force_login(fixture.staff)
    api_client = Client(HTTP_AUTHORIZATION=f"Bearer {fixture.token}")

    def get_page() -> HttpResponseBase:
        return checked_get(page_client, "/services/")

    def get_api(page_size: int = 100) -> HttpResponseBase:
        return checked_get(api_client, f"/api/v1/services/?page_size={page_size}")

    def baseline() -> str:
        rows = InferenceService.objects.exclude(phase=phases.DELETED).values(*API_COLUMNS)[:100]
        return json.dumps(list(rows), default=str)

    # Sanity: the three measure the same thing they say they do.
    api_rows = get_api().json()["results"]
    page_rows = len(re.findall(r'<td><a href="/services/\d+/">', get_page().content.decode()))
    baseline_rows = json.loads(baseline())
    assert [r["id"] for r in api_rows] == [r["id"] for r in baseline_rows], (
        "baseline rows differ from the API's"
    )
    print(f"Rows per response: page {page_rows}, API {len(api_rows)}, baseline {len(baseline_rows)}")

    counts = [
        count_queries(f"API page_size={size}", lambda size=size: get_api(size)) for size in API_PAGE_SIZES
    ]
    counts.append(count_queries(f"page /services/ ({PAGE_SIZE} rows)", get_page))

    timings = [
        timed(f"GET /services/ ({PAGE_SIZE} rows)", get_page, repeat),
        timed("GET /api/v1/services/?page_size=100", get_api, repeat),
        timed("baseline values()[:100] + json.dumps", baseline, repeat),
    ]
    report(timings, counts, repeat)


# --- output ----------------------------------------------------------------------------------


def report(timings: list[Timing], counts: list[QueryCount], repeat: int) -> None:
    base = timings[-1].median_ms
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"\nTimings over {repeat} requests after {WARMUPS} warm-ups (ms; load average {load}):")
    print(f"  {'request':<40} {'median':>8} {'p95':>8} {'x baseline':>11}")
    for timing in timings:
        ratio = timing.median_ms / base if base else float("nan")
        print(f"  {timing.label:<40} {timing.median_ms:>8.2f} {timing.p95_ms:>8.2f} {ratio:>10.1f}x")

    print("\nSQL queries per request:")
    for count in counts:
        print(f"  {count.label:<40} {count.count:>4}")

    api_counts = counts[: len(API_PAGE_SIZES)]
    if api_counts[-1].count > api_counts[0].count:
        extra = api_counts[-1].count - api_counts[0].count
        rows = API_PAGE_SIZES[-1] - API_PAGE_SIZES[0]
        statement, times = most_repeated(api_counts[-1].statements)
        print(
            f"\nFINDING: the API query count GROWS with page size (+{extra} queries for +{rows} rows, "
            f"about {extra / rows:.2f} per row): an N+1.\n"
            f"  Most repeated at page_size={API_PAGE_SIZES[-1]} ({times}x): {statement[:300]}"
        )
    else:
        print(
            f"\nOK: the API query count does not grow with page size ({api_counts[0].count} at every size)."
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--services", type=int, default=1000, help="services to create (default 1000)")
    parser.add_argument("--repeat", type=int, default=30, help="timed requests per measure (default 30)")
    args = parser.parse_args(argv)
    if args.services < 100 or args.repeat < 1:
        parser.error("--services must be at least 100 (the API page) and --repeat at least 1")

    server_url = os.environ.get("DATABASE_URL") or DEFAULT_SERVER_URL
    create_database(server_url)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-console-") as var_dir:
            setup_django(bench_database_url(server_url), var_dir)
            run_benchmark(args.services, args.repeat)
            from django.db import connections

            connections.close_all()
    finally:
        drop_database(server_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
