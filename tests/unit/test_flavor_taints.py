"""Flavor node taints: rendered into the Kueue ResourceFlavor, and a service placed on the flavor
tolerates them in its pods unless its own tolerations already do. Also the namespaces the console
labels for the ClusterQueue's namespaceSelector, and the usage chart's markup."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from console.charts import gpu_usage_svg
from deploy.kueue import NAMESPACE_LABEL, render_flavor, render_namespaces
from deploy.render import render_service
from deploy.spec import ModelVolume, ServiceSpec, Toleration
from queues.kueue import flavor_spec
from queues.models import ResourceFlavor, node_taint_problems, tolerates
from tests.unit.test_kueue_render import assert_valid

TAINTS = [
    {"key": "dedicated", "value": "h100", "effect": "NoSchedule"},
    {"key": "example.com/spot", "effect": "NoExecute"},
]


def h100(**fields) -> ResourceFlavor:
    return ResourceFlavor(
        name="h100", node_labels={"nvidia.com/gpu.product": "NVIDIA-H100"}, node_taints=TAINTS, **fields
    )


def test_taints_render_into_a_valid_kueue_resource_flavor() -> None:
    obj = render_flavor(flavor_spec(h100()))
    assert obj["spec"]["nodeTaints"] == [
        {"key": "dedicated", "value": "h100", "effect": "NoSchedule"},
        {"key": "example.com/spot", "effect": "NoExecute"},
    ]
    assert_valid(obj)


def test_a_pod_on_the_flavor_tolerates_each_taint_once() -> None:
    own = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert h100(tolerations=own).pod_tolerations() == [
        *own,
        {"key": "dedicated", "operator": "Equal", "value": "h100", "effect": "NoSchedule"},
        {"key": "example.com/spot", "operator": "Exists", "effect": "NoExecute"},
    ]
    # The service's own toleration of one taint (any value, any effect) covers it: not added twice.
    service_has = [{"key": "example.com/spot", "operator": "Exists"}]
    assert h100().pod_tolerations(service_has) == [
        {"key": "dedicated", "operator": "Equal", "value": "h100", "effect": "NoSchedule"}
    ]
    # A toleration of everything (no key, Exists) covers every taint.
    assert h100().pod_tolerations([{"operator": "Exists"}]) == []


@pytest.mark.parametrize(
    ("toleration", "expected"),
    [
        ({"key": "dedicated", "operator": "Equal", "value": "h100", "effect": "NoSchedule"}, True),
        ({"key": "dedicated", "operator": "Equal", "value": "a100", "effect": "NoSchedule"}, False),
        ({"key": "dedicated", "operator": "Exists"}, True),
        ({"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}, False),
        ({"key": "other", "operator": "Exists"}, False),
        ({"operator": "Exists"}, True),
        ({"operator": "Exists", "effect": "NoExecute"}, False),
    ],
)
def test_tolerates_follows_kubernetes(toleration: dict, expected: bool) -> None:
    assert tolerates(toleration, TAINTS[0]) is expected


def test_the_rendered_pod_carries_the_taint_tolerations() -> None:
    tolerations = tuple(map(Toleration.from_json, h100().pod_tolerations()))
    spec = ServiceSpec(
        name="chat",
        namespace="inference",
        runtime="vllm",
        image="vllm/vllm-openai:v0.11.0",
        model_volume=ModelVolume(kind="pvc", claim_name="models"),
        model_path="m",
        served_model_name="m",
        flavor_node_labels=(("nvidia.com/gpu.product", "NVIDIA-H100"),),
        flavor_tolerations=tolerations,
    )
    deployment = next(obj for obj in render_service(spec) if obj["kind"] == "Deployment")
    pod_tolerations = deployment["spec"]["template"]["spec"]["tolerations"]
    assert {
        "key": "dedicated",
        "operator": "Equal",
        "value": "h100",
        "effect": "NoSchedule",
    } in pod_tolerations
    assert {"key": "example.com/spot", "operator": "Exists", "effect": "NoExecute"} in pod_tolerations


@pytest.mark.parametrize(
    ("taints", "words"),
    [
        ("dedicated", "list"),
        ([{"key": "dedicated", "effect": "Sometimes"}], "effect 'Sometimes'"),
        ([{"key": "Bad Key!", "effect": "NoSchedule"}], "not a valid taint key"),
        ([{"key": "a", "value": "not ok!", "effect": "NoSchedule"}], "not a valid label value"),
        ([{"key": "a", "effect": "NoSchedule"}, {"key": "a", "effect": "NoSchedule"}], "only once"),
        (
            [{"key": "a", "operator": "Exists", "effect": "NoSchedule"}],
            "key, an optional value and an effect",
        ),
    ],
)
def test_bad_taints_are_named(taints, words: str) -> None:
    problems = node_taint_problems(taints)
    assert any(words in problem for problem in problems), problems


def test_namespaces_carry_the_consoles_name_label() -> None:
    assert render_namespaces(["team-b", "inference", "team-b"]) == [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n, "labels": {NAMESPACE_LABEL: n}}}
        for n in ("inference", "team-b")
    ]


def test_usage_chart_draws_used_under_quota_and_escapes_names() -> None:
    end = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    points = [
        {"at": end - timedelta(minutes=60 - i), "gpus_used": min(i, 6), "gpus_quota": 8}
        for i in range(0, 60, 10)
    ]
    svg = str(gpu_usage_svg("h100<script>", points, start=end - timedelta(hours=1), end=end))
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "<script>" not in svg and "h100&lt;script&gt;" in svg
    assert 'class="used"' in svg and 'class="quota"' in svg and 'data-points="6"' in svg
    assert "GPUs used 6 of 8" in svg
    empty = str(gpu_usage_svg("h100", [], start=end - timedelta(hours=1), end=end))
    assert "no samples yet" in empty and 'class="used"' not in empty
