"""The Cluster protocol over a real Kubernetes API server, with the official `kubernetes` client.

The modules, each a concern:
- errors: every client/API failure becomes a TransientClusterError (worth retrying) or a
  PermanentClusterError (carrying the API server's own message);
- api: the dynamic client, discovery (does the cluster serve this apiVersion+kind?) and paged
  reads, all returning plain API dicts (camelCase, as `kubectl get -o json` shows them);
- observe: pure functions from those dicts to an Observation or a JobObservation (unit-tested
  without a cluster in tests/unit/test_kubernetes_observe.py);
- watch: one thread per watch stream (Deployments, Pods, Events, Kueue Workloads) calling on_change;
- adapter: KubernetesCluster, wiring them: server-side apply under one field manager,
  delete (a service, or any kinds by label), observe (a service, a Job), watch, pod logs and nodes.
"""

from deploy.clusters.kubernetes.adapter import KubernetesCluster
from deploy.clusters.kubernetes.errors import translate_error
from deploy.clusters.kubernetes.observe import (
    MAX_EVENTS,
    job_observation_from,
    node_info,
    observation_from,
    pod_observation,
)
from deploy.clusters.kubernetes.watch import _ServiceTracker

__all__ = [
    "MAX_EVENTS",
    "KubernetesCluster",
    "_ServiceTracker",
    "job_observation_from",
    "node_info",
    "observation_from",
    "pod_observation",
    "translate_error",
]
