"""The console's admission check (queues/admission.py): pure, no database.

One table of cases (the issue's five, then the rules around them), over a small cluster: two
H100 nodes with 8 GPUs, one A100 node with 4, one tainted L40S node and a CPU node.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pytest

from deploy.clusters.base import NodeInfo
from queues.admission import (
    BORROWS,
    FITS,
    WAITS,
    Amounts,
    Decision,
    FlavorQuota,
    QueueState,
    Request,
    TeamState,
    check_admission,
)

H100, A100, L40S = "NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB", "NVIDIA-L40S"
PRODUCT = "nvidia.com/gpu.product"
GI = 2**30
L40S_TAINT = {"key": "dedicated", "value": "l40s", "effect": "NoSchedule"}
L40S_TOLERATION = {"key": "dedicated", "operator": "Equal", "value": "l40s", "effect": "NoSchedule"}


def node(name: str, product: str, gpus: int, cpu: str, memory: str, taints=()) -> NodeInfo:
    labels = {PRODUCT: product} if product else {}
    allocatable = {"cpu": cpu, "memory": memory, "pods": "110"}
    if gpus:
        allocatable["nvidia.com/gpu"] = str(gpus)
    return NodeInfo(name=name, labels=labels, allocatable=allocatable, taints=tuple(taints))


NODES = (
    node("h100-1", H100, 8, "64", "512Gi"),
    node("h100-2", H100, 8, "64", "512Gi"),
    node("a100-1", A100, 4, "32", "256Gi"),
    node("l40s-1", L40S, 4, "32", "256Gi", taints=[L40S_TAINT]),
    node("cpu-1", "", 0, "16", "64Gi"),
)


def amounts(gpu: int = 0, cpu: str = "0", memory: str = "0") -> Amounts:
    return Amounts.parse(gpu=gpu, cpu=cpu, memory=memory)


def flavor(
    name: str,
    product: str = "",
    *,
    nominal: Amounts | None = None,
    used: Amounts | None = None,
    services: int = 0,
    tolerations: tuple[Mapping, ...] = (),
    borrowing: int | None = None,
    lending: int | None = None,
) -> FlavorQuota:
    return FlavorQuota(
        flavor=name,
        node_labels={PRODUCT: product} if product else {},
        tolerations=tolerations,
        nominal=nominal if nominal is not None else amounts(8, "64", "512Gi"),
        used=used if used is not None else Amounts(),
        services_using=services,
        gpu_borrowing_limit=borrowing,
        gpu_lending_limit=lending,
    )


def h100(**kwargs) -> FlavorQuota:
    return flavor("h100", H100, **kwargs)


def a100(**kwargs) -> FlavorQuota:
    return flavor("a100", A100, nominal=amounts(4, "32", "256Gi"), **kwargs)


def queue(name: str, *flavors: FlavorQuota, cohort: str = "", strict_fifo: bool = False) -> QueueState:
    return QueueState(name=name, cohort=cohort, flavors=flavors, strict_fifo=strict_fifo)


def request(
    gpu: int = 2,
    replicas: int = 2,
    *,
    cpu: str = "8",
    memory: str = "64Gi",
    gpu_type: str = "",
    tolerations=(),
) -> Request:
    return Request(amounts(gpu, cpu, memory), replicas, gpu_type=gpu_type, tolerations=tuple(tolerations))


FULL_H100 = h100(used=amounts(8, "32", "256Gi"), services=4)
FREE_SIBLING = queue("team-b", h100(), cohort="ml")


@dataclass(frozen=True)
class Case:
    request: Request
    queue: QueueState
    verdict: str
    flavor: str = ""
    field: str = ""
    message: str | None = None  # None: not asserted
    cohort: tuple[QueueState, ...] = ()
    team: TeamState | None = None
    ahead: int = 0
    nodes: tuple[NodeInfo, ...] = NODES
    holds: str | None = None
    borrowed: Amounts | None = None
    position: int | None = None


CASES = [
    # --- the table ---
    pytest.param(
        Case(
            request(),
            queue("gpu-h100", h100(used=amounts(2, "8", "64Gi"), services=1)),
            "admit",
            "h100",
            message="fits in flavor h100 of queue gpu-h100 (6 of 8 nvidia.com/gpu in use with it)",
            holds=f"4 × {H100} for 2 replicas",
            borrowed=Amounts(),
        ),
        id="fits",
    ),
    pytest.param(
        Case(
            request(),
            queue("gpu-h100", h100()),
            "refuse",
            field="team",
            message="team ml holds 6 of its 8 GPUs; this service needs 4 (2 replicas × 2)",
            team=TeamState("ml", max_gpus=8, max_services=None, gpus_used=6, services_used=2),
        ),
        id="exceeds-team-gpus",
    ),
    pytest.param(
        Case(
            request(),
            queue("gpu-h100", h100()),
            "refuse",
            field="team",
            message="team ml has 2 of its 2 services; stop or delete one first",
            team=TeamState("ml", max_gpus=None, max_services=2, gpus_used=0, services_used=2),
        ),
        id="exceeds-team-services",
    ),
    pytest.param(
        Case(
            request(8, 2),
            queue("gpu-h100", h100()),
            "refuse",
            field="queue",
            message="needs 16 nvidia.com/gpu; queue gpu-h100 has at most 8 in flavor h100 "
            "(nominal 8, borrowing 0)",
        ),
        id="exceeds-queue-quota",
    ),
    pytest.param(
        Case(
            request(),
            queue("team-a", FULL_H100, cohort="ml"),
            "admit",
            "h100",
            message="fits in flavor h100 of queue team-a by borrowing 4 nvidia.com/gpu from cohort ml",
            cohort=(FREE_SIBLING,),
            borrowed=Amounts(gpu=4),
        ),
        id="fits-only-by-borrowing",
    ),
    pytest.param(
        Case(
            request(gpu_type=A100),
            queue("gpu-h100", h100()),
            "refuse",
            field="gpu_type",
            message=f"queue gpu-h100 has no {A100} flavor; it offers h100 ({H100})",
        ),
        id="no-flavor-of-the-gpu-type",
    ),
    # --- waiting and queue order ---
    pytest.param(
        Case(
            request(),
            queue("gpu-h100", h100(used=amounts(6, "24", "192Gi"), services=3)),
            "queue",
            "h100",
            message="waiting for 2 nvidia.com/gpu in flavor h100: 6 of 8 in use by 3 services",
            holds=f"4 × {H100} for 2 replicas",
            ahead=1,
            position=2,
        ),
        id="fits-but-must-wait",
    ),
    pytest.param(
        Case(
            request(),
            queue("gpu-h100", h100(), strict_fifo=True),
            "queue",
            "h100",
            message="waiting behind 2 services in strict FIFO queue gpu-h100 "
            "(it would fit in flavor h100 now)",
            ahead=2,
            position=3,
        ),
        id="strict-fifo-someone-ahead",
    ),
    pytest.param(
        Case(request(), queue("gpu-h100", h100()), "admit", "h100", ahead=2),
        id="best-effort-fifo-lets-a-fitting-service-go-first",
    ),
    # --- nodes: taints, sizes, types ---
    pytest.param(
        Case(
            request(1, 1),
            queue("gpu-l40s", flavor("l40s", L40S)),
            "refuse",
            field="tolerations",
            message="no flavor of queue gpu-l40s can hold one replica: "
            "no node of flavor l40s accepts the service "
            "(0/1 nodes are available: 1 node(s) had untolerated taint {dedicated: l40s})",
        ),
        id="tainted-flavor-without-toleration",
    ),
    pytest.param(
        Case(
            request(1, 1),
            queue("gpu-l40s", flavor("l40s", L40S, tolerations=(L40S_TOLERATION,))),
            "admit",
            "l40s",
        ),
        id="tainted-flavor-tolerated-by-the-flavor",
    ),
    pytest.param(
        Case(
            request(1, 1, tolerations=[L40S_TOLERATION]),
            queue("gpu-l40s", flavor("l40s", L40S)),
            "admit",
            "l40s",
        ),
        id="tainted-flavor-tolerated-by-the-service",
    ),
    pytest.param(
        Case(
            request(16, 1),
            queue("gpu-h100", h100(nominal=amounts(16, "64", "512Gi"))),
            "refuse",
            field="gpu_count",
            message=f"no flavor of queue gpu-h100 can hold one replica: no {H100} node has 16 nvidia.com/gpu "
            "(the largest has 8)",
        ),
        id="no-node-has-the-gpus-of-one-replica",
    ),
    pytest.param(
        Case(
            request(1, 1, gpu_type="NVIDIA-L4"),
            queue("any", flavor("default")),
            "refuse",
            field="gpu_type",
            message="no flavor of queue any can hold one replica: flavor default has no NVIDIA-L4 node",
        ),
        id="generic-flavor-but-no-node-of-the-gpu-type",
    ),
    pytest.param(
        Case(
            request(16, 1),
            queue("gpu-h100", h100(nominal=amounts(16, "64", "512Gi"))),
            "admit",
            "h100",
            nodes=(),
        ),
        id="no-nodes-given-quota-only",
    ),
    # --- flavors in order ---
    pytest.param(
        Case(
            request(1, 2),
            queue("gpu-any", FULL_H100, a100()),
            "admit",
            "a100",
            holds=f"2 × {A100} for 2 replicas",
        ),
        id="first-flavor-full-second-fits",
    ),
    pytest.param(
        Case(
            request(1, 2),
            queue("team-a", FULL_H100, a100(), cohort="ml"),
            "admit",
            "h100",
            cohort=(FREE_SIBLING,),
            borrowed=Amounts(gpu=2),
        ),
        id="may-stop-search-borrows-in-the-first-flavor",
    ),
    pytest.param(
        Case(
            request(4, 3),
            queue("gpu-any", h100(), a100()),
            "refuse",
            field="queue",
            message="needs 12 nvidia.com/gpu; queue gpu-any has at most "
            "8 in flavor h100 (nominal 8, borrowing 0) and 4 in flavor a100 (nominal 4, borrowing 0)",
        ),
        id="exceeds-every-flavor",
    ),
    # --- borrowing and lending limits ---
    pytest.param(
        Case(
            request(),
            queue("team-a", h100(used=amounts(8, "32", "256Gi"), services=4, borrowing=2), cohort="ml"),
            "queue",
            "h100",
            message="waiting for 2 nvidia.com/gpu in flavor h100: 8 of 8 in use by 4 services; "
            "cohort ml has 8 of 16 in use and the queue may borrow at most 2",
            cohort=(FREE_SIBLING,),
            position=1,
        ),
        id="borrowing-capped-by-borrowing-limit",
    ),
    pytest.param(
        Case(
            request(6, 2),
            queue("team-a", h100(borrowing=2), cohort="ml"),
            "refuse",
            field="queue",
            message="needs 12 nvidia.com/gpu; queue team-a has at most 10 in flavor h100 "
            "(nominal 8, borrowing 2)",
            cohort=(FREE_SIBLING,),
        ),
        id="borrowing-limit-caps-the-most-ever",
    ),
    pytest.param(
        Case(
            request(),
            queue("team-a", FULL_H100, cohort="ml"),
            "queue",
            "h100",
            message="waiting for 2 nvidia.com/gpu in flavor h100: 8 of 8 in use by 4 services; "
            "cohort ml has 8 of 10 in use",
            cohort=(queue("team-b", h100(lending=2), cohort="ml"),),
        ),
        id="sibling-lending-limit",
    ),
    pytest.param(
        Case(
            request(1, 2),
            queue("team-a", FULL_H100, cohort="ml"),
            "admit",
            "h100",
            cohort=(queue("team-b", h100(lending=2), cohort="ml"),),
            borrowed=Amounts(gpu=2),
        ),
        id="sibling-lending-limit-room-for-two",
    ),
    pytest.param(
        Case(
            request(),
            queue("team-a", FULL_H100),
            "queue",
            "h100",
            message="waiting for 4 nvidia.com/gpu in flavor h100: 8 of 8 in use by 4 services",
            cohort=(FREE_SIBLING,),
        ),
        id="no-cohort-no-borrowing",
    ),
    # --- cpu and memory ---
    pytest.param(
        Case(
            request(1, 1, memory="128Gi"),
            queue("gpu-h100", h100(used=amounts(2, "8", "448Gi"), services=2)),
            "queue",
            "h100",
            message="waiting for 64Gi memory in flavor h100: 448Gi of 512Gi in use by 2 services",
        ),
        id="memory-blocks",
    ),
    pytest.param(
        Case(
            request(1, 1, memory="600Gi"),
            queue("gpu-h100", h100()),
            "refuse",
            field="memory",
            message=f"no flavor of queue gpu-h100 can hold one replica: no {H100} node has 600Gi memory "
            "(the largest has 512Gi)",
        ),
        id="memory-of-one-replica-fits-no-node",
    ),
    pytest.param(
        Case(
            request(0, 1, cpu="4", memory="16Gi"),
            queue("cpu", flavor("default", nominal=amounts(0, "16", "64Gi"))),
            "admit",
            "default",
            message="fits in flavor default of queue cpu (4 of 16 cpu in use with it)",
            holds="4 cpu and 16Gi memory for 1 replica",
        ),
        id="zero-gpus",
    ),
    pytest.param(
        Case(
            request(0, 1, cpu="4", memory="16Gi"),
            queue("mixed", FULL_H100, flavor("default", nominal=amounts(0, "16", "64Gi"))),
            "admit",
            "h100",
        ),
        id="zero-gpus-take-the-first-flavor-with-cpu-and-memory-like-kueue",
    ),
]


@pytest.mark.parametrize("case", CASES)
def test_admission_table(case: Case) -> None:
    decision = check_admission(
        case.request,
        case.queue,
        cohort=case.cohort,
        team=case.team,
        nodes=case.nodes,
        queued_ahead=case.ahead,
    )
    assert (decision.verdict, decision.flavor, decision.field) == (case.verdict, case.flavor, case.field), (
        decision
    )
    if case.message is not None:
        assert decision.message == case.message
    if case.holds is not None:
        assert decision.holds == case.holds
    if case.borrowed is not None:
        assert decision.borrowed == case.borrowed
    if case.position is not None:
        assert decision.position == case.position
    if decision.verdict != "queue":
        assert decision.position is None


def test_flavor_details_for_the_ui() -> None:
    decision = check_admission(request(1, 2), queue("gpu-any", FULL_H100, a100()), nodes=NODES)
    first, second = decision.flavors
    assert (first.flavor, first.outcome, first.free.gpu, first.most.gpu) == ("h100", WAITS, 0, 8)
    assert first.reason == "waiting for 2 nvidia.com/gpu in flavor h100: 8 of 8 in use by 4 services"
    assert (second.flavor, second.outcome, second.free, second.reason) == (
        "a100",
        FITS,
        amounts(4, "32", "256Gi"),
        "",
    )


def test_borrowing_flavor_is_marked() -> None:
    decision = check_admission(request(), queue("team-a", FULL_H100, cohort="ml"), cohort=(FREE_SIBLING,))
    assert decision.flavors[0].outcome == BORROWS
    assert decision.flavors[0].free.gpu == 8  # the sibling's unused 8


def test_the_queue_itself_and_other_cohorts_are_not_lenders() -> None:
    own = queue("team-a", FULL_H100, cohort="ml")
    elsewhere = queue("team-c", h100(), cohort="other")
    decision: Decision = check_admission(request(), own, cohort=(own, elsewhere))
    assert decision.verdict == "queue"
    assert decision.message == (
        "waiting for 4 nvidia.com/gpu in flavor h100: 8 of 8 in use by 4 services; "
        "cohort ml has 8 of 8 in use"
    )


def test_a_sibling_borrowing_our_quota_makes_us_wait() -> None:
    # Kueue does not reserve unused nominal quota: what a sibling borrowed must be released first.
    borrower = queue("team-b", h100(used=amounts(14, "8", "64Gi"), services=3), cohort="ml")
    decision = check_admission(request(), queue("team-a", h100(), cohort="ml"), cohort=(borrower,))
    assert decision.verdict == "queue"
    assert decision.message == (
        "waiting for 2 nvidia.com/gpu in flavor h100: 0 of 8 in use by 0 services; "
        "cohort ml has 14 of 16 in use"
    )


def test_an_empty_cluster_fits_nothing_when_asked_to_check() -> None:
    decision = check_admission(request(), queue("gpu-h100", h100()), nodes=(), check_nodes=True)
    assert (decision.verdict, decision.field) == ("refuse", "queue")
    assert decision.message == "no flavor of queue gpu-h100 can hold one replica: the cluster has no nodes"


def test_unreadable_nodes_skip_the_node_check() -> None:
    decision = check_admission(
        request(16, 1), queue("q", h100(nominal=amounts(16, "64", "512Gi"))), nodes=NODES, check_nodes=False
    )
    assert decision.verdict == "admit"


def test_a_queue_without_quota_refuses() -> None:
    decision = check_admission(request(), queue("empty"))
    assert (decision.verdict, decision.field, decision.message) == (
        "refuse",
        "queue",
        "queue empty has no quota in any flavor",
    )


def test_amounts() -> None:
    a = Amounts.parse(gpu=2, cpu="500m", memory="30Gi")
    assert a == Amounts(gpu=2, cpu_milli=500, memory=30 * GI)
    assert (a + a).scaled(2) == Amounts(8, 2000, 120 * GI)
    assert (a + a) - a == a
    assert a.fits_within(Amounts(2, 500, 30 * GI))
    assert not a.fits_within(Amounts(2, 499, 64 * GI))
    assert [a.text(r) for r in ("gpu", "cpu_milli", "memory")] == [
        "2 nvidia.com/gpu",
        "500m cpu",
        "30Gi memory",
    ]
    assert Amounts(cpu_milli=8000, memory=64 * GI).describe() == "8 cpu and 64Gi memory"
    assert Amounts(4, 16000, 128 * GI).describe() == "4 nvidia.com/gpu, 16 cpu and 128Gi memory"
    assert Amounts().describe() == "nothing"
    assert Amounts.quantity("memory", 1536 * 2**20) == "1536Mi"
    assert Amounts.quantity("memory", 1000) == "1000"
