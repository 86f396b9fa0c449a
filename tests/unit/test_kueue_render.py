"""The Kueue renderer (deploy/kueue.py): every object valid against the Kueue CRDs' own schemas.

The schemas are the openAPIV3Schema of the served v1beta2 version in ../shared/kueue-crds/
(upstream Kueue's CRDs, see its README), checked with jsonschema in a strict mode: an object
with properties takes no others, because the API server silently prunes unknown fields (a
v1beta1 `cohort` written to v1beta2 would simply vanish). What the API server checks besides
the schema (apiVersion, kind, metadata.name, labels) is checked here too. jsonschema does not
evaluate CEL (`x-kubernetes-validations`), so the CEL rules that concern rendered fields are
asserted in Python (cel_violations).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from django.conf import settings

from deploy.clusters.base import LABEL_MANAGED_BY, MANAGED_BY
from deploy.kueue import (
    API_VERSION,
    COVERED_RESOURCES,
    LABEL_QUEUE,
    NAMESPACE_LABEL,
    FlavorQuotaSpec,
    FlavorSpec,
    PreemptionSpec,
    PriorityClassSpec,
    QueueSpec,
    ResourceQuota,
    Taint,
    render_cluster_queue,
    render_flavor,
    render_kueue,
    render_local_queues,
    render_priority_class,
    render_queue,
)
from deploy.spec import Toleration

# CI runs on a fresh clone with a copy of shared/ beside it, as a session has it.
CRD_DIR = Path(settings.BASE_DIR).parent / "shared" / "kueue-crds"
VERSION = API_VERSION.rpartition("/")[2]
RENDERED_KINDS = ("ResourceFlavor", "ClusterQueue", "LocalQueue", "WorkloadPriorityClass")

Obj = dict[str, Any]


# --- the CRDs -----------------------------------------------------------------------------


# libyaml when PyYAML has it: the Workload CRD alone is 1.4 MB (~5 s in pure Python).
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def _load(path: Path) -> Obj:
    return yaml.load(path.read_text(), Loader=LOADER)


def load_crds() -> list[Obj]:
    """The seven Kueue CRDs as upstream ships them (fresh copies: callers may change them)."""
    files = sorted(CRD_DIR.glob("*.yaml"))
    assert len(files) == 7, f"expected the seven Kueue CRDs in {CRD_DIR}, found {len(files)}"
    return [copy.deepcopy(_load(path)) for path in files]


def served_version(crd: Obj, version: str = VERSION) -> Obj:
    (found,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return found


def closed(schema: Any) -> Any:
    """The schema with every object that lists its properties closed to others (strict mode)."""
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: closed(value) for key, value in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        result["additionalProperties"] = False
    return result


FORMATS = jsonschema.FormatChecker()


@FORMATS.checks("int32")
def _int32(value: object) -> bool:
    return not isinstance(value, int) or -(2**31) <= value < 2**31


@FORMATS.checks("int64")
def _int64(value: object) -> bool:
    return not isinstance(value, int) or -(2**63) <= value < 2**63


@dataclasses.dataclass(frozen=True)
class Kind:
    api_version: str
    namespaced: bool
    validator: jsonschema.protocols.Validator


@functools.cache
def kinds() -> dict[str, Kind]:
    """The rendered kinds' validators. Only those: other CRDs hold Go-only regex syntax
    (AdmissionCheck's `^(?i)...`) that Python's re cannot compile."""
    result = {}
    for crd in load_crds():
        spec = crd["spec"]
        if spec["names"]["kind"] not in RENDERED_KINDS:
            continue
        version = served_version(crd)
        schema = closed(version["schema"]["openAPIV3Schema"])
        validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
        validator_class.check_schema(schema)
        result[spec["names"]["kind"]] = Kind(
            api_version=f"{spec['group']}/{version['name']}",
            namespaced=spec["scope"] == "Namespaced",
            validator=validator_class(schema, format_checker=FORMATS),
        )
    return result


# What the API server checks outside the schema: DNS-1123 subdomain names, label syntax.
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def metadata_problems(obj: Obj) -> list[str]:
    problems = []
    kind = kinds().get(obj.get("kind", ""))
    if kind is None:
        return [f"no Kueue CRD for kind {obj.get('kind')!r}"]
    if obj.get("apiVersion") != kind.api_version:
        problems.append(f"apiVersion {obj.get('apiVersion')!r} is not the served {kind.api_version}")
    metadata = obj.get("metadata") or {}
    name = metadata.get("name", "")
    if not (DNS_SUBDOMAIN.match(name) and len(name) <= 253):
        problems.append(f"metadata.name {name!r} is not a DNS-1123 subdomain")
    namespace = metadata.get("namespace")
    if kind.namespaced != bool(namespace):
        problems.append(
            f"metadata.namespace {namespace!r} for a {'' if kind.namespaced else 'non-'}namespaced kind"
        )
    if namespace and not (DNS_LABEL.match(namespace) and len(namespace) <= 63):
        problems.append(f"metadata.namespace {namespace!r} is not a DNS-1123 label")
    for key, value in (metadata.get("labels") or {}).items():
        prefix, _, label_name = key.rpartition("/")
        if prefix and not (DNS_SUBDOMAIN.match(prefix) and len(prefix) <= 253):
            problems.append(f"label key {key!r} has a bad prefix")
        if not (LABEL_NAME.match(label_name) and len(label_name) <= 63):
            problems.append(f"label key {key!r} has a bad name")
        if not (isinstance(value, str) and LABEL_VALUE.match(value) and len(value) <= 63):
            problems.append(f"label {key}={value!r}: not a label value")
    return problems


def schema_errors(obj: Obj) -> list[str]:
    """Everything the API server would refuse by the CRD's schema or the object's metadata."""
    kind = kinds().get(obj.get("kind", ""))
    if kind is None:
        return [f"no Kueue CRD for kind {obj.get('kind')!r}"]
    errors = [
        f"{'.'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in kind.validator.iter_errors(obj)
    ]
    return errors + metadata_problems(obj)


def assert_valid(obj: Obj) -> None:
    assert schema_errors(obj) == [], yaml.safe_dump(obj, sort_keys=False)


# --- the CEL rules jsonschema skips, in Python ---------------------------------------------

TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def cel_violations(obj: Obj) -> list[str]:
    """The CRDs' x-kubernetes-validations rules on the fields the console renders."""
    spec = obj.get("spec") or {}
    problems = []
    if obj["kind"] == "ClusterQueue":
        for group in spec.get("resourceGroups", []):
            covered = group["coveredResources"]
            for flavor in group["flavors"]:
                names = [resource["name"] for resource in flavor["resources"]]
                # CEL: the same count; Kueue's webhook also wants the same names in order.
                if names != covered:
                    problems.append(f"flavor {flavor['name']} lists {names}, not the covered {covered}")
                if "cohortName" not in spec:
                    problems += [
                        f"flavor {flavor['name']}: borrowingLimit on {r['name']} without a cohort"
                        for r in flavor["resources"]
                        if "borrowingLimit" in r
                    ]
        preemption = spec.get("preemption") or {}
        borrow = (preemption.get("borrowWithinCohort") or {}).get("policy", "Never")
        if preemption.get("reclaimWithinCohort", "Never") == "Never" and borrow != "Never":
            problems.append("reclaimWithinCohort=Never and borrowWithinCohort.policy!=Never")
    if obj["kind"] == "ResourceFlavor":
        problems += [
            f"taint effect {t.get('effect')}"
            for t in spec.get("nodeTaints", [])
            if t.get("effect") not in TAINT_EFFECTS
        ]
        for toleration in spec.get("tolerations", []):
            operator = toleration.get("operator", "Equal")
            if "key" not in toleration and operator != "Exists":
                problems.append("toleration without key needs operator Exists")
            if operator not in ("Equal", "Exists"):
                problems.append(f"toleration operator {operator}")
            if operator == "Exists" and "value" in toleration:
                problems.append("toleration with operator Exists has a value")
            if "effect" in toleration and toleration["effect"] not in TAINT_EFFECTS:
                problems.append(f"toleration effect {toleration['effect']}")
    return problems


# --- what a console would hold --------------------------------------------------------------

GPU_TAINT = Taint("nvidia.com/gpu", "present", "NoSchedule")
H100 = FlavorSpec(
    name="h100",
    node_labels={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "cloud.example.com/pool": "h100-spot"},
    taints=(GPU_TAINT, Taint("example.com/spot", effect="PreferNoSchedule")),
    tolerations=(Toleration("nvidia.com/gpu", "Exists", effect="NoSchedule"),),
)
A100 = FlavorSpec(
    name="a100-80gb",
    node_labels={"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
    taints=(GPU_TAINT,),
    tolerations=(
        Toleration("nvidia.com/gpu", "Equal", "present", "NoSchedule"),
        Toleration("example.com/maintenance", "Exists", effect="NoExecute"),
    ),
)
CPU = FlavorSpec(name="cpu")  # every node, no taints
FLAVORS = (H100, A100, CPU)


def quota(flavor: str, gpu: str, cpu: str, memory: str, **limits: str) -> FlavorQuotaSpec:
    """A flavor quota; limits like gpu_borrowing="4" or memory_lending="256Gi"."""
    amounts = {"gpu": gpu, "cpu": cpu, "memory": memory}
    return FlavorQuotaSpec(
        flavor=flavor,
        **{
            resource: ResourceQuota(
                nominal, limits.get(f"{resource}_borrowing"), limits.get(f"{resource}_lending")
            )
            for resource, nominal in amounts.items()
        },
    )


GPU_QUEUE = QueueSpec(
    name="gpu-h100",
    flavors=(
        quota("h100", "8", "96", "1Ti", gpu_borrowing="4", gpu_lending="2", memory_lending="256Gi"),
        quota("a100-80gb", "4", "48", "512Gi", cpu_borrowing="16"),
    ),
    namespaces=("team-b", "team-a", "ml-research"),
    cohort="gpus",
    queueing_strategy="StrictFIFO",
    preemption=PreemptionSpec(
        within_cluster_queue="LowerPriority",
        reclaim_within_cohort="Any",
        borrow_within_cohort="LowerPriority",
        max_priority_threshold=100,
    ),
)
SHARED_QUEUE = QueueSpec(
    name="gpu-shared",
    flavors=(quota("a100-80gb", "2", "16", "128Gi", gpu_borrowing="6"),),
    namespaces=("team-a",),
    cohort="gpus",
)
CPU_QUEUE = QueueSpec(name="cpu-batch", flavors=(quota("cpu", "0", "500m", "64Gi"),), namespaces=("batch",))
STAGING_QUEUE = QueueSpec(name="staging", flavors=(quota("h100", "1", "8", "64Gi"),))  # nobody yet
QUEUES = (GPU_QUEUE, SHARED_QUEUE, CPU_QUEUE, STAGING_QUEUE)
PRIORITY_CLASSES = (
    PriorityClassSpec("production", 1000, "Customer-facing services"),
    PriorityClassSpec("batch", -10),
    PriorityClassSpec("lowest", -(2**31)),
    PriorityClassSpec("highest", 2**31 - 1, "x" * 2048),
)


def everything() -> list[Obj]:
    return render_kueue(FLAVORS, QUEUES, PRIORITY_CLASSES)


def object_id(obj: Obj) -> str:
    namespace = obj["metadata"].get("namespace")
    return f"{obj['kind']}-{namespace + '-' if namespace else ''}{obj['metadata']['name']}"


def by_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [obj for obj in objects if obj["kind"] == kind]


# --- validity -----------------------------------------------------------------------------


def test_crds_serve_v1beta2_as_storage() -> None:
    crds = {crd["spec"]["names"]["kind"]: crd for crd in load_crds()}
    assert set(RENDERED_KINDS) <= set(crds)
    for kind in RENDERED_KINDS:
        version = served_version(crds[kind])
        assert version["served"] and version["storage"], kind
        assert kinds()[kind].api_version == API_VERSION


@pytest.mark.parametrize("obj", everything(), ids=object_id)
def test_every_rendered_object_is_valid(obj: Obj) -> None:
    assert_valid(obj)
    assert cel_violations(obj) == []


def test_every_kind_and_feature_is_covered() -> None:
    objects = everything()
    assert {obj["kind"] for obj in objects} == set(RENDERED_KINDS)
    queues = by_kind(objects, "ClusterQueue")
    resources = [
        r for q in queues for g in q["spec"]["resourceGroups"] for f in g["flavors"] for r in f["resources"]
    ]
    assert any("borrowingLimit" in r for r in resources) and any("lendingLimit" in r for r in resources)
    assert any("cohortName" in q["spec"] for q in queues) and any(
        "cohortName" not in q["spec"] for q in queues
    )
    assert any("nodeTaints" in f["spec"] for f in by_kind(objects, "ResourceFlavor"))


def test_objects_come_in_apply_order() -> None:
    kinds_in_order = [obj["kind"] for obj in everything()]
    # Flavors and priority classes first; each ClusterQueue right before its LocalQueues.
    assert kinds_in_order[:7] == ["ResourceFlavor"] * 3 + ["WorkloadPriorityClass"] * 4
    assert [object_id(obj) for obj in render_queue(GPU_QUEUE)] == [
        "ClusterQueue-gpu-h100",
        "LocalQueue-ml-research-gpu-h100",
        "LocalQueue-team-a-gpu-h100",
        "LocalQueue-team-b-gpu-h100",
    ]


# --- the ClusterQueue ---------------------------------------------------------------------


def test_cluster_queue_has_quotas_per_flavor_in_order_with_limits() -> None:
    spec = render_cluster_queue(GPU_QUEUE)["spec"]
    (group,) = spec["resourceGroups"]
    assert group["coveredResources"] == list(COVERED_RESOURCES) == ["nvidia.com/gpu", "cpu", "memory"]
    # The order of the spec, which is the order Kueue tries them in.
    assert group["flavors"] == [
        {
            "name": "h100",
            "resources": [
                {"name": "nvidia.com/gpu", "nominalQuota": "8", "borrowingLimit": "4", "lendingLimit": "2"},
                {"name": "cpu", "nominalQuota": "96"},
                {"name": "memory", "nominalQuota": "1Ti", "lendingLimit": "256Gi"},
            ],
        },
        {
            "name": "a100-80gb",
            "resources": [
                {"name": "nvidia.com/gpu", "nominalQuota": "4"},
                {"name": "cpu", "nominalQuota": "48", "borrowingLimit": "16"},
                {"name": "memory", "nominalQuota": "512Gi"},
            ],
        },
    ]


def test_cluster_queue_cohort_strategy_and_preemption() -> None:
    spec = render_cluster_queue(GPU_QUEUE)["spec"]
    assert spec["cohortName"] == "gpus"
    assert "cohort" not in spec  # the v1beta1 name, pruned by a v1beta2 server
    assert spec["queueingStrategy"] == "StrictFIFO"
    assert spec["preemption"] == {
        "withinClusterQueue": "LowerPriority",
        "reclaimWithinCohort": "Any",
        "borrowWithinCohort": {"policy": "LowerPriority", "maxPriorityThreshold": 100},
    }


def test_defaults_are_rendered_explicitly_and_no_cohort_means_no_field() -> None:
    spec = render_cluster_queue(CPU_QUEUE)["spec"]
    assert "cohortName" not in spec
    assert spec["queueingStrategy"] == "BestEffortFIFO"
    assert spec["preemption"] == {
        "withinClusterQueue": "Never",
        "reclaimWithinCohort": "Never",
        "borrowWithinCohort": {"policy": "Never"},
    }
    # A CPU flavor still lists the GPU, with no quota: every flavor covers all three.
    assert spec["resourceGroups"][0]["flavors"][0]["resources"][0] == {
        "name": "nvidia.com/gpu",
        "nominalQuota": "0",
    }


def test_namespaces_select_by_name_and_get_one_local_queue_each() -> None:
    cluster_queue, *local_queues = render_queue(GPU_QUEUE)
    assert cluster_queue["spec"]["namespaceSelector"] == {
        "matchExpressions": [
            {"key": NAMESPACE_LABEL, "operator": "In", "values": ["ml-research", "team-a", "team-b"]}
        ]
    }
    assert local_queues == render_local_queues(GPU_QUEUE)
    assert [(lq["metadata"]["namespace"], lq["metadata"]["name"], lq["spec"]) for lq in local_queues] == [
        (namespace, "gpu-h100", {"clusterQueue": "gpu-h100"})
        for namespace in ("ml-research", "team-a", "team-b")
    ]


def test_queue_without_namespaces_admits_nobody() -> None:
    # No selector at all (null: no namespace). {} would mean every namespace.
    (cluster_queue,) = render_queue(STAGING_QUEUE)
    assert "namespaceSelector" not in cluster_queue["spec"]
    assert render_local_queues(STAGING_QUEUE) == []


# --- flavors, priority classes, labels ----------------------------------------------------


def test_flavor_labels_taints_and_tolerations() -> None:
    assert render_flavor(H100)["spec"] == {
        "nodeLabels": {
            "cloud.example.com/pool": "h100-spot",
            "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
        },
        "nodeTaints": [
            {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},
            {"key": "example.com/spot", "effect": "PreferNoSchedule"},
        ],
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    }
    assert render_flavor(A100)["spec"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"},
        {"key": "example.com/maintenance", "operator": "Exists", "effect": "NoExecute"},
    ]
    assert render_flavor(CPU)["spec"] == {}


def test_priority_class_value_and_optional_description() -> None:
    assert render_priority_class(PRIORITY_CLASSES[0]) == {
        "apiVersion": API_VERSION,
        "kind": "WorkloadPriorityClass",
        "metadata": {"name": "production", "labels": {LABEL_MANAGED_BY: MANAGED_BY}},
        "value": 1000,
        "description": "Customer-facing services",
    }
    assert "description" not in render_priority_class(PRIORITY_CLASSES[1])


def test_labels_on_every_object() -> None:
    for obj in everything():
        labels = obj["metadata"]["labels"]
        assert labels[LABEL_MANAGED_BY] == MANAGED_BY
        if obj["kind"] in ("ClusterQueue", "LocalQueue"):
            assert labels[LABEL_QUEUE] == obj["metadata"]["name"]
        else:  # shared by many queues: no queue label
            assert LABEL_QUEUE not in labels


def test_rendering_is_repeatable_and_shares_no_dicts() -> None:
    first, second = everything(), everything()
    assert first == second
    first[0]["metadata"]["labels"]["x"] = "y"
    by_kind(first, "ClusterQueue")[0]["spec"]["resourceGroups"][0]["coveredResources"].append("pods")
    assert everything() == second
    assert "&id" not in yaml.safe_dump_all(second)  # no shared sub-objects, so no YAML anchors


# --- the schema is not vacuous: what it refuses ---------------------------------------------


def _set(path: str, value: Any) -> Callable[[Obj], None]:
    """A mutation setting a dotted path (numbers index lists) of a rendered object."""

    def mutate(obj: Obj) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        node: Any = obj
        for part in parents:
            node = node[part]
        node[last] = value

    return mutate


def _drop(path: str) -> Callable[[Obj], None]:
    def mutate(obj: Obj) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        node: Any = obj
        for part in parents:
            node = node[part]
        del node[last]

    return mutate


FIRST_RESOURCE = "spec.resourceGroups.0.flavors.0.resources.0"

# (rendered object, mutation or None, a fragment of the expected error). Specs the renderer
# passes through, since the API server checks them itself, and objects broken after rendering.
SCHEMA_REFUSALS = {
    "cohort-name-not-dns": (
        lambda: render_cluster_queue(dataclasses.replace(GPU_QUEUE, cohort="GPUs")),
        None,
        "spec.cohortName: 'GPUs' does not match",
    ),
    "flavor-reference-not-dns": (
        lambda: render_cluster_queue(
            dataclasses.replace(CPU_QUEUE, flavors=(quota("CPU_nodes", "0", "1", "1Gi"),))
        ),
        None,
        "spec.resourceGroups.0.flavors.0.name: 'CPU_nodes' does not match",
    ),
    "unknown-queueing-strategy": (
        lambda: render_cluster_queue(dataclasses.replace(CPU_QUEUE, queueing_strategy="FIFO")),  # type: ignore[arg-type]
        None,
        "spec.queueingStrategy: 'FIFO' is not one of",
    ),
    "unknown-preemption-policy": (
        lambda: render_cluster_queue(
            dataclasses.replace(CPU_QUEUE, preemption=PreemptionSpec(within_cluster_queue="Always"))  # type: ignore[arg-type]
        ),
        None,
        "spec.preemption.withinClusterQueue: 'Always' is not one of",
    ),
    "too-many-node-labels": (
        lambda: render_flavor(FlavorSpec("big", node_labels={f"example.com/l{i}": "x" for i in range(9)})),
        None,
        "spec.nodeLabels: {",
    ),
    "too-many-taints": (
        lambda: render_flavor(FlavorSpec("big", taints=tuple(Taint(f"example.com/t{i}") for i in range(9)))),
        None,
        "spec.nodeTaints: [",
    ),
    "description-too-long": (
        lambda: render_priority_class(PriorityClassSpec("wordy", 1, "x" * 2049)),
        None,
        "description: 'xxx",
    ),
    "quota-not-a-quantity": (
        lambda: render_cluster_queue(CPU_QUEUE),
        _set(f"{FIRST_RESOURCE}.nominalQuota", "lots"),
        f"{FIRST_RESOURCE}.nominalQuota: 'lots' does not match",
    ),
    "quota-missing": (
        lambda: render_cluster_queue(CPU_QUEUE),
        _drop(f"{FIRST_RESOURCE}.nominalQuota"),
        "'nominalQuota' is a required property",
    ),
    "no-flavors": (
        lambda: render_cluster_queue(CPU_QUEUE),
        _set("spec.resourceGroups.0.flavors", []),
        "spec.resourceGroups.0.flavors: [] should be non-empty",
    ),
    "v1beta1-cohort-field": (
        lambda: render_cluster_queue(GPU_QUEUE),
        _set("spec.cohort", "gpus"),
        "Additional properties are not allowed ('cohort' was unexpected)",
    ),
    "local-queue-target-not-dns": (
        lambda: render_local_queues(CPU_QUEUE)[0],
        _set("spec.clusterQueue", "CPU batch"),
        "spec.clusterQueue: 'CPU batch' does not match",
    ),
    "taint-without-effect": (
        lambda: render_flavor(H100),
        _drop("spec.nodeTaints.0.effect"),
        "'effect' is a required property",
    ),
    "priority-not-a-number": (
        lambda: render_priority_class(PRIORITY_CLASSES[0]),
        _set("value", "high"),
        "value: 'high' is not of type 'integer'",
    ),
    "priority-beyond-int32": (
        lambda: render_priority_class(PRIORITY_CLASSES[0]),
        _set("value", 2**31),
        "value: 2147483648 is not a 'int32'",
    ),
    "metadata-name-not-dns": (
        lambda: render_cluster_queue(CPU_QUEUE),
        _set("metadata.name", "CPU_batch"),
        "metadata.name 'CPU_batch' is not a DNS-1123 subdomain",
    ),
    "local-queue-without-namespace": (
        lambda: render_local_queues(CPU_QUEUE)[0],
        _drop("metadata.namespace"),
        "metadata.namespace None for a namespaced kind",
    ),
    "label-value-too-long": (
        lambda: render_cluster_queue(CPU_QUEUE),
        lambda obj: obj["metadata"]["labels"].update({LABEL_QUEUE: "q" * 64}),
        f"label {LABEL_QUEUE}=",
    ),
    "v1beta1-api-version": (
        lambda: render_cluster_queue(CPU_QUEUE),
        _set("apiVersion", "kueue.x-k8s.io/v1beta1"),
        "apiVersion 'kueue.x-k8s.io/v1beta1' is not the served kueue.x-k8s.io/v1beta2",
    ),
}


@pytest.mark.parametrize("case", SCHEMA_REFUSALS)
def test_schema_refuses(case: str) -> None:
    make, mutate, expected = SCHEMA_REFUSALS[case]
    obj = copy.deepcopy(make())
    if mutate is not None:
        assert_valid(obj)  # valid as rendered: the mutation alone breaks it
        mutate(obj)
    errors = schema_errors(obj)
    assert any(expected in error for error in errors), errors


def test_schema_alone_accepts_negative_quotas_so_the_renderer_refuses_them() -> None:
    # The CRD's quantity pattern admits a sign, and its non-negativity rule lives in Kueue's
    # webhook: without the renderer's own check a "-1" quota would reach the cluster.
    obj = render_cluster_queue(CPU_QUEUE)
    _set(f"{FIRST_RESOURCE}.nominalQuota", "-1")(obj)
    assert schema_errors(obj) == []
    with pytest.raises(ValueError, match=r"nominal quota must be a non-negative quantity string.*'-1'"):
        render_cluster_queue(dataclasses.replace(CPU_QUEUE, flavors=(quota("cpu", "-1", "1", "1Gi"),)))


def test_cel_check_is_not_vacuous() -> None:
    cluster_queue = render_cluster_queue(GPU_QUEUE)
    del cluster_queue["spec"]["resourceGroups"][0]["flavors"][1]["resources"][2]
    del cluster_queue["spec"]["cohortName"]
    cluster_queue["spec"]["preemption"]["reclaimWithinCohort"] = "Never"
    assert cel_violations(cluster_queue) == [
        "flavor h100: borrowingLimit on nvidia.com/gpu without a cohort",
        "flavor a100-80gb lists ['nvidia.com/gpu', 'cpu'], "
        "not the covered ['nvidia.com/gpu', 'cpu', 'memory']",
        "flavor a100-80gb: borrowingLimit on cpu without a cohort",
        "reclaimWithinCohort=Never and borrowWithinCohort.policy!=Never",
    ]
    flavor = render_flavor(H100)
    flavor["spec"]["tolerations"][0]["value"] = "present"
    flavor["spec"]["nodeTaints"][0]["effect"] = "Sometimes"
    assert cel_violations(flavor) == [
        "taint effect Sometimes",
        "toleration with operator Exists has a value",
    ]


# --- what the renderer refuses (CEL and webhook rules a 1.20 server does not enforce) -------


def _queue(**changes: Any) -> QueueSpec:
    return dataclasses.replace(GPU_QUEUE, **changes)


RENDER_REFUSALS: dict[str, tuple[Callable[[], Any], str]] = {
    "negative-borrowing-limit": (
        lambda: render_queue(_queue(flavors=(quota("h100", "8", "1", "1Gi", gpu_borrowing="-2"),))),
        "borrowing limit must be a non-negative quantity",
    ),
    "quantity-not-a-string": (
        lambda: render_queue(
            _queue(
                flavors=(FlavorQuotaSpec("h100", ResourceQuota(8), ResourceQuota("1"), ResourceQuota("1Gi")),)
            )
        ),  # type: ignore[arg-type]
        r"nvidia.com/gpu: nominal quota must be a non-negative quantity string.*got 8",
    ),
    "borrowing-without-cohort": (
        lambda: render_queue(_queue(cohort="")),
        "flavor h100, nvidia.com/gpu: a borrowing limit needs a cohort",
    ),
    "lending-without-cohort": (
        lambda: render_queue(_queue(cohort="", flavors=(quota("h100", "8", "1", "1Gi", gpu_lending="1"),))),
        "flavor h100, nvidia.com/gpu: a lending limit needs a cohort",
    ),
    "lending-more-than-nominal": (
        lambda: render_queue(_queue(flavors=(quota("h100", "8", "1", "1Gi", cpu_lending="1500m"),))),
        "lending limit 1500m is more than the nominal quota 1",
    ),
    "lending-more-memory-than-nominal": (
        lambda: render_queue(_queue(flavors=(quota("h100", "8", "1", "1Gi", memory_lending="1025Mi"),))),
        "lending limit 1025Mi is more than the nominal quota 1Gi",
    ),
    "no-flavors": (lambda: render_queue(_queue(flavors=())), "needs a quota in at least one flavor"),
    "flavor-twice": (
        lambda: render_queue(_queue(flavors=(quota("cpu", "0", "1", "1Gi"), quota("cpu", "0", "2", "1Gi")))),
        "flavor cpu is listed twice",
    ),
    "namespace-twice": (
        lambda: render_queue(_queue(namespaces=("a", "b", "a"))),
        "namespace a is listed twice",
    ),
    "borrow-preemption-without-reclaim": (
        lambda: render_queue(_queue(preemption=PreemptionSpec(borrow_within_cohort="LowerPriority"))),
        "needs reclaim_within_cohort other than Never",
    ),
    "threshold-without-borrow-preemption": (
        lambda: render_queue(
            _queue(preemption=PreemptionSpec(reclaim_within_cohort="Any", max_priority_threshold=5))
        ),
        "max_priority_threshold needs borrow_within_cohort",
    ),
    "priority-beyond-int32": (
        lambda: render_priority_class(PriorityClassSpec("huge", 2**31)),
        "value must be a 32-bit integer, got 2147483648",
    ),
    "priority-bool": (
        lambda: render_priority_class(PriorityClassSpec("yes", True)),
        "value must be a 32-bit integer, got True",
    ),
    "taint-effect": (
        lambda: render_flavor(FlavorSpec("x", taints=(Taint("k", effect="Sometimes"),))),  # type: ignore[arg-type]
        "taint k has effect 'Sometimes'",
    ),
    "toleration-exists-with-value": (
        lambda: render_flavor(FlavorSpec("x", tolerations=(Toleration("k", "Exists", "v"),))),
        "toleration k has operator Exists, so it takes no value",
    ),
    "toleration-without-key-must-be-exists": (
        lambda: render_flavor(FlavorSpec("x", tolerations=(Toleration("", "Equal", "v"),))),
        r"toleration \(any key\) has no key, so its operator must be Exists",
    ),
    "unknown-flavor": (
        lambda: render_kueue([H100], [CPU_QUEUE]),
        "queue cpu-batch: unknown flavor cpu",
    ),
}


@pytest.mark.parametrize("case", RENDER_REFUSALS)
def test_renderer_refuses(case: str) -> None:
    render, message = RENDER_REFUSALS[case]
    with pytest.raises(ValueError, match=message):
        render()


def test_all_problems_are_reported_at_once() -> None:
    spec = _queue(cohort="", namespaces=("a", "a"))
    with pytest.raises(ValueError) as raised:
        render_cluster_queue(spec)
    assert str(raised.value).count("; ") >= 3  # three limits without a cohort and the repeated namespace


def test_a_toleration_of_every_taint_renders_without_key() -> None:
    flavor = render_flavor(FlavorSpec("anything", tolerations=(Toleration("", "Exists"),)))
    assert flavor["spec"]["tolerations"] == [{"operator": "Exists"}]
    assert_valid(flavor)
    assert cel_violations(flavor) == []
