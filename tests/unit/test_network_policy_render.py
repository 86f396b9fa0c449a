"""The NetworkPolicy every service is rendered with: model pods accept traffic only from the
gateway's namespace (serving ports) and the monitoring namespace (metrics port, if any).
Schema validity is checked with every other object in test_render.py."""

from __future__ import annotations

from typing import Any

import pytest

from deploy.clusters.base import service_selector
from deploy.render import GATEWAY_NAMESPACE_LABEL, MONITORING_NAMESPACE_LABEL, render_service
from tests.unit.test_render import by_kind, make_spec

GATEWAY = {"namespaceSelector": {"matchLabels": {"inference.console/gateway": "true"}}}
MONITORING = {"namespaceSelector": {"matchLabels": {"inference.console/monitoring": "true"}}}


def policy(runtime: str, **changes: Any) -> dict[str, Any]:
    return by_kind(render_service(make_spec(runtime, **changes)))["NetworkPolicy"]


def test_the_documented_namespace_labels():
    assert dict([GATEWAY_NAMESPACE_LABEL]) == GATEWAY["namespaceSelector"]["matchLabels"]
    assert dict([MONITORING_NAMESPACE_LABEL]) == MONITORING["namespaceSelector"]["matchLabels"]


def test_vllm_pods_take_http_from_the_gateway_only():
    spec = policy("vllm")["spec"]
    assert spec["policyTypes"] == ["Ingress"]  # egress is not restricted
    assert spec["ingress"] == [{"from": [GATEWAY], "ports": [{"protocol": "TCP", "port": 8000}]}]


def test_triton_adds_grpc_for_the_gateway_and_metrics_for_monitoring():
    spec = policy("triton")["spec"]
    assert spec["ingress"] == [
        {"from": [GATEWAY], "ports": [{"protocol": "TCP", "port": 8000}, {"protocol": "TCP", "port": 8001}]},
        {"from": [MONITORING], "ports": [{"protocol": "TCP", "port": 8002}]},
    ]


@pytest.mark.parametrize("runtime", ["vllm", "triton"])
def test_it_selects_exactly_the_service_pods_and_is_deleted_with_the_service(runtime):
    objects = by_kind(render_service(make_spec(runtime, replicas=3)))
    network_policy, deployment = objects["NetworkPolicy"], objects["Deployment"]
    selected = network_policy["spec"]["podSelector"]["matchLabels"]
    assert selected == deployment["spec"]["selector"]["matchLabels"]
    assert selected.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert network_policy["metadata"]["name"] == deployment["metadata"]["name"]
    assert network_policy["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    # delete_service deletes by these labels.
    labels = network_policy["metadata"]["labels"]
    for pair in service_selector(deployment["metadata"]["name"]).split(","):
        key, value = pair.split("=")
        assert labels[key] == value


def test_policy_comes_before_the_pods():
    kinds = [obj["kind"] for obj in render_service(make_spec("vllm", env=(("A", "1"),)))]
    assert kinds.index("NetworkPolicy") < kinds.index("Deployment")


def test_deployment_names_the_served_model():
    deployment = by_kind(render_service(make_spec("triton", served_model_name="resnet")))["Deployment"]
    assert deployment["metadata"]["annotations"] == {"inference.console/served-model-name": "resnet"}
    assert "annotations" not in deployment["spec"]["template"]["metadata"] or (
        "inference.console/served-model-name" not in deployment["spec"]["template"]["metadata"]["annotations"]
    )
