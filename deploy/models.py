"""State of the simulated cluster (deploy.clusters.simulated).

The web server, the Celery worker and the watcher are separate processes that must see
the same fake cluster, so its objects and pods live in the database, not in memory.
Pod *status* is not stored: it is computed from `scheduled_at`, the clock and the fault
settings each time the cluster is observed, as a kubelet would report it.
"""

from django.db import models


class SimulatedObject(models.Model):
    """One applied object (Deployment, Service, ConfigMap, Secret, Namespace) as last applied."""

    api_version = models.CharField(max_length=100)
    kind = models.CharField(max_length=63)
    namespace = models.CharField(max_length=63, blank=True, help_text="Blank for cluster-scoped kinds.")
    name = models.CharField(max_length=253)
    # Value of the inference.console/service label, kept in its own column so observing
    # and deleting a service is one indexed query on every database.
    service = models.CharField(max_length=63, blank=True, db_index=True)
    labels = models.JSONField(default=dict, blank=True)
    body = models.JSONField(default=dict)
    # A Secret's values, encrypted (console.crypto): `body` keeps only digests of them, and the
    # simulated kubelet decrypts them into the environment of the Job pods that use the Secret.
    secret_data = models.TextField(blank=True)
    generation = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["kind", "namespace", "name"]
        constraints = [
            models.UniqueConstraint(fields=["kind", "namespace", "name"], name="simulated_object_unique")
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"


class SimulatedPod(models.Model):
    """A pod created for a simulated Deployment or Job; `node` is blank until the scheduler binds it."""

    namespace = models.CharField(max_length=63)
    name = models.CharField(max_length=253)
    deployment = models.CharField(max_length=253, blank=True, help_text="Name of the owning Deployment.")
    job = models.CharField(max_length=253, blank=True, help_text="Name of the owning Job.")
    service = models.CharField(max_length=63, blank=True, db_index=True)  # as SimulatedObject.service
    labels = models.JSONField(default=dict, blank=True)
    annotations = models.JSONField(default=dict, blank=True)
    template_hash = models.CharField(max_length=16)
    node = models.CharField(max_length=253, blank=True, db_index=True)
    # Summed container requests as numbers: cpu in cores, memory in bytes, others as counts.
    requests = models.JSONField(default=dict, blank=True)
    # One entry per app container: {"name", "image", "memory_limit" (bytes or null), "port",
    # "model_dir"}. Image and memory limit are per container, so they live here.
    containers = models.JSONField(default=list)
    # What the scheduler reads: {"nodeSelector", "affinity", "tolerations"} of the pod spec.
    scheduling = models.JSONField(default=dict, blank=True)
    restart_policy = models.CharField(max_length=16, default="Always")
    created_at = models.DateTimeField()
    scheduled_at = models.DateTimeField(null=True, blank=True)
    # Job pods only: when the simulated kubelet started the pod's process (see simulated/jobs.py).
    started_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["namespace", "created_at", "name"]
        constraints = [models.UniqueConstraint(fields=["namespace", "name"], name="simulated_pod_unique")]
        indexes = [models.Index(fields=["namespace", "deployment"], name="simulated_pod_deployment")]

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def image(self) -> str:
        """The first container's image, for lists."""
        return self.containers[0]["image"] if self.containers else ""
