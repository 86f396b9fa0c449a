"""The manifest renderer: valid against the real Kubernetes schemas, and the rules that matter."""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from packaging.version import Version

from deploy.clusters.base import LABEL_MANAGED_BY, LABEL_SERVICE, LABEL_SERVICE_UID, MANAGED_BY
from deploy.render import GPU_TOLERATION, objects_to_yaml, render_service, revision_hash
from deploy.spec import ModelVolume, NodeRule, ServiceSpec, Toleration

ROOT = Path(__file__).resolve().parents[2]
OLDEST_VERSION = "1.30.0"


def newest_schema_version() -> str:
    """The newest Kubernetes version whose strict schemas kubernetes-validate bundles."""
    root = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
    versions = [
        Version(match.group(1))
        for entry in root.iterdir()
        if (match := re.fullmatch(r"v(\d+\.\d+\.\d+)-local-strict", entry.name))
    ]
    assert versions, "kubernetes-validate ships no strict schemas"
    return str(max(versions))


VERSIONS = [OLDEST_VERSION, newest_schema_version()]


def validate(obj: dict[str, Any], version: str) -> None:
    # SchemaNotFoundError is deliberately not caught: a kind without a schema fails.
    used = kubernetes_validate.validate(obj, version, strict=True)
    # It silently falls back to an older schema when the asked one is missing.
    assert used == ".".join(version.split(".")[:2])


# --- spec matrix --------------------------------------------------------------------------

VOLUMES = {
    "nfs": ModelVolume(kind="nfs", nfs_server="10.0.0.5", nfs_path="/exports/models"),
    "pvc": ModelVolume(kind="pvc", claim_name="models-cache"),
    "hostPath": ModelVolume(kind="hostPath", host_path="/data/models"),
}


def make_spec(runtime: str = "vllm", gpu_count: int = 1, **changes: Any) -> ServiceSpec:
    spec = ServiceSpec(
        name="chat",
        namespace="inference",
        runtime=runtime,  # type: ignore[arg-type]
        image="vllm/vllm-openai:v0.11.0" if runtime == "vllm" else "nvcr.io/nvidia/tritonserver:25.01-py3",
        model_volume=VOLUMES["nfs"],
        model_path="THUDM/chatglm2-6b",
        served_model_name="chatglm2",
        gpu_count=gpu_count,
    )
    return dataclasses.replace(spec, **changes)


VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "custom-affinity": {
        "affinity_mode": "custom",
        "gpu_type": "NVIDIA-A100-SXM4-80GB",
        "node_rules": (
            NodeRule("topology.kubernetes.io/zone", "In", ("zone-a", "zone-b")),
            NodeRule("node-role.example.com/spot", "DoesNotExist"),
            NodeRule("example.com/fast-nvme", "Exists"),
        ),
        "tolerations": (
            Toleration("dedicated", "Equal", "inference", "NoSchedule"),
            Toleration("example.com/maintenance", "Exists"),
        ),
    },
    "env": {"env": (("LOG_LEVEL", "debug"), ("VLLM_LOGGING_LEVEL", "INFO"))},
    "shm": {"shm_size": "16Gi"},
    "extras": {
        "queue_name": "team-a",
        "service_uid": "3f2c6a0e-9b1d-4c7a-8e55-1d2f3a4b5c6d",
        "annotations": {"example.com/owner": "ml-team"},
        "gpu_type": "NVIDIA-H100-80GB-HBM3",
        "replicas": 3,
    },
    **{f"volume-{kind}": {"model_volume": volume} for kind, volume in VOLUMES.items()},
}

MATRIX = [
    pytest.param(runtime, gpus, variant, id=f"{runtime}-gpu{gpus}-{variant}")
    for runtime in ("vllm", "triton")
    for gpus in (0, 1, 4)
    for variant in VARIANTS
]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("runtime", "gpus", "variant"), MATRIX)
def test_rendered_objects_pass_strict_schema(runtime: str, gpus: int, variant: str, version: str) -> None:
    objects = render_service(make_spec(runtime, gpus, **VARIANTS[variant]))
    for obj in objects:
        validate(obj, version)


def test_newest_schema_is_discovered_not_assumed() -> None:
    assert Version(VERSIONS[1]) >= Version("1.30.0")
    assert VERSIONS[1] == kubernetes_validate.latest_version()


def test_missing_schema_is_an_error_not_a_skip() -> None:
    workload = {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "Workload", "metadata": {"name": "w"}}
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        validate(workload, VERSIONS[1])


# --- helpers ------------------------------------------------------------------------------


def by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {obj["kind"]: obj for obj in objects}


def pod_spec(spec: ServiceSpec) -> dict[str, Any]:
    return by_kind(render_service(spec))["Deployment"]["spec"]["template"]["spec"]


def container(spec: ServiceSpec) -> dict[str, Any]:
    (server,) = pod_spec(spec)["containers"]
    return server


def walk_resources(node: Any) -> Iterator[dict[str, Any]]:
    """Every `resources` block in an object, however deep."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "resources" and isinstance(value, dict):
                yield value
            yield from walk_resources(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk_resources(item)


ALL_SPECS = [make_spec(r, g, **VARIANTS[v]) for r in ("vllm", "triton") for g in (0, 1, 4) for v in VARIANTS]


# --- specific rules -----------------------------------------------------------------------


def test_objects_come_in_apply_order_in_the_spec_namespace() -> None:
    assert [o["kind"] for o in render_service(make_spec())] == ["NetworkPolicy", "Deployment", "Service"]
    objects = render_service(make_spec(env=(("A", "1"),)))
    assert [o["kind"] for o in objects] == ["ConfigMap", "NetworkPolicy", "Deployment", "Service"]
    assert [o["metadata"]["name"] for o in objects] == ["chat-env", "chat", "chat", "chat"]
    assert {o["metadata"]["namespace"] for o in objects} == {"inference"}


def test_all_quantities_are_strings() -> None:
    for spec in ALL_SPECS:
        objects = render_service(spec)
        blocks = list(walk_resources(objects))
        assert blocks, "no resources rendered"
        for block in blocks:
            for amounts in block.values():
                for name, quantity in amounts.items():
                    assert isinstance(quantity, str), (spec.name, name, quantity)
        for volume in pod_spec(spec)["volumes"]:
            if "sizeLimit" in volume.get("emptyDir", {}):
                assert isinstance(volume["emptyDir"]["sizeLimit"], str)


def test_numeric_quantities_from_json_become_strings() -> None:
    resources = container(make_spec(cpu=8, memory="32Gi", gpu_count=2))["resources"]  # type: ignore[arg-type]
    assert resources["requests"] == {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "2"}
    assert resources["limits"] == resources["requests"]


def test_gpu_resource_only_with_gpus() -> None:
    assert "nvidia.com/gpu" not in container(make_spec(gpu_count=0))["resources"]["limits"]
    assert container(make_spec(gpu_count=4))["resources"]["limits"]["nvidia.com/gpu"] == "4"


@pytest.mark.parametrize("runtime", ["vllm", "triton"])
def test_every_port_is_tcp(runtime: str) -> None:
    objects = by_kind(render_service(make_spec(runtime)))
    service_ports = objects["Service"]["spec"]["ports"]
    assert service_ports and all(p["protocol"] == "TCP" for p in service_ports)
    assert all(p["targetPort"] == p["name"] for p in service_ports)
    assert all(p["protocol"] == "TCP" for p in container(make_spec(runtime))["ports"])


def test_triton_ports_and_grpc_app_protocol() -> None:
    ports = by_kind(render_service(make_spec("triton")))["Service"]["spec"]["ports"]
    assert [(p["name"], p["port"]) for p in ports] == [("http", 8000), ("grpc", 8001), ("metrics", 8002)]
    assert [p.get("appProtocol") for p in ports] == [None, "grpc", None]


def test_service_links_are_off() -> None:
    for spec in ALL_SPECS:
        assert pod_spec(spec)["enableServiceLinks"] is False


def test_probes_per_runtime() -> None:
    triton = container(make_spec("triton"))
    assert "livenessProbe" not in triton
    assert triton["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert triton["startupProbe"]["failureThreshold"] == 180
    vllm = container(make_spec("vllm"))
    assert vllm["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert vllm["livenessProbe"]["failureThreshold"] == 6
    assert vllm["startupProbe"]["httpGet"]["path"] == "/health"
    assert vllm["readinessProbe"]["httpGet"]["path"] == "/v1/models"


def test_no_triton_liveness_probe_anywhere() -> None:
    for spec in ALL_SPECS:
        if spec.runtime == "triton":
            assert "livenessProbe" not in container(spec)


@pytest.mark.parametrize(("gpus", "expected"), [(0, False), (1, False), (2, True), (4, True)])
def test_tensor_parallel_only_with_several_gpus(gpus: int, expected: bool) -> None:
    args = container(make_spec("vllm", gpus))["args"]
    assert (f"--tensor-parallel-size={gpus}" in args) is expected
    assert any(a.startswith("--tensor-parallel-size") for a in args) is expected


def test_vllm_args_and_offline_env() -> None:
    spec = make_spec("vllm", 1, engine_args=("--max-model-len=8192", "--trust-remote-code"))
    server = container(spec)
    assert "command" not in server
    assert server["args"] == [
        "--model=/models/THUDM/chatglm2-6b",
        "--served-model-name=chatglm2",
        "--host=0.0.0.0",
        "--port=8000",
        "--max-model-len=8192",
        "--trust-remote-code",
    ]
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in server["env"]


def test_triton_command_and_args() -> None:
    server = container(make_spec("triton", 4, engine_args=("--log-verbose=1",)))
    assert server["command"] == ["tritonserver"]
    assert server["args"] == [
        "--model-repository=/models/THUDM/chatglm2-6b",
        "--http-port=8000",
        "--grpc-port=8001",
        "--metrics-port=8002",
        "--log-verbose=1",
    ]
    assert "env" not in server


@pytest.mark.parametrize("gpus", [0, 1, 4])
@pytest.mark.parametrize("mode", ["auto", "custom"])
def test_gpu_toleration_only_with_gpus(gpus: int, mode: str) -> None:
    tolerations = pod_spec(make_spec(gpu_count=gpus, affinity_mode=mode)).get("tolerations", [])
    assert (GPU_TOLERATION in tolerations) is (gpus > 0)


def test_gpu_toleration_not_duplicated() -> None:
    spec = make_spec(
        affinity_mode="custom", tolerations=(Toleration("nvidia.com/gpu", "Exists", "", "NoSchedule"),)
    )
    assert pod_spec(spec)["tolerations"] == [GPU_TOLERATION]


def test_custom_tolerations_omit_empty_keys() -> None:
    spec = make_spec(gpu_count=0, **VARIANTS["custom-affinity"])
    assert pod_spec(spec)["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "inference", "effect": "NoSchedule"},
        {"key": "example.com/maintenance", "operator": "Exists"},
    ]


def test_auto_mode_ignores_custom_rules() -> None:
    spec = make_spec(gpu_count=0, **{**VARIANTS["custom-affinity"], "affinity_mode": "auto", "gpu_type": ""})
    pod = pod_spec(spec)
    assert "affinity" not in pod
    assert "tolerations" not in pod


def test_auto_affinity_pins_gpu_type() -> None:
    pod = pod_spec(make_spec(gpu_type="NVIDIA-A100-SXM4-80GB"))
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert terms == [
        {
            "matchExpressions": [
                {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-A100-SXM4-80GB"]}
            ]
        }
    ]
    assert "affinity" not in pod_spec(make_spec())


def test_custom_affinity_expressions() -> None:
    pod = pod_spec(make_spec(**VARIANTS["custom-affinity"]))
    required = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    (term,) = required["nodeSelectorTerms"]
    assert term["matchExpressions"] == [
        {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["zone-a", "zone-b"]},
        {"key": "node-role.example.com/spot", "operator": "DoesNotExist"},
        {"key": "example.com/fast-nvme", "operator": "Exists"},
        {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-A100-SXM4-80GB"]},
    ]


def test_custom_mode_without_rules_has_no_affinity() -> None:
    assert "affinity" not in pod_spec(make_spec(affinity_mode="custom"))


@pytest.mark.parametrize("queue", ["", "team-a"])
def test_queue_label_iff_queue_name(queue: str) -> None:
    objects = by_kind(render_service(make_spec(queue_name=queue, env=(("A", "1"),))))
    deployment = objects["Deployment"]
    for labels in (deployment["metadata"]["labels"], deployment["spec"]["template"]["metadata"]["labels"]):
        assert labels.get("kueue.x-k8s.io/queue-name") == (queue or None)
    # Kueue admits workloads, not Services or ConfigMaps.
    assert "kueue.x-k8s.io/queue-name" not in objects["Service"]["metadata"]["labels"]
    assert "kueue.x-k8s.io/queue-name" not in objects["ConfigMap"]["metadata"]["labels"]


def test_labels_and_minimal_selectors() -> None:
    spec = make_spec("triton", service_uid="abc-123", env=(("A", "1"),))
    objects = by_kind(render_service(spec))
    expected = {
        "app.kubernetes.io/name": "chat",
        "app.kubernetes.io/component": "inference-server",
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_SERVICE: "chat",
        "inference.console/runtime": "triton",
        LABEL_SERVICE_UID: "abc-123",
    }
    template = objects["Deployment"]["spec"]["template"]
    for labels in [o["metadata"]["labels"] for o in objects.values()] + [template["metadata"]["labels"]]:
        assert labels == expected
    selector = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_SERVICE: "chat"}
    assert objects["Deployment"]["spec"]["selector"] == {"matchLabels": selector}
    assert objects["Service"]["spec"]["selector"] == selector
    assert LABEL_SERVICE_UID not in by_kind(render_service(make_spec()))["Service"]["metadata"]["labels"]


def test_rolling_update_needs_no_spare_gpu() -> None:
    deployment = by_kind(render_service(make_spec(replicas=3)))["Deployment"]
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
    }
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 60


@pytest.mark.parametrize("kind", list(VOLUMES))
def test_model_mounted_read_only(kind: str) -> None:
    spec = make_spec(model_volume=VOLUMES[kind])
    pod = pod_spec(spec)
    (model,) = [v for v in pod["volumes"] if v["name"] == "model"]
    (mount,) = [m for m in container(spec)["volumeMounts"] if m["name"] == "model"]
    assert mount == {"name": "model", "mountPath": "/models", "readOnly": True}
    expected = {
        "nfs": {"nfs": {"server": "10.0.0.5", "path": "/exports/models", "readOnly": True}},
        "pvc": {"persistentVolumeClaim": {"claimName": "models-cache", "readOnly": True}},
        "hostPath": {"hostPath": {"path": "/data/models", "type": "Directory"}},
    }[kind]
    assert model == {"name": "model", **expected}


def test_shm_and_cache_volumes() -> None:
    pod = pod_spec(make_spec(shm_size="16Gi"))
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
    assert volumes["cache"]["emptyDir"] == {}
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts == {"model": "/models", "dshm": "/dev/shm", "cache": "/root/.cache"}
    assert "dshm" not in {v["name"] for v in pod_spec(make_spec())["volumes"]}


def test_env_goes_through_config_map() -> None:
    spec = make_spec(env=(("LOG_LEVEL", "debug"), ("MAX", "3")))
    objects = by_kind(render_service(spec))
    assert objects["ConfigMap"]["data"] == {"LOG_LEVEL": "debug", "MAX": "3"}
    server = objects["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert server["envFrom"] == [{"configMapRef": {"name": "chat-env"}}]
    assert all(e["name"] != "LOG_LEVEL" for e in server["env"])
    assert "envFrom" not in container(make_spec())


def test_env_change_rolls_the_pods() -> None:
    # envFrom is read at container start: the pod template must change with the ConfigMap.
    def template(env: tuple[tuple[str, str], ...]) -> dict[str, Any]:
        return by_kind(render_service(make_spec(env=env)))["Deployment"]["spec"]["template"]

    assert template((("A", "1"),)) != template((("A", "2"),))
    assert template((("A", "1"),)) == template((("A", "1"),))


def test_pod_annotations() -> None:
    metadata = by_kind(render_service(make_spec(annotations={"b": "2", "a": "1"})))["Deployment"]["spec"][
        "template"
    ]["metadata"]
    assert metadata["annotations"] == {"a": "1", "b": "2"}
    assert (
        "annotations"
        not in by_kind(render_service(make_spec()))["Deployment"]["spec"]["template"]["metadata"]
    )


def test_service_url_uses_cluster_domain() -> None:
    service = by_kind(render_service(make_spec(), cluster_domain="corp.internal"))["Service"]
    assert service["metadata"]["annotations"]["inference.console/url"] == (
        "http://chat.inference.svc.corp.internal:8000"
    )
    assert service["spec"]["type"] == "ClusterIP"


def test_render_is_deterministic() -> None:
    for spec in ALL_SPECS:
        first, second = render_service(spec), render_service(spec)
        assert first == second
        assert objects_to_yaml(first) == objects_to_yaml(second)
        assert json.dumps(first) == json.dumps(second)
        assert revision_hash(first) == revision_hash(second)


def test_revision_hash_is_short_and_tracks_changes() -> None:
    spec = make_spec(**VARIANTS["extras"])
    digest = revision_hash(render_service(spec))
    assert re.fullmatch(r"[0-9a-f]{12}", digest)
    assert revision_hash(render_service(dataclasses.replace(spec, replicas=4))) != digest
    assert (
        revision_hash(render_service(dataclasses.replace(spec, image="vllm/vllm-openai:v0.12.0"))) != digest
    )


def test_revision_hash_ignores_key_order() -> None:
    assert revision_hash([{"a": 1, "b": [1, 2]}]) == revision_hash([{"b": [1, 2], "a": 1}])


def test_objects_share_no_sub_objects() -> None:
    objects = render_service(make_spec(env=(("A", "1"),), queue_name="q"))
    text = objects_to_yaml(objects)
    assert "&id" not in text and "*id" not in text  # PyYAML anchors mean shared dicts
    assert list(yaml.safe_load_all(text)) == objects
    kinds = by_kind(objects)
    kinds["Deployment"]["spec"]["selector"]["matchLabels"]["x"] = "y"
    assert "x" not in kinds["Service"]["spec"]["selector"]
    assert "x" not in kinds["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"]


def test_yaml_is_multi_document() -> None:
    text = objects_to_yaml(render_service(make_spec(env=(("A", "1"),))))
    assert text.count("\n---\n") == 3
    kinds = [d["kind"] for d in yaml.safe_load_all(text)]
    assert kinds == ["ConfigMap", "NetworkPolicy", "Deployment", "Service"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model_volume": ModelVolume(kind="nfs", nfs_server="10.0.0.5")}, "nfs_path is required"),
        ({"model_volume": ModelVolume(kind="pvc")}, "claim_name is required"),
        ({"model_volume": ModelVolume(kind="s3")}, "model_volume.kind"),  # type: ignore[arg-type]
        ({"gpu_count": -1}, "gpu_count"),
        ({"replicas": "2"}, "replicas"),
        ({"affinity_mode": "custom", "node_rules": (NodeRule("zone", "In"),)}, "needs at least one value"),
        ({"runtime": "tgi"}, "unknown runtime"),
    ],
)
def test_bad_specs_are_refused_clearly(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render_service(make_spec(**changes))


def test_render_needs_no_django_settings() -> None:
    code = (
        "import json, sys\n"
        "from deploy.render import render_service, revision_hash\n"
        "from deploy.spec import ServiceSpec\n"
        "spec = ServiceSpec.from_dict(json.load(open('examples/spec-vllm.json')))\n"
        "print(revision_hash(render_service(spec)))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"[0-9a-f]{12}\n", result.stdout)
