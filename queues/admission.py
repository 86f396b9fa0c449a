"""The console's own admission check: what Kueue would decide for one service, where no Kueue runs.

Pure: dataclasses in, a Decision out; no models, database or settings. The caller gathers the
usage (under its lock), calls `check_admission`, and records the result (flavor, phase, message).

What it decides, following Kueue's flavor assignment for a workload with one podset (a service's
replicas), simplified to one flat cohort and three covered resources (nvidia.com/gpu, cpu, memory):

1. Team limits (Kueue has none; the console enforces them): when the team's live services + 1
   exceed `max_services`, or its GPUs + this service's GPUs exceed `max_gpus`, refuse (field
   "team"). TeamState holds the team's usage *without* the service being checked.

2. Flavor candidates, in the queue's order. A flavor is skipped when its node labels name a
   `nvidia.com/gpu.product` other than the requested GPU type (both set), or when no node can
   hold ONE replica: no node carries the flavor's labels (plus the GPU type as a node selector),
   or they all have a NoSchedule/NoExecute taint that neither the flavor's nor the service's
   tolerations tolerate, or none has the replica's GPUs, cpu and memory in its allocatable. The
   node part is stricter than Kueue (which only compares the flavor's labels and taints with the
   pod and lets kube-scheduler leave a pod Pending): the console refuses what could never run.
   It uses the simulated scheduler's filters, so the reasons are kube-scheduler's. With no nodes
   given (or check_nodes=False), the node part is skipped. If no flavor is left, refuse: field
   "gpu_type" when the type matched nothing, else the field of the first flavor's problem
   ("gpu_count", "cpu", "memory", "tolerations", or "queue" when the flavor's labels match no node).

3. Quota, per remaining flavor, for the total (per replica times replicas) and each resource, with
   Kueue's arithmetic for a ClusterQueue in a one-level cohort (pkg/cache: available and
   potentialAvailable). A queue keeps `guaranteed = nominal - lendingLimit` (0 without a
   lending limit) to itself; the rest of every member's nominal is the cohort's pool, and a
   member's usage above its guaranteed part is the pool's usage.
     available now = max(0, guaranteed - used) + (pool quota - pool usage),
                     the second term capped by (nominal - guaranteed) - max(0, used - guaranteed)
                     + borrowingLimit when the queue has a borrowing limit;
     most ever     = guaranteed + pool quota, capped by nominal + borrowingLimit.
   Without a cohort: available = nominal - used, most = nominal. Borrowing and lending limits
   are GPU-only here; cpu and memory borrow and lend without limits.
     - total > most in some resource: this flavor can never hold it (Kueue's "exceeds max quota").
     - total <= available in every resource: it fits now, borrowing whatever goes past nominal.
     - otherwise it must wait for quota in this flavor.
   The first flavor where it fits now wins, with or without borrowing: Kueue's default
   flavorFungibility `whenCanBorrow: MayStopSearch` (formerly `Borrow`) stops at the first flavor
   that fits, even by borrowing, rather than trying the next flavor for a fit without borrowing
   (that is `TryNextFlavor`, not modelled). A service with 0 GPUs is placed the same way, so it
   may land in a GPU flavor, as with Kueue when cpu and memory share the GPU's resource group.
   No preemption is modelled (Kueue's default policies are Never).
   - Some flavor fits now: "admit" there; but in a StrictFIFO queue with services waiting ahead
     it is "queue" instead (nobody overtakes the head; BestEffortFIFO lets it go first).
   - None fits now but some could: "queue" on the first flavor that could, naming the blocking
     resource ("waiting for 2 nvidia.com/gpu in flavor h100: 6 of 8 in use by 3 services"),
     position = queued_ahead + 1.
   - None could ever: "refuse", field "queue", with the most each flavor allows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from console.validators import parse_quantity
from deploy.clusters.base import NodeInfo

# The scheduler's filters are pure functions; its package also loads the simulated cluster's
# models, so importing this module needs Django's apps loaded (as in the app and under pytest).
from deploy.clusters.simulated.scheduler import (
    PodNeeds,
    matches_node_affinity,
    node_misfit,
    scheduler_message,
)
from deploy.gpus import PRODUCT_LABEL

GPU_RESOURCE = "nvidia.com/gpu"

Resource = Literal["gpu", "cpu_milli", "memory"]
# Checked and reported in this order; the Kubernetes name of each and the form field it maps to.
RESOURCES: tuple[Resource, ...] = ("gpu", "cpu_milli", "memory")
RESOURCE_NAMES: dict[Resource, str] = {"gpu": GPU_RESOURCE, "cpu_milli": "cpu", "memory": "memory"}
RESOURCE_FIELDS: dict[Resource, str] = {"gpu": "gpu_count", "cpu_milli": "cpu", "memory": "memory"}

ADMIT, QUEUE, REFUSE = "admit", "queue", "refuse"

# FlavorVerdict.outcome values.
FITS = "fits"  # fits now within the queue's nominal quota
BORROWS = "borrows"  # fits now by borrowing from the cohort
WAITS = "waits"  # could fit once quota is released
EXCEEDS_QUOTA = "exceeds_quota"  # more than the queue can ever hold in this flavor
WRONG_GPU_TYPE = "wrong_gpu_type"  # the flavor's GPUs are another product
NO_NODE = "no_node"  # no node of the flavor can hold one replica

_BINARY_SUFFIXES = (("Ei", 2**60), ("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10))


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


@dataclass(frozen=True)
class Amounts:
    """A bundle of the three covered resources, in integers so sums are exact."""

    gpu: int = 0  # nvidia.com/gpu
    cpu_milli: int = 0  # cpu in millicores
    memory: int = 0  # bytes

    @classmethod
    def parse(cls, *, gpu: int = 0, cpu: str | int | float = 0, memory: str | int | float = 0) -> Amounts:
        """From the service's fields: Amounts.parse(gpu=2, cpu="500m", memory="30Gi")."""
        return cls(
            gpu=int(gpu), cpu_milli=round(parse_quantity(cpu) * 1000), memory=round(parse_quantity(memory))
        )

    def get(self, resource: Resource) -> int:
        return int(getattr(self, resource))

    def __add__(self, other: Amounts) -> Amounts:
        return Amounts(self.gpu + other.gpu, self.cpu_milli + other.cpu_milli, self.memory + other.memory)

    def __sub__(self, other: Amounts) -> Amounts:
        return Amounts(self.gpu - other.gpu, self.cpu_milli - other.cpu_milli, self.memory - other.memory)

    def scaled(self, n: int) -> Amounts:
        return Amounts(self.gpu * n, self.cpu_milli * n, self.memory * n)

    def fits_within(self, other: Amounts) -> bool:
        return all(self.get(r) <= other.get(r) for r in RESOURCES)

    def is_zero(self) -> bool:
        return not any(self.get(r) for r in RESOURCES)

    @staticmethod
    def quantity(resource: Resource, value: int) -> str:
        """A value as Kubernetes writes it: 8 (GPUs), 8 or 500m (cpu), 64Gi (memory)."""
        if resource == "cpu_milli":
            return str(value // 1000) if value % 1000 == 0 else f"{value}m"
        if resource == "memory" and value:
            for suffix, factor in _BINARY_SUFFIXES:
                if value % factor == 0:
                    return f"{value // factor}{suffix}"
        return str(value)

    def text(self, resource: Resource) -> str:
        """One resource with its name: "2 nvidia.com/gpu", "8 cpu", "64Gi memory"."""
        return f"{self.quantity(resource, self.get(resource))} {RESOURCE_NAMES[resource]}"

    def describe(self) -> str:
        """The non-zero resources: "4 nvidia.com/gpu, 16 cpu and 128Gi memory" ("nothing" if none)."""
        parts = [self.text(r) for r in RESOURCES if self.get(r)]
        if not parts:
            return "nothing"
        return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"


@dataclass(frozen=True)
class FlavorQuota:
    """One flavor's slice of a queue (a ClusterQueue resourceGroups[].flavors[] entry)."""

    flavor: str
    node_labels: Mapping[str, str]  # the ResourceFlavor's nodeLabels; {} = every node
    tolerations: tuple[Mapping, ...]  # tolerations the flavor adds (for tainted nodes)
    nominal: Amounts
    used: Amounts  # what admitted services of this queue hold in this flavor
    services_using: int  # how many services hold `used`
    gpu_borrowing_limit: int | None = None  # None: may borrow without limit from the cohort
    gpu_lending_limit: int | None = None  # None: lends all its unused quota

    @property
    def gpu_product(self) -> str:
        return str(self.node_labels.get(PRODUCT_LABEL, ""))

    def borrowing_limit(self, resource: Resource) -> int | None:
        return self.gpu_borrowing_limit if resource == "gpu" else None

    def guaranteed(self, resource: Resource) -> int:
        """The part of the nominal quota the queue never lends (Kueue's guaranteedQuota)."""
        lend = self.gpu_lending_limit if resource == "gpu" else None
        return 0 if lend is None else max(0, self.nominal.get(resource) - lend)


@dataclass(frozen=True)
class QueueState:
    name: str
    cohort: str  # "" = no cohort: no borrowing
    flavors: tuple[FlavorQuota, ...]  # in order: Kueue tries flavors in this order
    strict_fifo: bool = False


@dataclass(frozen=True)
class TeamState:
    """The team's usage, without the service being checked."""

    name: str
    max_gpus: int | None
    max_services: int | None
    gpus_used: int
    services_used: int


@dataclass(frozen=True)
class Request:
    per_replica: Amounts
    replicas: int
    gpu_type: str = ""  # nvidia.com/gpu.product wanted; "" = any
    tolerations: tuple[Mapping, ...] = ()

    @property
    def total(self) -> Amounts:
        return self.per_replica.scaled(self.replicas)


@dataclass(frozen=True)
class FlavorVerdict:
    """One flavor as the check saw it, for the UI."""

    flavor: str
    outcome: str  # FITS, BORROWS, WAITS, EXCEEDS_QUOTA, WRONG_GPU_TYPE or NO_NODE
    free: Amounts  # what the queue may take now here (own unused quota + what the cohort lends now)
    most: Amounts  # the most the queue can ever hold here (nominal + the most it may borrow)
    reason: str = ""  # why it does not fit ("" when it does)


@dataclass(frozen=True)
class Decision:
    verdict: str  # ADMIT | QUEUE | REFUSE
    flavor: str = ""  # the flavor assigned (admit) or the one it waits for (queue)
    borrowed: Amounts = Amounts()  # on admit: the part of the service above the queue's nominal
    # On refuse: the input to show the error next to: "team", "queue", "gpu_type", "gpu_count",
    # "cpu", "memory" or "tolerations" (the service's field names).
    field: str = ""
    message: str = ""  # one sentence a person can act on, with the numbers
    holds: str = ""  # on admit/queue, e.g. 4 H100 GPUs for 2 replicas (see _holds)
    position: int | None = None  # on queue: 1-based position (queued_ahead + 1)
    flavors: tuple[FlavorVerdict, ...] = ()


# --- quota arithmetic ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Capacity:
    available: int  # what the queue may still take now
    most: int  # what it could hold with nothing else running
    pool_quota: int  # the cohort's lendable quota in this flavor (0 without a cohort)
    pool_used: int  # how much of it is in use
    borrow_capped: bool  # the queue's borrowing limit, not the pool, bounds `available`


def _capacity(queue: QueueState, fq: FlavorQuota, siblings: Sequence[FlavorQuota], r: Resource) -> _Capacity:
    nominal, used = fq.nominal.get(r), fq.used.get(r)
    if not queue.cohort:
        return _Capacity(nominal - used, nominal, 0, 0, borrow_capped=False)
    members = (fq, *siblings)
    pool_quota = sum(m.nominal.get(r) - m.guaranteed(r) for m in members)
    pool_used = sum(max(0, m.used.get(r) - m.guaranteed(r)) for m in members)
    guaranteed = fq.guaranteed(r)
    from_pool = pool_quota - pool_used
    most = guaranteed + pool_quota
    limit = fq.borrowing_limit(r)
    capped = False
    if limit is not None:
        # What it stores in the pool, minus what it already uses there, plus what it may borrow.
        with_limit = (nominal - guaranteed) - max(0, used - guaranteed) + limit
        capped = with_limit < from_pool
        from_pool = min(from_pool, with_limit)
        most = min(most, nominal + limit)
    return _Capacity(max(0, guaranteed - used) + from_pool, most, pool_quota, pool_used, capped)


# --- nodes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _NodeProblem:
    reason: str
    field: str


def _node_kind(fq: FlavorQuota, request: Request) -> str:
    product = fq.gpu_product or request.gpu_type
    return f"{product} node" if product else f"node in flavor {fq.flavor}"


def _largest(nodes: Sequence[NodeInfo], r: Resource) -> int:
    def amount(node: NodeInfo) -> int:
        value = parse_quantity(node.allocatable.get(RESOURCE_NAMES[r], "0"))
        return round(value * 1000) if r == "cpu_milli" else round(value)

    return max((amount(n) for n in nodes), default=0)


def _node_problem(fq: FlavorQuota, request: Request, nodes: Sequence[NodeInfo]) -> _NodeProblem | None:
    """Why no node of the flavor can hold one replica (None: some node can)."""
    per = request.per_replica
    selector = dict(fq.node_labels)
    if request.gpu_type:
        # The service's pods select the product themselves, whatever the flavor's labels say.
        selector[PRODUCT_LABEL] = request.gpu_type
    tolerations = (*fq.tolerations, *request.tolerations)
    requests = {GPU_RESOURCE: float(per.gpu), "cpu": per.cpu_milli / 1000, "memory": float(per.memory)}
    needs = PodNeeds(requests=requests, node_selector=selector, tolerations=tolerations)

    if not nodes:
        return _NodeProblem("the cluster has no nodes", "queue")
    labelled = [n for n in nodes if matches_node_affinity(n, needs)]
    if not labelled:
        flavor_nodes = [n for n in nodes if matches_node_affinity(n, PodNeeds({}, fq.node_labels))]
        if request.gpu_type and flavor_nodes:
            return _NodeProblem(f"flavor {fq.flavor} has no {request.gpu_type} node", "gpu_type")
        labels = ", ".join(f"{k}={v}" for k, v in sorted(fq.node_labels.items()))
        return _NodeProblem(f"no node carries the labels of flavor {fq.flavor} ({labels})", "queue")

    # Taints first, as kube-scheduler filters them: with no requests only taints can fail.
    untainted = PodNeeds({}, selector, tolerations=tolerations)
    misfits = {n.name: node_misfit(n, untainted, {}) for n in labelled}
    tolerated = [n for n in labelled if not misfits[n.name]]
    if not tolerated:
        reasons = [reason for n in labelled for reason in misfits[n.name]]
        scheduler = scheduler_message(len(labelled), reasons).rstrip(".")
        return _NodeProblem(f"no node of flavor {fq.flavor} accepts the service ({scheduler})", "tolerations")

    if any(not node_misfit(n, needs, {}) for n in tolerated):
        return None
    for r in RESOURCES:
        largest = _largest(tolerated, r)
        if per.get(r) > largest:
            kind = _node_kind(fq, request)
            most = Amounts.quantity(r, largest)
            return _NodeProblem(f"no {kind} has {per.text(r)} (the largest has {most})", RESOURCE_FIELDS[r])
    # Each resource fits on some node, but no node has them all at once.
    reasons = [reason for n in tolerated for reason in node_misfit(n, needs, {})]
    first = next((r for r in RESOURCES if f"Insufficient {RESOURCE_NAMES[r]}" in reasons), "gpu")
    scheduler = scheduler_message(len(tolerated), reasons).rstrip(".")
    return _NodeProblem(
        f"no {_node_kind(fq, request)} has room for one replica ({scheduler})", RESOURCE_FIELDS[first]
    )


# --- the check ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Evaluation:
    quota: FlavorQuota
    verdict: FlavorVerdict
    field: str = ""  # for node and type problems
    borrowed: Amounts = Amounts()
    blocking: Resource | None = None  # for WAITS and EXCEEDS_QUOTA
    caps: Mapping[Resource, _Capacity] = dataclasses.field(default_factory=dict)


def _evaluate(
    request: Request,
    queue: QueueState,
    fq: FlavorQuota,
    siblings: Sequence[FlavorQuota],
    nodes: Sequence[NodeInfo] | None,  # None: no node check
) -> _Evaluation:
    caps = {r: _capacity(queue, fq, siblings, r) for r in RESOURCES}
    free = Amounts(**{r: max(0, caps[r].available) for r in RESOURCES})
    most = Amounts(**{r: caps[r].most for r in RESOURCES})

    def verdict(outcome: str, reason: str = "") -> FlavorVerdict:
        return FlavorVerdict(fq.flavor, outcome, free, most, reason)

    if request.gpu_type and fq.gpu_product and fq.gpu_product != request.gpu_type:
        reason = f"flavor {fq.flavor} has {fq.gpu_product} GPUs"
        return _Evaluation(fq, verdict(WRONG_GPU_TYPE, reason), field="gpu_type", caps=caps)
    if nodes is not None and (problem := _node_problem(fq, request, nodes)):
        return _Evaluation(fq, verdict(NO_NODE, problem.reason), field=problem.field, caps=caps)

    total = request.total
    # A resource the service does not request always fits, even where the queue is over quota.
    wanted = [r for r in RESOURCES if total.get(r) > 0]
    if too_big := next((r for r in wanted if total.get(r) > caps[r].most), None):
        most_ever = Amounts.quantity(too_big, caps[too_big].most)
        reason = f"{total.text(too_big)} is more than the {most_ever} it can ever hold"
        return _Evaluation(fq, verdict(EXCEEDS_QUOTA, reason), blocking=too_big, caps=caps)
    if short := next((r for r in wanted if total.get(r) > caps[r].available), None):
        reason = _waiting_message(queue, fq, total, short, caps[short])
        return _Evaluation(fq, verdict(WAITS, reason), blocking=short, caps=caps)
    borrowed = Amounts(
        **{
            r: max(0, fq.used.get(r) + total.get(r) - fq.nominal.get(r))
            - max(0, fq.used.get(r) - fq.nominal.get(r))
            for r in RESOURCES
        }
    )
    return _Evaluation(fq, verdict(FITS if borrowed.is_zero() else BORROWS), borrowed=borrowed, caps=caps)


def _waiting_message(queue: QueueState, fq: FlavorQuota, total: Amounts, r: Resource, cap: _Capacity) -> str:
    q = Amounts.quantity
    message = (
        f"waiting for {Amounts(**{r: total.get(r) - cap.available}).text(r)} in flavor {fq.flavor}: "
        f"{q(r, fq.used.get(r))} of {q(r, fq.nominal.get(r))} in use "
        f"by {_plural(fq.services_using, 'service')}"
    )
    if queue.cohort:
        message += f"; cohort {queue.cohort} has {q(r, cap.pool_used)} of {q(r, cap.pool_quota)} in use"
        if cap.borrow_capped:
            message += f" and the queue may borrow at most {q(r, fq.borrowing_limit(r) or 0)}"
    return message


def _holds(request: Request, fq: FlavorQuota) -> str:
    replicas = _plural(request.replicas, "replica")
    total = request.total
    if total.gpu:
        kind = fq.gpu_product or request.gpu_type or f"GPU (flavor {fq.flavor})"
        return f"{total.gpu} × {kind} for {replicas}"
    return f"{total.describe()} for {replicas}"


def _team_problem(request: Request, team: TeamState) -> str:
    problems = []
    if team.max_services is not None and team.services_used + 1 > team.max_services:
        problems.append(
            f"team {team.name} has {team.services_used} of its {_plural(team.max_services, 'service')}; "
            "stop or delete one first"
        )
    gpus = request.total.gpu
    if team.max_gpus is not None and gpus and team.gpus_used + gpus > team.max_gpus:
        problems.append(
            f"team {team.name} holds {team.gpus_used} of its {team.max_gpus} GPUs; this service needs "
            f"{gpus} ({_plural(request.replicas, 'replica')} × {request.per_replica.gpu})"
        )
    return "; ".join(problems)


def _no_flavor(request: Request, queue: QueueState, evaluations: Sequence[_Evaluation]) -> Decision:
    flavors = tuple(e.verdict for e in evaluations)
    fields = [e.field for e in evaluations]
    if all(e.verdict.outcome == WRONG_GPU_TYPE for e in evaluations):
        offers = ", ".join(f"{fq.flavor} ({fq.gpu_product})" for fq in queue.flavors)
        message = f"queue {queue.name} has no {request.gpu_type} flavor; it offers {offers}"
        return Decision(REFUSE, field="gpu_type", message=message, flavors=flavors)
    field_ = (
        "gpu_type" if all(f == "gpu_type" for f in fields) else next(f for f in fields if f != "gpu_type")
    )
    reasons = "; ".join(e.verdict.reason for e in evaluations)
    message = f"no flavor of queue {queue.name} can hold one replica: {reasons}"
    return Decision(REFUSE, field=field_, message=message, flavors=flavors)


def _exceeds(request: Request, queue: QueueState, evaluations: Sequence[_Evaluation]) -> str:
    """Why no flavor can ever hold it, per blocking resource:
    needs 16 nvidia.com/gpu; queue q has at most 8 in flavor h100 (nominal 8, borrowing 0)"""
    q = Amounts.quantity
    parts = []
    for r in RESOURCES:
        limits = [
            f"{q(r, e.caps[r].most)} in flavor {e.quota.flavor} (nominal {q(r, e.quota.nominal.get(r))}, "
            f"borrowing {q(r, e.caps[r].most - e.quota.nominal.get(r))})"
            for e in evaluations
            if e.blocking == r
        ]
        if limits:
            parts.append(
                f"needs {request.total.text(r)}; queue {queue.name} has at most {' and '.join(limits)}"
            )
    return "; ".join(parts)


def check_admission(
    request: Request,
    queue: QueueState,
    *,
    cohort: Sequence[QueueState] = (),
    team: TeamState | None = None,
    nodes: Iterable[NodeInfo] = (),
    queued_ahead: int = 0,
    check_nodes: bool | None = None,
) -> Decision:
    """Admit, queue or refuse `request` in `queue` (see the module docstring for the rules).

    `cohort`: the other queues of the queue's cohort (the queue itself and queues of another
    cohort are ignored). `queued_ahead`: services waiting in this queue that go before this one.
    `check_nodes`: whether a flavor needs a node that can hold one replica; None (the default)
    checks when `nodes` is not empty, True checks even an empty cluster, False never checks
    (the nodes could not be read: the scheduler will tell).
    """
    if request.replicas < 0:
        raise ValueError("replicas must be >= 0")
    if team is not None and (problem := _team_problem(request, team)):
        return Decision(REFUSE, field="team", message=problem)
    if not queue.flavors:
        return Decision(REFUSE, field="queue", message=f"queue {queue.name} has no quota in any flavor")

    nodes = list(nodes)
    if check_nodes is None:
        check_nodes = bool(nodes)
    siblings = [s for s in cohort if queue.cohort and s.cohort == queue.cohort and s.name != queue.name]
    evaluations = [
        _evaluate(
            request,
            queue,
            fq,
            [f for s in siblings for f in s.flavors if f.flavor == fq.flavor],
            nodes if check_nodes else None,
        )
        for fq in queue.flavors
    ]
    flavors = tuple(e.verdict for e in evaluations)
    candidates = [e for e in evaluations if e.verdict.outcome not in (WRONG_GPU_TYPE, NO_NODE)]
    if not candidates:
        return _no_flavor(request, queue, evaluations)

    total = request.total
    # MayStopSearch: the first flavor that fits now, borrowing or not.
    chosen = next((e for e in candidates if e.verdict.outcome in (FITS, BORROWS)), None)
    if chosen is not None:
        fq, name = chosen.quota, chosen.quota.flavor
        holds = _holds(request, fq)
        if queue.strict_fifo and queued_ahead > 0:
            message = (
                f"waiting behind {_plural(queued_ahead, 'service')} in strict FIFO queue {queue.name} "
                f"(it would fit in flavor {name} now)"
            )
            return Decision(
                QUEUE, flavor=name, message=message, holds=holds, position=queued_ahead + 1, flavors=flavors
            )
        if chosen.borrowed.is_zero():
            r = "gpu" if total.gpu else "cpu_milli"
            after = Amounts.quantity(r, fq.used.get(r) + total.get(r))
            nominal = Amounts.quantity(r, fq.nominal.get(r))
            message = (
                f"fits in flavor {name} of queue {queue.name} "
                f"({after} of {nominal} {RESOURCE_NAMES[r]} in use with it)"
            )
        else:
            message = (
                f"fits in flavor {name} of queue {queue.name} by borrowing "
                f"{chosen.borrowed.describe()} from cohort {queue.cohort}"
            )
        return Decision(
            ADMIT, flavor=name, borrowed=chosen.borrowed, message=message, holds=holds, flavors=flavors
        )

    waiting = next((e for e in candidates if e.verdict.outcome == WAITS), None)
    if waiting is not None:
        return Decision(
            QUEUE,
            flavor=waiting.quota.flavor,
            message=waiting.verdict.reason,
            holds=_holds(request, waiting.quota),
            position=queued_ahead + 1,
            flavors=flavors,
        )
    return Decision(REFUSE, field="queue", message=_exceeds(request, queue, candidates), flavors=flavors)
