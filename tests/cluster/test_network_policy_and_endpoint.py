"""The gateway's view of a service on a real kube-apiserver v1.20.2: the NetworkPolicy in front of
the model pods applies and goes with the service, and service_endpoint names the cluster DNS
address of the Service (an address only, never connected to from here)."""

from __future__ import annotations

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from deploy.clusters.base import LABEL_SERVICE
from deploy.render import GATEWAY_NAMESPACE_LABEL, MONITORING_NAMESPACE_LABEL, render_service
from tests.cluster.test_kubernetes_adapter import NAME, make_spec, wait_until

pytestmark = pytest.mark.cluster


def policies(kube_api_client, namespace: str) -> list:
    return client.NetworkingV1Api(kube_api_client).list_namespaced_network_policy(namespace).items


def test_network_policy_applies_and_is_deleted_with_the_service(cluster, kube_api_client, namespace):
    spec = make_spec(namespace, runtime="triton", image="nvcr.io/nvidia/tritonserver:25.01-py3")

    lines = cluster.apply(render_service(spec))
    assert f"NetworkPolicy {namespace}/{NAME}: created" in lines
    assert f"NetworkPolicy {namespace}/{NAME}: unchanged" in cluster.apply(render_service(spec))

    (policy,) = policies(kube_api_client, namespace)
    assert policy.metadata.labels[LABEL_SERVICE] == NAME
    assert policy.spec.pod_selector.match_labels[LABEL_SERVICE] == NAME
    assert policy.spec.policy_types == ["Ingress"]
    gateway, monitoring = policy.spec.ingress
    assert gateway._from[0].namespace_selector.match_labels == dict([GATEWAY_NAMESPACE_LABEL])
    assert sorted(p.port for p in gateway.ports) == [8000, 8001]
    assert monitoring._from[0].namespace_selector.match_labels == dict([MONITORING_NAMESPACE_LABEL])
    assert [p.port for p in monitoring.ports] == [8002]
    # The policy selects the service's pods: the same labels the Deployment puts on them.
    deployment = client.AppsV1Api(kube_api_client).read_namespaced_deployment(NAME, namespace)
    pod_labels = deployment.spec.template.metadata.labels
    assert policy.spec.pod_selector.match_labels.items() <= pod_labels.items()

    cluster.delete_service(namespace, NAME)
    wait_until(
        lambda: policies(kube_api_client, namespace), lambda items: not items, what="the NetworkPolicy to go"
    )
    observation = wait_until(
        lambda: cluster.observe(namespace, NAME),
        lambda o: not o.anything_left,
        what="every object of the service to go",
    )
    assert observation.other_objects == 0


def test_service_endpoint_is_the_cluster_dns_name_of_our_service(
    cluster, kube_api_client, namespace, settings
):
    assert cluster.service_endpoint(namespace=namespace, name=NAME) is None  # nothing applied yet
    cluster.apply(render_service(make_spec(namespace, replicas=0)))

    settings.CLUSTER_DOMAIN = "cluster.local"
    assert cluster.service_endpoint(namespace=namespace, name=NAME) == (
        f"http://{NAME}.{namespace}.svc.cluster.local:8000"
    )
    settings.CLUSTER_DOMAIN = "corp.internal"
    assert cluster.service_endpoint(namespace=namespace, name=NAME).endswith(".svc.corp.internal:8000")
    # vLLM's Service has no port named grpc; Triton's does (8001), which gRPC calls go to.
    assert cluster.service_endpoint(namespace=namespace, name=NAME, port="grpc") is None
    triton_image = "nvcr.io/nvidia/tritonserver:25.01-py3"
    cluster.apply(
        render_service(make_spec(namespace, name="vision", runtime="triton", image=triton_image, replicas=0))
    )
    assert cluster.service_endpoint(namespace=namespace, name="vision", port="grpc") == (
        f"http://vision.{namespace}.svc.corp.internal:8001"
    )

    # A Service of the same name the console did not make is not routed to.
    core = client.CoreV1Api(kube_api_client)
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "stranger"},
            "spec": {"ports": [{"name": "http", "port": 9000, "protocol": "TCP"}]},
        },
    )
    assert cluster.service_endpoint(namespace=namespace, name="stranger") is None

    cluster.delete_service(namespace, NAME)

    def gone() -> bool:
        try:
            core.read_namespaced_service(NAME, namespace)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_until(gone, bool, what="the Service to be deleted")
    assert cluster.service_endpoint(namespace=namespace, name=NAME) is None
