"""How fast the pre-submit admission check is, against one aggregate query over the same rows.

Builds its own PostgreSQL database (bench_admission, dropped before and after) with 3 flavors
(h100, a100, default), 50 queues (30 in 5 cohorts, quotas on 1-2 flavors each), 2 teams and
services in realistic phases, then times the admission decision of a new service on random
queues: `services.admission.decide(service, nodes=..., locked=cohort_of(queue))`, what
`services.actions.service_check` runs after validation. The baseline is one indexed aggregate
query (GROUP BY queue, flavor) over the admitted services of the same queues. It also counts
the SQL queries per check at two sizes (they must not grow with the number of services),
re-runs the statements under EXPLAIN ANALYZE for what PostgreSQL itself spends, times the
whole `service_check` for context, and tries the aggregate with and without indexes (also
right after a repair_drift-like pass has updated every live row). A benchmark, not a test:
it prints figures and exits 0 whatever they are.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python bench/admission.py

DATABASE_URL only says which server to use; its database is never touched. It creates no
migration: the index variants are created and dropped in the throwaway database only.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import benchdb  # bench/benchdb.py: this folder is on sys.path when a bench runs

if TYPE_CHECKING:
    from services.models import InferenceService

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB = "bench_admission"
DEFAULT_SERVER_URL = "postgres://postgres@127.0.0.1:5432/test"
SEED = 20261202
WARMUPS = 10
SERVER_SAMPLE = 100  # checks whose statements are re-run under EXPLAIN ANALYZE
SERVER_RUNS = 3  # EXPLAIN ANALYZE runs per statement; the fastest counts (other load only adds)
QUEUES = 50
COHORTS = ("pool-a", "pool-b", "pool-c", "pool-d", "pool-e")  # 6 queues each: queues 0-29
QUEUES_PER_COHORT = 6
MISSING_FOLDER = "/nonexistent/bench-admission-models"  # a LOCAL dataset: the model check is skipped
SERVICES_TABLE = "services_inferenceservice"

H100 = "NVIDIA-H100"  # the products of deploy/simulated_nodes.json
A100 = "NVIDIA-A100-SXM4-80GB"
FLAVORS = {"default": {}, "h100": {"nvidia.com/gpu.product": H100}, "a100": {"nvidia.com/gpu.product": A100}}
# Quota layouts, by queue number: 1-2 flavors each, in the order they are tried.
LAYOUTS = (("h100",), ("a100",), ("h100", "a100"), ("a100", "default"), ("default",))
# GPU quota as a share of what the queue's admitted services hold at full size: some queues are
# full (a new service waits or borrows), some have room.
QUOTA_FACTORS = (0.9, 1.0, 1.15, 1.4, 2.0)

# Phases of the seeded services (weights). Deleted, Stopped and Deleting keep the flavor they had.
PHASE_WEIGHTS = {
    "Running": 66, "Queued": 8, "Deleted": 12, "Stopped": 4, "Pending": 2, "Deploying": 2,
    "Starting": 2, "Degraded": 1, "Failed": 2, "Deleting": 1,
}  # fmt: skip
NEVER_ADMITTED = {"Queued"}

# The baseline: the usage aggregate of queues.selectors.usage_by_flavor, as one raw statement.
BASELINE_SQL = f"""
SELECT queue_id, flavor_id, SUM(gpu_count * replicas), SUM(cpu_milli * replicas),
       SUM(memory_bytes * replicas), COUNT(*)
  FROM {SERVICES_TABLE}
 WHERE queue_id = ANY(%s) AND phase = ANY(%s) AND flavor_id IS NOT NULL
 GROUP BY queue_id, flavor_id
"""

# Index variants tried on the services table (created and dropped here, never migrated). The
# ORM's statements say NOT (id IS NULL) (`.exclude(id=None)` when no service is excluded) and
# COUNT(id): without `id` in the index an index-only scan is impossible for them.
COVERING_QUEUE_NO_ID = (
    "bench_svc_queue_phase_cover0",
    f"CREATE INDEX bench_svc_queue_phase_cover0 ON {SERVICES_TABLE} (queue_id, phase) "
    "INCLUDE (flavor_id, gpu_count, replicas, cpu_milli, memory_bytes)",
)
COVERING_QUEUE = (
    "bench_svc_queue_phase_cover",
    f"CREATE INDEX bench_svc_queue_phase_cover ON {SERVICES_TABLE} (queue_id, phase) "
    "INCLUDE (flavor_id, gpu_count, replicas, cpu_milli, memory_bytes, id)",
)
COVERING_TEAM = (
    "bench_svc_team_phase_cover",
    f"CREATE INDEX bench_svc_team_phase_cover ON {SERVICES_TABLE} (team_id, phase) "
    "INCLUDE (gpu_count, replicas, id)",
)


# --- the bench database (as bench/services_list.py) -------------------------------------------


def bench_database_url(server_url: str) -> str:
    return benchdb.database_url(server_url, BENCH_DB)


def create_database(server_url: str) -> None:
    benchdb.create_database(server_url, BENCH_DB)


def drop_database(server_url: str) -> None:
    benchdb.drop_database(server_url, BENCH_DB)


setup_django = benchdb.setup_django


def execute(statement: str, params: list | None = None) -> list[tuple]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def vacuum_analyze() -> None:
    """What autovacuum would have done by now: statistics, and the visibility map that lets an
    index-only scan skip the table."""
    execute(f"VACUUM ANALYZE {SERVICES_TABLE}")


# --- data ------------------------------------------------------------------------------------


@dataclass
class World:
    queues: list  # Queue, by number
    cohort_ids: dict[int, list[int]]  # queue id -> the ids cohort_of() returns
    owners: list  # alice (team vision), bob (team nlp), carol (no team)
    teams: dict[int, Any]  # owner id -> Team or None
    priority_classes: list  # None, normal, high
    nfs: Any  # the seeded services' dataset
    local: Any  # a LOCAL dataset whose folder does not exist: service_check skips the model check
    plan: list[dict]  # every service to seed, in order; the first ones are seeded first


def _pick(rng: random.Random, weights: dict) -> Any:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def plan_services(rng: random.Random, total: int, queue_count: int) -> list[dict]:
    """The fields of `total` services, queue by queue weighted (some queues are busier)."""
    queue_weights = [1 + (i * 7) % 5 for i in range(queue_count)]
    plan = []
    for i in range(total):
        q = rng.choices(range(queue_count), weights=queue_weights)[0]
        phase = _pick(rng, PHASE_WEIGHTS)
        flavor = None if phase in NEVER_ADMITTED else rng.choice(LAYOUTS[q % len(LAYOUTS)])
        gpu_count = _pick(rng, {0: 5, 1: 55, 2: 20, 4: 15, 8: 5})
        if flavor == "a100":
            gpu_count = min(gpu_count, 4)  # the A100 node has 4
        gpu_type = ""
        if flavor in ("h100", "a100") and rng.random() < 0.2:
            gpu_type = H100 if flavor == "h100" else A100
        cpu, memory = rng.choice((("4", "30Gi"), ("8", "64Gi"), ("16", "128Gi")))
        plan.append(
            {
                "i": i,
                "queue": q,
                "phase": phase,
                "flavor": flavor,
                "gpu_count": gpu_count,
                "replicas": _pick(rng, {1: 65, 2: 20, 3: 5, 4: 10}),
                "gpu_type": gpu_type,
                "cpu": cpu,
                "memory": memory,
                "owner": i % 3,
                "priority": _pick(rng, {0: 60, 1: 25, 2: 15}),
            }
        )
    return plan


def seed_world(total: int) -> World:
    """Flavors, queues with quotas sized for `total` services, teams, datasets; no services yet."""
    from django.contrib.auth import get_user_model

    from console.validators import parse_quantity
    from datasets.models import Dataset
    from queues.models import FlavorQuota, PriorityClass, Queue, ResourceFlavor, Team
    from services import phases

    rng = random.Random(SEED)
    flavors = {
        name: ResourceFlavor.objects.create(name=name, node_labels=labels) for name, labels in FLAVORS.items()
    }
    queues = []
    for q in range(QUEUES):
        cohort = COHORTS[q // QUEUES_PER_COHORT] if q < len(COHORTS) * QUEUES_PER_COHORT else ""
        strategy = Queue.Strategy.STRICT_FIFO if q % 5 == 4 else Queue.Strategy.BEST_EFFORT_FIFO
        queues.append(Queue.objects.create(name=f"queue-{q:02d}", cohort=cohort, strategy=strategy))

    plan = plan_services(rng, total, QUEUES)
    # What each queue's admitted services hold per flavor when all `total` are in.
    used: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for s in plan:
        if s["phase"] in phases.HOLDING:
            amounts = used[(s["queue"], s["flavor"])]
            amounts[0] += s["gpu_count"] * s["replicas"]
            amounts[1] += parse_quantity(s["cpu"]) * s["replicas"]
            amounts[2] += parse_quantity(s["memory"]) / 2**30 * s["replicas"]
    quotas = []
    for q, queue in enumerate(queues):
        factor = QUOTA_FACTORS[(q * 3) % len(QUOTA_FACTORS)]
        for position, name in enumerate(LAYOUTS[q % len(LAYOUTS)]):
            gpus, cores, gib = used[(q, name)]
            quota_gpus = max(8, round(gpus * factor))
            quotas.append(
                FlavorQuota(
                    queue=queue,
                    flavor=flavors[name],
                    position=position,
                    gpus=quota_gpus,
                    cpu=math.ceil(cores * 2) + 64,  # cpu and memory roomy: GPUs decide
                    memory_gib=math.ceil(gib * 2) + 512,
                    gpu_borrowing_limit=16 if queue.cohort and q % 4 == 0 else None,
                    gpu_lending_limit=quota_gpus // 2 if queue.cohort and q % 4 == 1 else None,
                )
            )
    FlavorQuota.objects.bulk_create(quotas)

    users = get_user_model()
    owners = [
        users.objects.create_user(name, f"{name}@example.com", f"{name}-password-1")
        for name in ("alice", "bob", "carol")
    ]
    vision = Team.objects.create(name="vision", max_gpus=total * 4, max_services=total)
    nlp = Team.objects.create(name="nlp")  # no caps: its usage is still summed
    vision.members.add(owners[0])
    nlp.members.add(owners[1])
    teams = {owners[0].id: vision, owners[1].id: nlp, owners[2].id: None}
    priority_classes = [
        None,
        PriorityClass.objects.create(name="normal", value=100),
        PriorityClass.objects.create(name="high", value=1000),
    ]
    nfs = Dataset.objects.create(
        name="nfs-models", kind=Dataset.Kind.NFS, nfs_server="10.0.0.5", nfs_path="/exports/models",
        owner=owners[0], phase=Dataset.Phase.READY,
    )  # fmt: skip
    local = Dataset.objects.create(
        name="node-models", kind=Dataset.Kind.LOCAL, local_path=MISSING_FOLDER, owner=owners[0],
        phase=Dataset.Phase.READY,
    )  # fmt: skip
    cohort_ids = {}
    for queue in queues:
        members = [m for m in queues if queue.cohort and m.cohort == queue.cohort] or [queue]
        cohort_ids[queue.id] = sorted(m.id for m in members)
    return World(queues, cohort_ids, owners, teams, priority_classes, nfs, local, plan)


def insert_services(world: World, planned: list[dict]) -> None:
    from console.validators import parse_quantity
    from queues.models import ResourceFlavor
    from services.models import InferenceService

    flavors = {f.name: f for f in ResourceFlavor.objects.all()}
    services = [
        InferenceService(
            name=f"svc-{s['i']:05d}",
            namespace="inference",
            owner=world.owners[s["owner"]],
            team=world.teams[world.owners[s["owner"]].id],
            queue=world.queues[s["queue"]],
            priority_class=world.priority_classes[s["priority"]],
            flavor=flavors[s["flavor"]] if s["flavor"] else None,
            dataset=world.nfs,
            model_path=f"org/model-{s['i'] % 17}",
            engine_args="--dtype=half --max-model-len=4096",
            replicas=s["replicas"],
            gpu_count=s["gpu_count"],
            gpu_type=s["gpu_type"],
            cpu=s["cpu"],
            memory=s["memory"],
            cpu_milli=round(parse_quantity(s["cpu"]) * 1000),
            memory_bytes=round(parse_quantity(s["memory"])),
            shm_size="16Gi",
            phase=s["phase"],
            reason="WaitingForQuota" if s["phase"] == "Queued" else "",
            ready_replicas=s["replicas"] if s["phase"] == "Running" else 0,
        )
        for s in planned
    ]
    InferenceService.objects.bulk_create(services, batch_size=1000)
    # One service a minute, oldest first: queued_ahead compares ages.
    execute(
        f"UPDATE {SERVICES_TABLE} "
        f"SET created_at = now() - interval '1 minute' * ((SELECT max(id) FROM {SERVICES_TABLE}) - id)"
    )


# --- the checks ------------------------------------------------------------------------------


@dataclass
class Check:
    """One pre-submit check: a new service on a random queue."""

    queue_index: int
    owner_index: int
    gpu_count: int
    replicas: int
    gpu_type: str
    priority_index: int
    case: str = ""  # "cohort+team", "cohort", "team", "alone"


def plan_checks(count: int, world: World) -> list[Check]:
    rng = random.Random(SEED + 1)
    checks = []
    for _ in range(count):
        q = rng.randrange(len(world.queues))
        layout = LAYOUTS[q % len(LAYOUTS)]
        roll = rng.random()
        gpu_type = ""
        if roll < 0.1 and layout[0] != "default":
            gpu_type = FLAVORS[layout[0]]["nvidia.com/gpu.product"]  # the queue's own type
        elif roll < 0.2:
            gpu_type = H100 if "h100" not in layout else A100  # maybe another type
        owner = rng.randrange(len(world.owners))
        cohort = bool(world.queues[q].cohort)
        team = world.teams[world.owners[owner].id] is not None
        case = {(True, True): "cohort+team", (True, False): "cohort", (False, True): "team"}.get(
            (cohort, team), "alone"
        )
        checks.append(
            Check(
                queue_index=q,
                owner_index=owner,
                gpu_count=_pick(rng, {1: 50, 2: 25, 4: 20, 8: 5}),
                replicas=_pick(rng, {1: 75, 2: 25}),
                gpu_type=gpu_type,
                priority_index=rng.randrange(len(world.priority_classes)),
                case=case,
            )
        )
    return checks


def new_service(check: Check, world: World, queues: dict) -> InferenceService:
    """The unsaved service service_check builds (after full_clean, _check_team, _set_amounts)."""
    from console.validators import parse_quantity
    from services.models import InferenceService

    owner = world.owners[check.owner_index]
    service = InferenceService(
        name="new-service",
        namespace="inference",
        owner=owner,
        team=world.teams[owner.id],
        queue=queues[world.queues[check.queue_index].id],
        priority_class=world.priority_classes[check.priority_index],
        dataset=world.nfs,
        model_path="org/new-model",
        runtime="vllm",
        replicas=check.replicas,
        gpu_count=check.gpu_count,
        gpu_type=check.gpu_type,
        cpu="8",
        memory="64Gi",
    )
    service.cpu_milli = round(parse_quantity(service.cpu) * 1000)
    service.memory_bytes = round(parse_quantity(service.memory))
    return service


def service_check_fields(check: Check, world: World, queues: dict) -> dict:
    """service_check's input for the same check, with the LOCAL dataset (no model files to read)."""
    return {
        "name": "new-service",
        "queue": queues[world.queues[check.queue_index].id],
        "runtime": "vllm",
        "dataset": world.local,
        "model_path": "org/new-model",
        "replicas": check.replicas,
        "gpu_count": check.gpu_count,
        "gpu_type": check.gpu_type,
        "cpu": "8",
        "memory": "64Gi",
        "priority_class": world.priority_classes[check.priority_index],
    }


@dataclass
class Subjects:
    """The three things measured, per check index."""

    decide: Callable[[int], object]
    baseline: Callable[[int], object]
    service_check: Callable[[int], object]
    baseline_params: list[list]  # BASELINE_SQL's parameters, per check


def subjects(world: World, checks: list[Check]) -> Subjects:
    from queues.models import Queue
    from queues.selectors import cohort_of
    from services import phases
    from services.actions import service_check
    from services.admission import cluster_nodes, decide

    queues = Queue.objects.in_bulk()
    nodes = cluster_nodes()  # service_check reads them in _prepare, before the decision
    services = [new_service(c, world, queues) for c in checks]
    fields = [service_check_fields(c, world, queues) for c in checks]
    ids = [world.cohort_ids[world.queues[c.queue_index].id] for c in checks]
    holding = sorted(phases.HOLDING)

    def run_decide(i: int) -> object:
        service = services[i]
        return decide(service, nodes=nodes, locked=cohort_of(service.queue))

    def run_baseline(i: int) -> object:
        return execute(BASELINE_SQL, [ids[i], holding])

    def run_service_check(i: int) -> object:
        return service_check(owner=world.owners[checks[i].owner_index], **fields[i])

    return Subjects(run_decide, run_baseline, run_service_check, [[i, holding] for i in ids])


def verify(world: World, checks: list[Check], subject: Subjects) -> Counter:
    """The baseline reads the same rows as the decision's usage query; both paths agree."""
    from queues.selectors import usage_by_flavor

    verdicts = Counter()
    for i, check in enumerate(checks):
        ids = world.cohort_ids[world.queues[check.queue_index].id]
        expected = {key: (a.gpu, a.cpu_milli, a.memory, n) for key, (a, n) in usage_by_flavor(ids).items()}
        got = {(r[0], r[1]): (r[2], r[3], r[4], r[5]) for r in subject.baseline(i)}
        assert got == expected, f"baseline rows differ from usage_by_flavor for queues {ids}"
        decision = subject.decide(i)
        if i < 40:
            result = subject.service_check(i)
            assert result["verdict"] == decision.verdict, (result, decision)
        verdicts[decision.verdict] += 1
    return verdicts


# --- measuring -------------------------------------------------------------------------------


def percentile(samples: list[float], share: float) -> float:
    """Nearest rank."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


@dataclass
class Timing:
    label: str
    samples: list[float] = field(default_factory=list)  # ms

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p99(self) -> float:
        return percentile(self.samples, 0.99)


def time_interleaved(
    runs: dict[str, Callable[[int], object]],
    indices: range,
    timings: dict[str, Timing],
    warmups: int = WARMUPS,
) -> None:
    """Each check index through every subject in turn, so that a noisy moment hits all of them."""
    for label, run in runs.items():
        for i in indices[:warmups]:
            run(i)
        timings.setdefault(label, Timing(label))
    for i in indices:
        for label, run in runs.items():
            start = time.perf_counter()
            run(i)
            timings[label].samples.append((time.perf_counter() - start) * 1000)


def classify(statement: str) -> str:
    """Which part of the decision (or of service_check's validation) a statement is."""
    s = statement.lower()
    if 'from "queues_queue"' in s and '"cohort"' in s:
        return "cohort_of: the cohort's queues"
    if "group by" in s and '"flavor_id"' in s:
        return "usage_by_flavor: GROUP BY queue, flavor"
    if 'from "queues_flavorquota"' in s:
        return "queue_states: quotas with flavors"
    if '"queues_priorityclass"' in s and "count(*)" in s:
        return "queued_ahead: COUNT of Queued ahead"
    if '"team_id"' in s and "sum(" in s:
        return "team_state: the team's usage"
    return "validation and the rest: " + re.sub(r"\b\d+\b", "N", statement)[:70]


@contextmanager
def statement_timer(store: dict[str, list[float]], per_call: list[float]):
    """Times every statement (by kind, into store) and adds it to per_call[-1]."""
    from django.db import connection

    def wrapper(execute_, statement, params, many, context):
        start = time.perf_counter()
        try:
            return execute_(statement, params, many, context)
        finally:
            elapsed = (time.perf_counter() - start) * 1000
            store[classify(statement)].append(elapsed)
            if per_call:
                per_call[-1] += elapsed

    with connection.execute_wrapper(wrapper):
        yield


def capture(run: Callable[[int], object], i: int) -> list[str]:
    """The SQL of one check, with CaptureQueriesContext."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    # The query log keeps the last 9,000 queries: once it is full, CaptureQueriesContext's slice of
    # it comes back empty. Start each check with an empty log.
    connection.queries_log.clear()
    with CaptureQueriesContext(connection) as captured:
        run(i)
    return [q["sql"] for q in captured.captured_queries]


def explain(statement: str, params: list | None = None) -> tuple[float, str]:
    """The fastest execution time on the server of SERVER_RUNS EXPLAIN ANALYZE (no round trip,
    no Python), and the scans PostgreSQL chose on the services table."""
    times, lines = [], []
    for _ in range(SERVER_RUNS):
        lines = [r[0] for r in execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + statement, params)]
        times += [float(m.group(1)) for ln in lines if (m := re.search(r"Execution Time: ([\d.]+)", ln))]
    scans = []
    for line in lines:
        found = re.search(
            r"(Seq Scan|Index Only Scan|Index Scan|Bitmap Index Scan)(?: using| on) (\S+)", line
        )
        if found and not found.group(2).startswith("queues_"):
            name = found.group(2).removeprefix(f"{SERVICES_TABLE}_")
            scans.append(f"{found.group(1)} {'(table)' if name == SERVICES_TABLE else name}")
    fetches = sum(int(m.group(1)) for ln in lines if (m := re.search(r"Heap Fetches: (\d+)", ln)))
    text = ", ".join(dict.fromkeys(scans)) or "-"
    if any(scan.startswith("Index Only") for scan in scans):
        text += f" ({fetches} heap fetches)"
    return min(times), text


@dataclass
class ServerTimes:
    """What PostgreSQL itself spends, per check, over the first SERVER_SAMPLE checks."""

    decide: list[float] = field(default_factory=list)  # all of decide()'s statements, per check
    baseline: list[float] = field(default_factory=list)
    by_kind: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    scans: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))


def server_times(
    statements: list[list[str]], subject: Subjects, indices: range, into: ServerTimes | None = None
) -> ServerTimes:
    """EXPLAIN ANALYZE the statements of these checks (decide()'s, as captured, and the baseline)."""
    result = into or ServerTimes()
    for i in indices:
        total = 0.0
        for statement in statements[i]:
            ms, scans = explain(statement)
            kind = classify(statement).split(":")[0]
            result.by_kind[kind].append(ms)
            result.scans[kind][scans] += 1
            total += ms
        result.decide.append(total)
        ms, scans = explain(BASELINE_SQL, subject.baseline_params[i])
        result.baseline.append(ms)
        result.scans["baseline"][scans] += 1
    return result


# --- index variants --------------------------------------------------------------------------


def composite_index_name() -> str:
    """The (queue_id, phase) index of services' migration 0001, by its columns."""
    rows = execute(
        "SELECT indexname FROM pg_indexes WHERE tablename = %s AND indexdef LIKE %s",
        [SERVICES_TABLE, "%(queue_id, phase)%"],
    )
    if not rows:
        raise RuntimeError("the (queue_id, phase) index of the services migration is missing")
    return rows[0][0]


@dataclass
class Variant:
    label: str
    drop: tuple[str, ...] = ()  # indexes dropped (recreated afterwards)
    create: tuple[tuple[str, str], ...] = ()  # (name, CREATE INDEX) added (dropped afterwards)
    # Every live row updated and not vacuumed yet, as after a repair_drift pass (it writes
    # observed_at on every live service every REPAIR_INTERVAL_SECONDS): the visibility map is
    # cleared, so an index-only scan has to visit the table again.
    repaired: bool = False


def variants(composite: str) -> list[Variant]:
    both = (COVERING_QUEUE, COVERING_TEAM)
    return [
        Variant("as migrated: (queue_id, phase)"),
        Variant("as migrated, after a repair pass", repaired=True),
        Variant("without (queue_id, phase)", drop=(composite,)),
        Variant("queue cover without id, instead", drop=(composite,), create=(COVERING_QUEUE_NO_ID,)),
        Variant("queue cover with id, instead", drop=(composite,), create=(COVERING_QUEUE,)),
        Variant("queue + team covers", drop=(composite,), create=both),
        Variant("queue + team covers, after a repair", drop=(composite,), create=both, repaired=True),
    ]


@contextmanager
def applied(variant: Variant):
    definitions = {
        name: definition
        for name, definition in execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s", [SERVICES_TABLE]
        )
    }
    for name in variant.drop:
        execute(f'DROP INDEX "{name}"')
    for _name, definition in variant.create:
        execute(definition)
    if variant.repaired:
        execute(f"UPDATE {SERVICES_TABLE} SET observed_at = now() WHERE phase <> 'Deleted'")
    execute(f"ANALYZE {SERVICES_TABLE}")
    try:
        yield
    finally:
        for name, _definition in variant.create:
            execute(f'DROP INDEX "{name}"')
        for name in variant.drop:
            execute(definitions[name])
        if variant.repaired:
            vacuum_analyze()
        else:
            execute(f"ANALYZE {SERVICES_TABLE}")


# --- one size --------------------------------------------------------------------------------


@dataclass
class SizeResult:
    services: int
    decide_queries: list[int]
    check_queries: list[int]
    timings: dict[str, Timing]
    server: ServerTimes
    verdicts: Counter
    rows_summed: float  # admitted rows the baseline sums per check, on average
    decide_statements: list[list[str]]


def rows_per_check(world: World, checks: list[Check]) -> float:
    from services import phases

    counts = dict(
        execute(
            f"SELECT queue_id, COUNT(*) FROM {SERVICES_TABLE} "
            "WHERE phase = ANY(%s) AND flavor_id IS NOT NULL GROUP BY queue_id",
            [sorted(phases.HOLDING)],
        )
    )
    totals = [
        sum(counts.get(qid, 0) for qid in world.cohort_ids[world.queues[c.queue_index].id]) for c in checks
    ]
    return statistics.mean(totals)


def measure_size(world: World, checks: list[Check], service_count: int) -> tuple[SizeResult, Subjects]:
    subject = subjects(world, checks)
    verdicts = verify(world, checks, subject)
    decide_statements = [capture(subject.decide, i) for i in range(len(checks))]
    check_queries = [len(capture(subject.service_check, i)) for i in range(len(checks))]
    timings: dict[str, Timing] = {}
    time_interleaved({"decide": subject.decide, "baseline": subject.baseline}, range(len(checks)), timings)
    result = SizeResult(
        service_count,
        [len(st) for st in decide_statements],
        check_queries,
        timings,
        server_times(decide_statements, subject, range(min(SERVER_SAMPLE, len(checks)))),
        verdicts,
        rows_per_check(world, checks),
        decide_statements,
    )
    return result, subject


# --- output ----------------------------------------------------------------------------------


def load() -> str:
    return ", ".join(f"{value:.1f}" for value in os.getloadavg())


def print_timings(rows: list[tuple[str, Timing]], base: Timing) -> None:
    print(f"  {'':<48} {'median':>8} {'p99':>8} {'x baseline':>11}")
    for label, timing in rows:
        ratio = timing.median / base.median if base.median else float("nan")
        print(f"  {label:<48} {timing.median:>8.3f} {timing.p99:>8.3f} {ratio:>10.1f}x")


def print_size(result: SizeResult, checks: list[Check]) -> None:
    t = result.timings
    print(
        f"\n{result.services} services: {len(checks)} checks after {WARMUPS} warm-ups, interleaved "
        f"(ms; load average {load()}); the baseline sums {result.rows_summed:.0f} admitted rows "
        "per check on average"
    )
    print_timings(
        [
            ("decide(): the admission decision", t["decide"]),
            ("baseline: one GROUP BY over the same rows", t["baseline"]),
        ],
        t["baseline"],
    )
    server = result.server
    print(
        f"  on the server (EXPLAIN ANALYZE, first {len(server.decide)} checks): decide()'s statements "
        f"{statistics.median(server.decide):.3f} ms per check, the baseline "
        f"{statistics.median(server.baseline):.3f} ms (medians)"
    )
    print(f"  verdicts: {dict(sorted(result.verdicts.items()))}")


def print_queries(small: SizeResult, big: SizeResult, checks: list[Check]) -> None:
    print("\nSQL queries per check (CaptureQueriesContext, every check):")
    print(f"  {'case (checks)':<28} {'decide() ' + str(small.services):>14} {big.services:>6}"
          f" {'service_check ' + str(small.services):>20} {big.services:>6}")  # fmt: skip
    by_case = defaultdict(list)
    for i, check in enumerate(checks):
        by_case[check.case].append(i)

    def spread(values: list[int]) -> str:
        low, high = min(values), max(values)
        return str(low) if low == high else f"{low}-{high}"

    for case in ("cohort+team", "cohort", "team", "alone"):
        idx = by_case.get(case, [])
        if not idx:
            continue
        cells = [spread([r.decide_queries[i] for i in idx]) for r in (small, big)]
        cells += [spread([r.check_queries[i] for i in idx]) for r in (small, big)]
        print(f"  {f'{case} ({len(idx)})':<28} {cells[0]:>14} {cells[1]:>6} {cells[2]:>20} {cells[3]:>6}")
    grew = [
        i
        for i in range(len(checks))
        if big.decide_queries[i] != small.decide_queries[i] or big.check_queries[i] != small.check_queries[i]
    ]
    if grew:
        print(f"\nFINDING: {len(grew)} checks ran a different number of queries at {big.services} services.")
    else:
        print(
            f"\nOK: every check runs the same number of queries with {small.services} and {big.services} "
            f"services (decide() {spread(big.decide_queries)}, service_check {spread(big.check_queries)})."
        )


def print_server_growth(small: SizeResult, big: SizeResult) -> None:
    print(
        f"\nServer-side execution per check by statement (fastest of {SERVER_RUNS} EXPLAIN ANALYZE; "
        f"median ms over the first {len(big.server.decide)} checks; the work grows with the rows, "
        "the query count does not):"
    )
    print(f"  {'statement':<20} {small.services:>8} {big.services:>8}   plan at {big.services}")
    kinds = [k for k in big.server.by_kind if k in small.server.by_kind] + ["baseline"]
    for kind in kinds:
        a = small.server.baseline if kind == "baseline" else small.server.by_kind[kind]
        b = big.server.baseline if kind == "baseline" else big.server.by_kind[kind]
        scans = big.server.scans[kind].most_common(1)[0][0]
        print(f"  {kind:<20} {statistics.median(a):>8.3f} {statistics.median(b):>8.3f}   {scans}")


def print_breakdown(
    store: dict[str, list[float]], checks: int, totals: list[float], sql: list[float]
) -> None:
    python = [t - s for t, s in zip(totals, sql, strict=True)]
    print(
        f"\nWhere decide()'s time goes ({checks} checks, medians in ms):\n"
        f"  {statistics.median(totals):8.3f} in all\n"
        f"  {statistics.median(sql):8.3f} in cursor.execute (PostgreSQL, round trip, psycopg reading rows)\n"
        f"  {statistics.median(python):8.3f} the rest, in Python: building the ORM queries, rows to objects, "
        "check_admission"
    )
    print("Per statement (ms, in the driver):")
    print(f"  {'statement':<48} {'per check':>9} {'median':>8} {'p99':>8}")
    for label, samples in sorted(store.items(), key=lambda kv: -statistics.median(kv[1]) * len(kv[1])):
        print(
            f"  {label[:48]:<48} {len(samples) / checks:>9.2f} {statistics.median(samples):>8.3f} "
            f"{percentile(samples, 0.99):>8.3f}"
        )


# --- the run ---------------------------------------------------------------------------------


def run_benchmark(total: int, small: int, check_count: int, rounds: int) -> None:
    started = time.perf_counter()
    world = seed_world(total)
    insert_services(world, world.plan[:small])
    vacuum_analyze()
    print(
        f"Seeded {len(FLAVORS)} flavors, {QUEUES} queues ({len(COHORTS)} cohorts of {QUEUES_PER_COHORT}, "
        f"{QUEUES - len(COHORTS) * QUEUES_PER_COHORT} alone), 2 teams and {small} services "
        f"in {time.perf_counter() - started:.1f} s"
    )
    checks = plan_checks(check_count, world)
    cases = Counter(c.case for c in checks)
    print(f"Checks: {check_count} new services on random queues; {dict(sorted(cases.items()))}")

    small_result, _ = measure_size(world, checks, small)
    print_size(small_result, checks)

    started = time.perf_counter()
    insert_services(world, world.plan[small:])
    vacuum_analyze()
    phases_seeded = Counter(s["phase"] for s in world.plan)
    print(
        f"\nAdded {total - small} services ({total} in all) in {time.perf_counter() - started:.1f} s; "
        f"phases: {dict(phases_seeded.most_common())}"
    )
    big_result, subject = measure_size(world, checks, total)
    print_size(big_result, checks)
    print_queries(small_result, big_result, checks)
    print_server_growth(small_result, big_result)

    store: dict[str, list[float]] = defaultdict(list)
    sql_per_check: list[float] = []
    totals = []
    with statement_timer(store, sql_per_check):
        for i in range(len(checks)):
            sql_per_check.append(0.0)
            start = time.perf_counter()
            subject.decide(i)
            totals.append((time.perf_counter() - start) * 1000)
    print_breakdown(store, len(checks), totals, sql_per_check)

    # service_check as a whole, for context: validation (full_clean's foreign-key checks, the team),
    # the node list and the skipped model check, then the same decision.
    full: dict[str, Timing] = {}
    time_interleaved(
        {"service_check": subject.service_check, "decide": subject.decide, "baseline": subject.baseline},
        range(len(checks)),
        full,
    )
    print(f"\nservice_check() end to end, LOCAL dataset whose folder is missing (ms; load average {load()}):")
    print_timings(
        [
            ("service_check(): validation + decision", full["service_check"]),
            ("decide() alone", full["decide"]),
            ("baseline", full["baseline"]),
        ],
        full["baseline"],
    )

    compare_indexes(checks, subject, big_result.decide_statements, rounds)


def compare_indexes(checks: list[Check], subject: Subjects, statements: list[list[str]], rounds: int) -> None:
    """Every variant times every check once, in `rounds` slices with the variants in alternating
    order (ABC CBA ...) so that the machine's drift spreads over all of them; EXPLAIN ANALYZE
    of the first SERVER_SAMPLE checks' statements gives what the server itself spends."""
    all_variants = variants(composite_index_name())
    timings: dict[str, dict[str, Timing]] = {v.label: {} for v in all_variants}
    server: dict[str, ServerTimes] = {v.label: ServerTimes() for v in all_variants}
    size = math.ceil(len(checks) / rounds)
    every = max(1, math.ceil(len(checks) / SERVER_SAMPLE))
    for round_ in range(rounds):
        indices = range(round_ * size, min(len(checks), (round_ + 1) * size))
        order = all_variants if round_ % 2 == 0 else list(reversed(all_variants))
        for variant in order:
            with applied(variant):
                server_times(statements, subject, indices[::every], into=server[variant.label])
                runs = {"decide": subject.decide, "baseline": subject.baseline}
                time_interleaved(runs, indices, timings[variant.label], warmups=3)

    print(
        f"\nIndexes on {SERVICES_TABLE} ({len(checks)} checks per variant in {rounds} slices, variants in "
        f"alternating order; load average {load()}). Client: ms per check as timed in Python; "
        f"server: EXPLAIN ANALYZE execution ms per check, "
        f"{'every check' if every == 1 else f'every {every}th check'} (medians):"
    )
    print(
        f"  {'variant':<34} {'decide med':>10} {'p99':>7} {'baseline med':>12} {'p99':>7} "
        f"{'| server: decide':>16} {'baseline':>9}"
    )
    for variant in all_variants:
        d, b = timings[variant.label]["decide"], timings[variant.label]["baseline"]
        sv = server[variant.label]
        print(
            f"  {variant.label:<34} {d.median:>10.3f} {d.p99:>7.2f} {b.median:>12.3f} {b.p99:>7.2f} "
            f"{'| ':>3}{statistics.median(sv.decide):>13.3f} {statistics.median(sv.baseline):>9.3f}"
        )
    kinds = ["baseline", "usage_by_flavor", "team_state", "queued_ahead"]
    print("\nServer-side ms per statement (median) and the plan chosen most often, per variant:")
    for variant in all_variants:
        sv = server[variant.label]
        print(f"  {variant.label}")
        for kind in kinds:
            samples = sv.baseline if kind == "baseline" else sv.by_kind.get(kind, [])
            if samples:
                scans = sv.scans[kind].most_common(1)[0][0]
                print(f"    {kind:<16} {statistics.median(samples):>7.3f}  {scans}")
    print("\n  covering indexes tried:")
    for _name, definition in (COVERING_QUEUE_NO_ID, COVERING_QUEUE, COVERING_TEAM):
        print(f"    {definition}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--services", type=int, default=5000, help="services in all (default 5000)")
    parser.add_argument("--small", type=int, default=1000, help="services at the first size (default 1000)")
    parser.add_argument("--checks", type=int, default=500, help="checks per measure (default 500)")
    parser.add_argument(
        "--rounds", type=int, default=10, help="slices the index variants alternate over (default 10)"
    )
    args = parser.parse_args(argv)
    if not 0 < args.small < args.services or args.checks < 20 or args.rounds < 1:
        parser.error("need 0 < --small < --services, --checks >= 20 and --rounds >= 1")

    server_url = os.environ.get("DATABASE_URL") or DEFAULT_SERVER_URL
    create_database(server_url)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-admission-") as var_dir:
            setup_django(bench_database_url(server_url), var_dir)
            run_benchmark(args.services, args.small, args.checks, args.rounds)
            from django.db import connections

            connections.close_all()
    finally:
        drop_database(server_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
