"""The simulated cluster: the embedded default backend, so the console runs with no cluster.

Everything the cluster holds is in the database, because the web server, the Celery worker and
the watcher are separate processes; pod status is never stored but computed from the rows and
the clock, as the harness's kubelet simulator (deploy/testenv/kubelet_sim.py) computes it.
Failures are injected in the harness's vocabulary, so a test triggers the same failure on both.

The modules read in this order, the pure ones first:
  nodes (the nodes file) -> scheduler (pure) -> faults (what fails, and how)
  -> pods (status, events and logs; pure) -> deployments (templates and conditions; pure)
  -> apply (the API server and ReplicaSet controller over rows)
  -> adapter (SimulatedCluster: apply, observe, delete, watch, logs).
"""

from console.validators import parse_quantity
from deploy.clusters.simulated.adapter import SimulatedCluster
from deploy.clusters.simulated.faults import pull_error
from deploy.clusters.simulated.pods import pull_attempts_after, restarts_after
from deploy.clusters.simulated.scheduler import PodNeeds, node_misfit, pick_node, tolerates

__all__ = [
    "PodNeeds",
    "SimulatedCluster",
    "node_misfit",
    "parse_quantity",
    "pick_node",
    "pull_attempts_after",
    "pull_error",
    "restarts_after",
    "tolerates",
]
