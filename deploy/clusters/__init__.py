"""Cluster adapters: one small interface, two implementations.

`get_cluster()` returns the adapter chosen by settings.CLUSTER_BACKEND.
"""

from functools import cache

from django.conf import settings

from deploy.clusters.base import Cluster, ClusterError, PermanentClusterError, TransientClusterError


@cache
def _cluster_for(backend: str) -> Cluster:
    if backend == "kubernetes":
        from deploy.clusters.kubernetes import KubernetesCluster

        return KubernetesCluster.from_settings()
    from deploy.clusters.simulated import SimulatedCluster

    return SimulatedCluster.from_settings()


def get_cluster() -> Cluster:
    return _cluster_for(settings.CLUSTER_BACKEND)


__all__ = ["Cluster", "ClusterError", "PermanentClusterError", "TransientClusterError", "get_cluster"]
