"""Kueue objects (deploy/kueue.py) on the real kube-apiserver v1.20.2: the upstream CRDs installed,
the rendered objects server-side applied through KubernetesCluster, read back, re-applied, edited.

No Kueue controller or webhook runs here: this checks what the API server stores, not admission.
1.20 predates part of what the CRDs use, so for_kubernetes_1_20 adapts them first (see there);
the OpenAPI part of the schemas (types, patterns, enums, defaults) is enforced as upstream wrote
it. Also unlike a current cluster, 1.20 does not label namespaces kubernetes.io/metadata.name
(1.21+), which the ClusterQueue's namespaceSelector relies on.

This module owns the Kueue CRDs on the shared harness: it installs them and deletes them (with
every Kueue object) when it is done.
"""

from __future__ import annotations

import copy
import dataclasses
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from deploy.clusters.base import LABEL_MANAGED_BY, MANAGED_BY, PermanentClusterError
from deploy.clusters.kubernetes import KubernetesCluster
from deploy.kueue import API_VERSION, LABEL_QUEUE, render_cluster_queue, render_kueue, render_queue
from tests import stack
from tests.cluster.test_reconcile_on_kubernetes import kubernetes_backend, prewarmed_dataset  # noqa: F401
from tests.unit.test_kueue_render import (
    FIRST_RESOURCE,
    FLAVORS,
    GPU_QUEUE,
    PRIORITY_CLASSES,
    SHARED_QUEUE,
    load_crds,
    quota,
)

pytestmark = pytest.mark.cluster

Obj = dict[str, Any]
GROUP = API_VERSION.partition("/")[0]
KINDS = ("ResourceFlavor", "WorkloadPriorityClass", "ClusterQueue", "LocalQueue")  # apply order
# What the API server adds from the CRDs' defaults to what the console applies.
SERVER_DEFAULTS: dict[str, Obj] = {
    "ClusterQueue": {
        "flavorFungibility": {"whenCanBorrow": "MayStopSearch", "whenCanPreempt": "TryNextFlavor"},
        "stopPolicy": "None",
    },
    "LocalQueue": {"stopPolicy": "None"},
}
DEADLINE_SECONDS = 60
# Installing or deleting the seven CRDs takes 10-20 s on a busy 2-core machine (the Workload
# CRD alone is 1.4 MB of schema for 1.20 to rebuild its OpenAPI document from).
CRD_DEADLINE_SECONDS = 120


# --- the CRDs on 1.20 -----------------------------------------------------------------------


def for_kubernetes_1_20(crd: Obj) -> Obj:
    """A copy of an upstream Kueue CRD that a 1.20 API server takes by server-side apply.

    - `x-kubernetes-validations` (CEL rules, 1.25+): removed. 1.20's apply refuses the unknown
      field ("field not declared in schema"; a plain create would drop it silently), so the CEL
      rules are not enforced here: deploy.kueue checks the ones its objects could break.
    - `selectableFields` (1.30+, Workload v1beta2): removed, for the same reason.
    - `default: ""` (67 in Workload's embedded PodTemplate): removed; 1.20 reads them as null and
      refuses the CRD ("must be of type string").
    - a list-map key left with neither a default nor `required` by that (Workload's
      imagePullSecrets[].name) becomes required: 1.20 insists on one or the other.
    """
    adapted = copy.deepcopy(crd)
    for version in adapted["spec"]["versions"]:
        version.pop("selectableFields", None)
        _adapt_schema(version["schema"]["openAPIV3Schema"])
    return adapted


def _adapt_schema(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _adapt_schema(item)
        return
    if not isinstance(node, dict):
        return
    node.pop("x-kubernetes-validations", None)
    if node.get("default") == "":
        del node["default"]
    for value in node.values():
        _adapt_schema(value)
    # After the children: their `default: ""` is gone by now.
    items = node.get("items") or {}
    for key in node.get("x-kubernetes-list-map-keys") or ():
        if key not in items.get("required", []) and "default" not in items["properties"][key]:
            items.setdefault("required", []).append(key)


def _installed_crds(extensions: client.ApiextensionsV1Api) -> dict[str, Any]:
    return {
        crd.metadata.name: crd
        for crd in extensions.list_custom_resource_definition().items
        if crd.spec.group == GROUP
    }


def _established(crd: Any) -> bool:
    return any(c.type == "Established" and c.status == "True" for c in (crd.status.conditions or []))


def _not_served(cluster: KubernetesCluster) -> list[str]:
    """The kinds discovery does not show yet (resource_for re-reads discovery on a miss)."""
    missing = []
    for kind in KINDS:
        try:
            cluster.resource_for(API_VERSION, kind)
        except PermanentClusterError:
            missing.append(kind)
    return missing


@pytest.fixture(scope="module")
def kueue_crds(kube_api_client: client.ApiClient) -> Iterator[KubernetesCluster]:
    """An adapter on a cluster with the Kueue CRDs; they (and all Kueue objects) go afterwards.

    Its own KubernetesCluster: the session's adapter must not keep Kueue kinds in its discovery
    cache once the CRDs are gone.
    """
    extensions = client.ApiextensionsV1Api(kube_api_client)
    # An interrupted run may have left them terminating: a new apply would fail meanwhile.
    stack.wait_until(
        lambda: [
            name for name, crd in _installed_crds(extensions).items() if crd.metadata.deletion_timestamp
        ],
        lambda terminating: not terminating,
        timeout=CRD_DEADLINE_SECONDS,
        what="Kueue CRDs from an earlier run to finish terminating",
    )
    crds = [for_kubernetes_1_20(crd) for crd in load_crds()]
    names = sorted(crd["metadata"]["name"] for crd in crds)
    cluster = KubernetesCluster(kube_api_client)
    try:
        for line in cluster.apply(crds):
            assert line.startswith("CustomResourceDefinition ") and line.endswith(
                (": created", ": unchanged", ": configured")
            ), line
        stack.wait_until(
            lambda: sorted(name for name, crd in _installed_crds(extensions).items() if _established(crd)),
            lambda established: established == names,
            timeout=CRD_DEADLINE_SECONDS,
            what="the Kueue CRDs to be Established",
        )
        stack.wait_until(
            lambda: _not_served(cluster),
            lambda missing: not missing,
            timeout=DEADLINE_SECONDS,
            what=f"discovery to serve {API_VERSION}",
        )
        yield cluster
    finally:
        for name in names:
            try:
                extensions.delete_custom_resource_definition(name)
            except ApiException as exc:
                if exc.status != 404:
                    raise
        stack.wait_until(
            lambda: sorted(_installed_crds(extensions)),
            lambda left: not left,
            timeout=CRD_DEADLINE_SECONDS,
            what="the Kueue CRDs to be deleted",
        )


@pytest.fixture
def kueue(kueue_crds: KubernetesCluster) -> Iterator[KubernetesCluster]:
    """The adapter with the CRDs installed. Cluster-scoped objects outlive a test's namespaces:
    all of the console's Kueue objects are deleted afterwards (reverse apply order)."""
    yield kueue_crds
    for kind in reversed(KINDS):
        resource = kueue_crds.resource_for(API_VERSION, kind)
        for item in kueue_crds.list_objects(
            resource, None, label_selector=f"{LABEL_MANAGED_BY}={MANAGED_BY}"
        ):
            try:
                kueue_crds.dynamic.delete(
                    resource, name=item["metadata"]["name"], namespace=item["metadata"].get("namespace")
                )
            except ApiException as exc:
                if exc.status != 404:
                    raise


@pytest.fixture
def team_namespaces(kube_api_client: client.ApiClient) -> Iterator[tuple[str, str, str]]:
    """Three fresh namespace names (apply creates them), deleted afterwards."""
    names = (f"t-{uuid.uuid4().hex[:8]}", f"t-{uuid.uuid4().hex[:8]}", f"t-{uuid.uuid4().hex[:8]}")
    yield names
    for name in names:
        try:
            client.CoreV1Api(kube_api_client).delete_namespace(name, propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise


# --- helpers --------------------------------------------------------------------------------


def label(obj: Obj) -> str:
    """The adapter's name for an object in its apply lines."""
    metadata = obj["metadata"]
    where = f"{metadata['namespace']}/" if metadata.get("namespace") else ""
    return f"{obj['kind']} {where}{metadata['name']}"


def read(cluster: KubernetesCluster, obj: Obj) -> Obj:
    live = cluster.get_or_none(
        cluster.resource_for(obj["apiVersion"], obj["kind"]),
        obj["metadata"]["name"],
        obj["metadata"].get("namespace"),
    )
    assert live is not None, f"{label(obj)} is not on the cluster"
    return live


def content(obj: Obj) -> Obj:
    """What the console sets: labels, and the spec (a priority class has value and description)."""
    body = (
        {key: obj.get(key) for key in ("value", "description")}
        if obj["kind"] == "WorkloadPriorityClass"
        else obj["spec"]
    )
    return {"labels": obj["metadata"].get("labels"), "body": body}


def as_stored(obj: Obj) -> Obj:
    """The content the API server should store for a rendered object: it plus the CRD defaults."""
    expected = content(obj)
    if obj["kind"] in SERVER_DEFAULTS:
        expected["body"] = {**SERVER_DEFAULTS[obj["kind"]], **expected["body"]}
    return expected


# --- tests ----------------------------------------------------------------------------------


def test_adapting_removes_only_what_1_20_lacks() -> None:
    def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            yield f"{path}/{key}", value
            yield from walk(value, f"{path}/{key}")

    removed = {"x-kubernetes-validations": 0, "selectableFields": 0, "default": 0}
    for crd in load_crds():
        before, after = dict(walk(crd)), dict(walk(for_kubernetes_1_20(crd)))
        # Removed: whole subtrees under one of the three keys (and `default` only when "").
        for path in set(before) - set(after):
            leaves = [part for part in path.split("/") if part in removed]
            assert leaves, path
            if path.endswith(tuple(f"/{key}" for key in removed)):
                removed[path.rsplit("/", 1)[1]] += 1
                if path.endswith("/default"):
                    assert before[path] == "", path
        # Added or changed values: only the list-map key made required.
        for path in set(after):
            if path in before and (before[path] == after[path] or isinstance(after[path], dict | list)):
                continue
            assert "/imagePullSecrets/items/required" in path and after[path] in ("name", ["name"]), path
    assert removed["selectableFields"] == 1  # Workload v1beta2
    assert removed["default"] == 67  # Workload's PodTemplate
    assert removed["x-kubernetes-validations"] > 0


def test_crds_install_with_v1beta2_stored(
    kueue: KubernetesCluster, kube_api_client: client.ApiClient
) -> None:
    crds = _installed_crds(client.ApiextensionsV1Api(kube_api_client))
    assert len(crds) == 7
    for crd in crds.values():
        assert crd.status.stored_versions == ["v1beta2"], crd.metadata.name
    for kind in KINDS:
        assert kueue.resource_for(API_VERSION, kind).group_version == API_VERSION
    # Kinds by name alone (delete_labelled) resolve by discovery to the preferred v1beta2.
    assert kueue.resource_for_kind("LocalQueue").group_version == API_VERSION


def test_rendered_objects_round_trip(kueue: KubernetesCluster, team_namespaces: tuple[str, str, str]) -> None:
    team_a, team_b, _ = team_namespaces
    queues = (
        dataclasses.replace(GPU_QUEUE, namespaces=(team_a, team_b)),
        dataclasses.replace(SHARED_QUEUE, namespaces=(team_a,)),
    )
    objects = render_kueue(FLAVORS, queues, PRIORITY_CLASSES)

    assert kueue.apply(objects) == [f"{label(obj)}: created" for obj in objects]

    live = [read(kueue, obj) for obj in objects]
    for obj, stored in zip(objects, live, strict=True):
        assert stored["apiVersion"] == API_VERSION
        assert content(stored) == as_stored(obj), label(obj)
    cluster_queue = next(
        s for s in live if s["kind"] == "ClusterQueue" and s["metadata"]["name"] == "gpu-h100"
    )
    assert cluster_queue["spec"]["cohortName"] == "gpus"  # kept: v1beta2 end to end
    flavors = cluster_queue["spec"]["resourceGroups"][0]["flavors"]
    assert [f["name"] for f in flavors] == ["h100", "a100-80gb"]
    assert flavors[0]["resources"][0] == {
        "name": "nvidia.com/gpu",
        "nominalQuota": "8",
        "borrowingLimit": "4",
        "lendingLimit": "2",
    }

    # Applying the same objects again changes nothing: same lines, same resourceVersions.
    versions = [stored["metadata"]["resourceVersion"] for stored in live]
    assert kueue.apply(render_kueue(FLAVORS, queues, PRIORITY_CLASSES)) == [
        f"{label(obj)}: unchanged" for obj in objects
    ]
    assert [read(kueue, obj)["metadata"]["resourceVersion"] for obj in objects] == versions


def test_editing_a_queue(kueue: KubernetesCluster, team_namespaces: tuple[str, str, str]) -> None:
    team_a, team_b, team_c = team_namespaces
    before = dataclasses.replace(GPU_QUEUE, namespaces=(team_a, team_b))
    kueue.apply(render_kueue(FLAVORS, (before,)))

    # Less quota, no lending limits any more, another cohort, team_a out and team_c in.
    after = dataclasses.replace(
        before,
        flavors=(quota("h100", "6", "96", "1Ti", gpu_borrowing="4"), before.flavors[1]),
        cohort="inference",
        namespaces=(team_b, team_c),
    )
    objects = render_queue(after)
    lines = kueue.apply(objects)

    # LocalQueues come in namespace order.
    assert lines == [
        "ClusterQueue gpu-h100: configured",
        *sorted([f"LocalQueue {team_b}/gpu-h100: unchanged", f"LocalQueue {team_c}/gpu-h100: created"]),
    ]
    # Fields the console no longer applies are gone (server-side apply owns them), not kept.
    stored = read(kueue, objects[0])
    assert content(stored) == as_stored(objects[0])
    h100 = stored["spec"]["resourceGroups"][0]["flavors"][0]["resources"]
    assert not any("lendingLimit" in resource for resource in h100)
    assert stored["spec"]["namespaceSelector"]["matchExpressions"][0]["values"] == sorted([team_b, team_c])

    # Apply adds and updates; a namespace taken off the queue keeps its LocalQueue until the
    # console deletes it by label.
    local_queue = kueue.resource_for(API_VERSION, "LocalQueue")
    assert [q["metadata"]["name"] for q in kueue.list_objects(local_queue, team_a)] == ["gpu-h100"]
    kueue.delete_labelled(team_a, {LABEL_QUEUE: "gpu-h100"}, ("LocalQueue",))
    assert kueue.list_objects(local_queue, team_a) == []
    assert [q["metadata"]["name"] for q in kueue.list_objects(local_queue, team_b)] == ["gpu-h100"]


BROKEN = {
    "unknown-strategy": (
        lambda obj: obj["spec"].update(queueingStrategy="FIFO"),
        'spec.queueingStrategy: Unsupported value: "FIFO"',
    ),
    "flavor-name": (
        lambda obj: obj["spec"]["resourceGroups"][0]["flavors"][0].update(name="H100"),
        'spec.resourceGroups.flavors.name: Invalid value: "H100"',
    ),
    "quantity": (
        lambda obj: obj["spec"]["resourceGroups"][0]["flavors"][0]["resources"][0].update(
            nominalQuota="lots"
        ),
        'nominalQuota: Invalid value: "lots"',
    ),
    "name": (lambda obj: obj["metadata"].update(name="GPU_H100"), 'metadata.name: Invalid value: "GPU_H100"'),
}


@pytest.mark.parametrize("case", BROKEN)
def test_api_server_enforces_the_openapi_schema(kueue: KubernetesCluster, case: str) -> None:
    mutate, message = BROKEN[case]
    obj = copy.deepcopy(render_cluster_queue(GPU_QUEUE))
    mutate(obj)
    with pytest.raises(PermanentClusterError, match="cannot apply ClusterQueue") as raised:
        kueue.apply([obj])
    assert message in str(raised.value)


def test_api_server_does_not_enforce_the_cel_rules(kueue: KubernetesCluster) -> None:
    """Why deploy.kueue checks them itself: on 1.20 these are stored as they come."""
    obj = render_cluster_queue(GPU_QUEUE)
    del obj["spec"]["cohortName"]  # borrowing limits without a cohort
    del obj["spec"]["resourceGroups"][0]["flavors"][1]["resources"][2]  # a flavor without memory
    path = [int(p) if p.isdigit() else p for p in FIRST_RESOURCE.split(".")]
    node: Any = obj
    for part in path:
        node = node[part]
    node["nominalQuota"] = "-8"  # negative: a webhook rule, not even CEL

    assert kueue.apply([obj]) == ["ClusterQueue gpu-h100: created"]
    assert content(read(kueue, obj)) == as_stored(obj)


@pytest.mark.django_db
def test_a_queue_saved_in_the_console_is_applied_as_kueue_objects(
    kueue: KubernetesCluster, settings, harness_kubeconfig, namespace
) -> None:
    """The worker's path: models -> queues.kueue -> server-side apply; the queue records it."""
    from deploy import clusters
    from queues.actions import flavor_create, queue_create
    from queues.kueue import apply_queue_objects
    from queues.models import PriorityClass, Queue

    settings.CLUSTER_BACKEND = "kubernetes"
    settings.KUBECONFIG = harness_kubeconfig
    settings.SERVICE_NAMESPACE = namespace
    clusters._cluster_for.cache_clear()
    try:
        flavor_create(name="h100", node_labels={"nvidia.com/gpu.product": "NVIDIA-H100"})
        PriorityClass.objects.create(name="urgent", value=1000)
        queue = queue_create(
            name="console-queue",
            cohort="ml",
            flavors=[{"flavor": "h100", "gpus": 8, "cpu": 64, "memory_gib": 512, "gpu_borrowing_limit": 2}],
        )
        apply_queue_objects(queue)
        queue.refresh_from_db()
        assert queue.kueue_state == Queue.KueueState.APPLIED, queue.kueue_message
        assert "ClusterQueue console-queue: created" in queue.kueue_message
        cluster_queue = read(
            kueue, {"apiVersion": API_VERSION, "kind": "ClusterQueue", "metadata": {"name": "console-queue"}}
        )
        flavor = cluster_queue["spec"]["resourceGroups"][0]["flavors"][0]
        gpu = next(r for r in flavor["resources"] if r["name"] == "nvidia.com/gpu")
        assert (flavor["name"], gpu["nominalQuota"], gpu["borrowingLimit"]) == ("h100", "8", "2")
        assert cluster_queue["spec"]["cohortName"] == "ml"
        local = read(
            kueue,
            {
                "apiVersion": API_VERSION,
                "kind": "LocalQueue",
                "metadata": {"name": "console-queue", "namespace": namespace},
            },
        )
        assert local["spec"]["clusterQueue"] == "console-queue"
    finally:
        clusters._cluster_for.cache_clear()


# --- team namespaces, and Kueue's verdict on a service's pods -----------------------------------


@pytest.mark.django_db
def test_local_queues_in_team_namespaces_selected_by_the_consoles_label(
    kueue: KubernetesCluster, settings, harness_kubeconfig, team_namespaces, kube_api_client
) -> None:
    """1.20 has no kubernetes.io/metadata.name: the console labels the namespaces it manages and
    the ClusterQueue selects on that label; each allowed team's namespace gets a LocalQueue."""
    from deploy import clusters
    from deploy.kueue import NAMESPACE_LABEL
    from queues.actions import flavor_create, queue_create
    from queues.kueue import apply_queue_objects
    from queues.models import Queue, Team

    services_ns, team_a, team_b = team_namespaces
    settings.CLUSTER_BACKEND = "kubernetes"
    settings.KUBECONFIG = harness_kubeconfig
    settings.SERVICE_NAMESPACE = services_ns
    clusters._cluster_for.cache_clear()
    try:
        flavor_create(
            name="h100",
            node_labels={"nvidia.com/gpu.product": "NVIDIA-H100"},
            node_taints=[{"key": "dedicated", "value": "h100", "effect": "NoSchedule"}],
        )
        queue = queue_create(name="team-queue", flavors=[{"flavor": "h100", "gpus": 8}])
        other = queue_create(name="other-queue", flavors=[{"flavor": "h100", "gpus": 1}])
        Team.objects.create(name="a", namespace=team_a).queues.add(queue)
        Team.objects.create(name="b", namespace=team_b).queues.add(other)  # not allowed on team-queue
        apply_queue_objects(queue)
        queue.refresh_from_db()
        assert queue.kueue_state == Queue.KueueState.APPLIED, queue.kueue_message

        core = client.CoreV1Api(kube_api_client)
        for name in (services_ns, team_a):
            labels = core.read_namespace(name).metadata.labels or {}
            assert labels.get(NAMESPACE_LABEL) == name, labels
        assert (
            NAMESPACE_LABEL
            not in (core.list_namespace(field_selector=f"metadata.name={team_b}").items or [None])[
                0
            ].metadata.labels
            if core.list_namespace(field_selector=f"metadata.name={team_b}").items
            else True
        )
        # The ClusterQueue's selector matches exactly the labelled namespaces.
        stored = read(
            kueue, {"apiVersion": API_VERSION, "kind": "ClusterQueue", "metadata": {"name": "team-queue"}}
        )
        selector = stored["spec"]["namespaceSelector"]["matchExpressions"][0]
        assert (selector["key"], selector["values"]) == (NAMESPACE_LABEL, sorted([services_ns, team_a]))
        matched = core.list_namespace(label_selector=f"{NAMESPACE_LABEL} in ({','.join(selector['values'])})")
        assert sorted(n.metadata.name for n in matched.items) == sorted([services_ns, team_a])
        local_queue = kueue.resource_for(API_VERSION, "LocalQueue")
        for name in (services_ns, team_a):
            assert [q["metadata"]["name"] for q in kueue.list_objects(local_queue, name)] == ["team-queue"]
        assert kueue.list_objects(local_queue, team_b) == []

        # Team a leaves the queue: the next apply deletes its LocalQueue, and only that one.
        Team.objects.get(name="a").queues.set([other])
        apply_queue_objects(queue)
        queue.refresh_from_db()
        assert f"LocalQueue {team_a}/team-queue: deleted" in queue.kueue_message
        assert queue.kueue_namespaces == [services_ns]
        assert kueue.list_objects(local_queue, team_a) == []
        assert [q["metadata"]["name"] for q in kueue.list_objects(local_queue, services_ns)] == ["team-queue"]
        flavor = read(
            kueue, {"apiVersion": API_VERSION, "kind": "ResourceFlavor", "metadata": {"name": "h100"}}
        )
        assert flavor["spec"]["nodeTaints"] == [{"key": "dedicated", "value": "h100", "effect": "NoSchedule"}]
    finally:
        clusters._cluster_for.cache_clear()


def kueue_workload(pod: Obj, queue: str) -> Obj:
    """The Workload Kueue's pod integration creates for a pod: owned by it, labelled with its uid."""
    metadata = pod["metadata"]
    container = pod["spec"]["containers"][0]
    return {
        "apiVersion": API_VERSION,
        "kind": "Workload",
        "metadata": {
            "name": f"pod-{metadata['name']}-{uuid.uuid4().hex[:5]}",
            "namespace": metadata["namespace"],
            "labels": {"kueue.x-k8s.io/job-uid": metadata["uid"], "kueue.x-k8s.io/queue-name": queue},
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": metadata["name"],
                    "uid": metadata["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "queueName": queue,
            "podSets": [
                {
                    "name": "main",
                    "count": 1,
                    "template": {
                        "spec": {"containers": [{"name": container["name"], "image": container["image"]}]}
                    },
                }
            ],
        },
    }


def set_workload_status(cluster: KubernetesCluster, workload: Obj, *conditions: Obj, admission=None) -> None:
    """Write the status Kueue's controller would (the status subresource, as Kueue does)."""
    status: Obj = {
        "conditions": [
            {"lastTransitionTime": "2026-12-02T20:00:00Z", "observedGeneration": 1, **condition}
            for condition in conditions
        ]
    }
    if admission:
        status["admission"] = admission
    resource = cluster.resource_for(API_VERSION, "Workload")
    cluster.dynamic.patch(
        resource.subresources["status"],
        body={"status": status},
        name=workload["metadata"]["name"],
        namespace=workload["metadata"]["namespace"],
        content_type="application/merge-patch+json",
    )


QUOTA_SHORT = (
    "couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu in flavor "
    "default, 2 more needed"
)
ADMITTED = (
    {
        "type": "QuotaReserved",
        "status": "True",
        "reason": "QuotaReserved",
        "message": "Quota reserved in ClusterQueue kueue-gpus",
    },
    {"type": "Admitted", "status": "True", "reason": "Admitted", "message": "The workload is admitted"},
)
ADMISSION = {
    "clusterQueue": "kueue-gpus",
    "podSetAssignments": [{"name": "main", "flavors": {"nvidia.com/gpu": "default"}, "count": 1}],
}


@pytest.mark.django_db
def test_a_service_waiting_in_kueue_shows_kueues_own_verdict(
    kueue: KubernetesCluster, namespace, user, request
) -> None:
    """Kueue cannot run here, so the test plays its part: once the service's pod exists it creates
    the pod's Workload with the status Kueue writes when quota is short. The watcher's path
    (observe_by_name -> adapter.observe -> derive_status) must show Kueue's words as the reason,
    and let go of them once Kueue admits the pod."""
    from deploy.clusters.kubernetes.workloads import forget_workload_resource
    from deploy.sync import observe_by_name
    from deploy.tasks import reconcile_service
    from queues.actions import queue_create
    from services import phases
    from services.actions import service_create
    from services.models import InferenceService

    # The console's own adapter (CLUSTER_BACKEND=kubernetes) and a dataset its pods can mount:
    # test_reconcile_on_kubernetes's fixtures, imported above.
    cluster = request.getfixturevalue("kubernetes_backend")
    dataset = request.getfixturevalue("prewarmed_dataset")
    forget_workload_resource(cluster)
    queue = queue_create(name="kueue-gpus", gpu_quota=8)
    service = service_create(
        owner=user, name="waits", queue=queue, dataset=dataset, model_path="m", gpu_count=2
    )
    # Kueue would gate the pod (1.20 has no scheduling gates): a GPU type no node has keeps it
    # unscheduled instead, so the scheduler's verdict (Unschedulable) is what Kueue's must beat.
    InferenceService.objects.filter(id=service.id).update(gpu_type="NVIDIA-B200")
    reconcile_service(service.id)

    pods_resource = cluster.resource_for("v1", "Pod")
    (pod,) = stack.wait_until(
        lambda: cluster.list_objects(
            pods_resource, namespace, label_selector="inference.console/service=waits"
        ),
        lambda pods: len(pods) == 1,
        timeout=DEADLINE_SECONDS,
        what="the service's pod",
    )
    workload = kueue_workload(pod, "kueue-gpus")
    kueue.dynamic.create(kueue.resource_for(API_VERSION, "Workload"), body=workload, namespace=namespace)
    pending = {"type": "QuotaReserved", "status": "False", "reason": "Pending", "message": QUOTA_SHORT}
    set_workload_status(kueue, workload, pending)

    def seen() -> InferenceService:
        observe_by_name(namespace, "waits")  # what the watcher calls on a change
        return InferenceService.objects.get(id=service.id)

    waiting = stack.wait_until(
        seen, lambda s: s.reason == "WaitingForQuota", timeout=DEADLINE_SECONDS, what="Kueue's reason"
    )
    assert waiting.phase == phases.QUEUED
    assert waiting.message == f"Pod {pod['metadata']['name']} waits in Kueue queue kueue-gpus: {QUOTA_SHORT}"
    assert waiting.observed["workloads"][0]["state"] == "Pending"
    assert waiting.events.filter(reason="WaitingForQuota").exists()
    # Kueue's queue, not the console's: the console's admission pass leaves it where it is, and
    # the queue page lists it as waiting, first in line.
    from queues.selectors import queue_workloads
    from services.admission import admit_queued

    assert admit_queued(queue.id) == []
    assert InferenceService.objects.get(id=service.id).phase == phases.QUEUED
    assert not waiting.events.filter(reason="Admitted").exists()
    assert [w["name"] for w in queue_workloads(queue)["waiting"]] == ["waits"]

    # Kueue admits it: its verdict no longer holds the pod, the scheduler's does.
    set_workload_status(kueue, workload, *ADMITTED, admission=ADMISSION)
    admitted = stack.wait_until(
        seen, lambda s: s.reason == "Unschedulable", timeout=DEADLINE_SECONDS, what="the scheduler's reason"
    )
    assert admitted.observed["workloads"][0]["state"] == "Admitted"
    assert admitted.observed["workloads"][0]["flavors"] == [["nvidia.com/gpu", "default"]]


def test_the_watcher_follows_kueues_workloads_to_their_service(
    kueue: KubernetesCluster, namespace: str, kube_api_client: client.ApiClient
) -> None:
    """Kueue's verdict changes the pod's Workload, not the pod: the watcher's Workload stream
    must report the service on each change, so its reason is current without waiting for the
    next repair pass. Only the Workload stream runs here, so every report comes from it."""
    import queue as queue_module
    import threading

    from deploy.clusters.kubernetes.watch import _ServiceTracker, follow_workloads
    from deploy.clusters.kubernetes.workloads import forget_workload_resource

    forget_workload_resource(kueue)
    core = client.CoreV1Api(kube_api_client)
    core.create_namespace({"metadata": {"name": namespace}})
    labels = {LABEL_MANAGED_BY: MANAGED_BY, "inference.console/service": "chat"}
    pod = core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "chat-6d5f7c9b8-x2x4z", "labels": labels},
            "spec": {
                "automountServiceAccountToken": False,  # a new namespace has no token yet
                "containers": [{"name": "server", "image": "vllm/vllm-openai:v0.6.3"}],
            },
        },
    )
    pod_dict = kube_api_client.sanitize_for_serialization(pod)
    tracker = _ServiceTracker()
    tracker.pod_seen("ADDED", pod_dict)  # what the pod stream tells the tracker
    reported: queue_module.Queue[tuple[str, str]] = queue_module.Queue()
    stopping = threading.Event()
    follower = threading.Thread(
        target=follow_workloads,
        args=(kueue, tracker, lambda ns, service: reported.put((ns, service)), stopping),
        daemon=True,
    )
    follower.start()
    try:
        workload = kueue_workload(pod_dict, "kueue-gpus")
        kueue.dynamic.create(kueue.resource_for(API_VERSION, "Workload"), body=workload, namespace=namespace)
        assert reported.get(timeout=DEADLINE_SECONDS) == (namespace, "chat")  # created
        while not reported.empty():
            reported.get_nowait()
        pending = {"type": "QuotaReserved", "status": "False", "reason": "Pending", "message": QUOTA_SHORT}
        set_workload_status(kueue, workload, pending)
        assert reported.get(timeout=DEADLINE_SECONDS) == (namespace, "chat")  # Kueue's verdict
        # Kueue's own Events name the Workload: they map to the service too.
        event = {
            "involvedObject": {
                "kind": "Workload",
                "name": workload["metadata"]["name"],
                "namespace": namespace,
            }
        }
        assert tracker.event_seen("ADDED", event) == (namespace, "chat")
    finally:
        stopping.set()
        follower.join(timeout=10)
    assert not follower.is_alive(), "follow_workloads did not return after stop"

    # And the watcher runs that stream beside its other three.
    stop = threading.Event()
    watcher = threading.Thread(target=kueue.watch, args=(lambda *_: None, stop.is_set), daemon=True)
    watcher.start()
    try:
        stack.wait_until(
            lambda: {t.name for t in threading.enumerate()},
            lambda names: "k8s-watch-workloads" in names,
            timeout=DEADLINE_SECONDS,
            what="the watcher's Workload stream",
        )
    finally:
        stop.set()
        watcher.join(timeout=10)
    assert not watcher.is_alive()
