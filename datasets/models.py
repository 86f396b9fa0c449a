from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from console.validators import validate_dns_label
from deploy.spec import ModelVolume


class Dataset(models.Model):
    """Where model files live. Services mount it read-only and point the runtime inside it."""

    class Kind(models.TextChoices):
        NFS = "nfs", "NFS"
        S3 = "s3", "S3"
        LOCAL = "local", "Local path on the node"
        PVC = "pvc", "Existing PVC"

    class Phase(models.TextChoices):
        PENDING = "Pending"
        PREWARMING = "Prewarming"
        READY = "Ready"
        FAILED = "Failed"

    name = models.CharField(
        max_length=63, unique=True, validators=[validate_dns_label], help_text="e.g. nfs-models"
    )
    description = models.CharField(max_length=200, blank=True)
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.NFS)
    nfs_server = models.CharField(max_length=253, blank=True, help_text="NFS server host or IP.")
    nfs_path = models.CharField(max_length=1024, blank=True, help_text="Exported path, e.g. /exports/models.")
    s3_endpoint = models.URLField(blank=True, help_text="Endpoint URL; empty for AWS.")
    s3_bucket = models.CharField(max_length=63, blank=True)
    s3_prefix = models.CharField(max_length=1024, blank=True)
    s3_region = models.CharField(max_length=32, blank=True)
    local_path = models.CharField(max_length=1024, blank=True, help_text="Absolute path on the GPU nodes.")
    pvc_name = models.CharField(max_length=253, blank=True, validators=[validate_dns_label])
    phase = models.CharField(max_length=16, choices=Phase.choices, default=Phase.PENDING)
    phase_message = models.CharField(max_length=500, blank=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="datasets")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    # Which fields each kind needs; the form and the API report a missing one next to the field.
    REQUIRED_FIELDS = {
        Kind.NFS: ("nfs_server", "nfs_path"),
        Kind.S3: ("s3_bucket",),
        Kind.LOCAL: ("local_path",),
        Kind.PVC: ("pvc_name",),
    }

    def clean(self) -> None:
        errors: dict[str, str] = {}
        for field in self.REQUIRED_FIELDS.get(self.kind, ()):
            if not getattr(self, field):
                label = self._meta.get_field(field).verbose_name
                errors[field] = f"A {self.get_kind_display()} dataset needs its {label}."
        for field in ("nfs_path", "local_path"):
            value = getattr(self, field)
            if value and (not value.startswith("/") or ".." in value.split("/")):
                errors[field] = "Give an absolute path without '..', e.g. /exports/models."
        if errors:
            raise ValidationError(errors)

    @property
    def is_ready(self) -> bool:
        return self.phase == self.Phase.READY

    @property
    def location(self) -> str:
        if self.kind == self.Kind.NFS:
            return f"{self.nfs_server}:{self.nfs_path}"
        if self.kind == self.Kind.S3:
            return f"s3://{self.s3_bucket}/{self.s3_prefix}".rstrip("/")
        if self.kind == self.Kind.LOCAL:
            return self.local_path
        return f"pvc/{self.pvc_name}"

    def model_volume(self) -> ModelVolume:
        """How pods see this dataset. S3 is prewarmed into a cluster-local PVC first."""
        if self.kind == self.Kind.NFS:
            return ModelVolume(kind="nfs", nfs_server=self.nfs_server, nfs_path=self.nfs_path)
        if self.kind == self.Kind.LOCAL:
            return ModelVolume(kind="hostPath", host_path=self.local_path)
        if self.kind == self.Kind.PVC:
            return ModelVolume(kind="pvc", claim_name=self.pvc_name)
        return ModelVolume(kind="pvc", claim_name=f"dataset-{self.name}")


class DatasetEvent(models.Model):
    """One line of a dataset's history (created, prewarm started/finished/failed)."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="events")
    created_at = models.DateTimeField(auto_now_add=True)
    message = models.CharField(max_length=1000)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return self.message
