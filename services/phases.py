"""The service state machine: phases, which are terminal, which the cluster decides."""

PENDING = "Pending"
QUEUED = "Queued"
PREWARMING = "Prewarming"
DEPLOYING = "Deploying"
STARTING = "Starting"
RUNNING = "Running"
DEGRADED = "Degraded"
FAILED = "Failed"
STOPPED = "Stopped"
DELETING = "Deleting"
DELETED = "Deleted"

CHOICES = [
    (p, p)
    for p in (
        PENDING,
        QUEUED,
        PREWARMING,
        DEPLOYING,
        STARTING,
        RUNNING,
        DEGRADED,
        FAILED,
        STOPPED,
        DELETING,
        DELETED,
    )
]

# Nothing more will happen without someone acting: pages stop polling.
TERMINAL = {RUNNING, FAILED, STOPPED, DELETED}
# Objects were applied: the phase now follows what the cluster reports.
# Queued is observed too when Kueue holds the applied pods (deploy.status); the console's own
# Queued (nothing applied yet, applied_revision empty) is left alone by observations.
OBSERVED = {QUEUED, DEPLOYING, STARTING, RUNNING, DEGRADED, FAILED, STOPPED}
# Live services: not stopped or on their way out.
ACTIVE = {PENDING, QUEUED, PREWARMING, DEPLOYING, STARTING, RUNNING, DEGRADED, FAILED}
# Admitted services: they hold queue quota (a Queued one waits for it; Deleting releases it at once).
HOLDING = ACTIVE - {QUEUED}
# Services with (some) ready replicas: the gateway routes calls only to these.
SERVING = {RUNNING, DEGRADED}
# Failures the console decided (not the cluster): an observation does not undo them.
STICKY_FAILURE_REASONS = {"InvalidSpec", "ApplyFailed", "StartTimeout", "PrewarmFailed"}

BADGE = {
    RUNNING: "ok",
    DEGRADED: "warn",
    FAILED: "bad",
    STOPPED: "muted",
    DELETED: "muted",
    DELETING: "muted",
}
