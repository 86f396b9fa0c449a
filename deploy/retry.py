"""How every task that talks to the cluster retries: only transient errors (timeouts, 429, 5xx,
conflicts), with exponential backoff and jitter; permanent ones are the task's to record."""

from deploy.clusters import TransientClusterError

RETRY_TRANSIENT = {
    "autoretry_for": (TransientClusterError,),
    "retry_backoff": 2,
    "retry_backoff_max": 120,
    "retry_jitter": True,
    "max_retries": 10,
    "acks_late": True,
}
