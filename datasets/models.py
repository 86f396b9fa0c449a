import ipaddress
import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from console.crypto import decrypt_json, encrypt_json
from console.validators import validate_dns_label, validate_quantity
from datasets.copier import modelscope
from datasets.copier.hub import valid_repo_id
from deploy.spec import ModelVolume

HOST_NAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


# A git ref name as the hub takes it (branch, tag, refs/pr/N or a commit id); no "..", no leading "-" or "/".
REVISION = re.compile(r"^(?!.*\.\.)(?![-/])[A-Za-z0-9._/-]{1,255}(?<![/.])$")


def _is_revision(value: str) -> bool:
    return bool(REVISION.match(value))


def _is_host(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return bool(HOST_NAME.match(value))
    return True


class Dataset(models.Model):
    """Where model files live. Services mount it read-only and point the runtime inside it."""

    class Kind(models.TextChoices):
        NFS = "nfs", "NFS"
        S3 = "s3", "S3"
        LOCAL = "local", "Local path on the node"
        PVC = "pvc", "Existing PVC"
        HUB = "hf", "Hugging Face Hub"
        MODELSCOPE = "modelscope", "ModelScope"

    class Phase(models.TextChoices):
        PENDING = "Pending"
        PREWARMING = "Prewarming"
        READY = "Ready"
        FAILED = "Failed"

    name = models.CharField(
        max_length=63, unique=True, validators=[validate_dns_label], help_text="e.g. nfs-models"
    )
    description = models.CharField(max_length=200, blank=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.NFS)
    nfs_server = models.CharField(
        "NFS server", max_length=253, blank=True, help_text="NFS server host or IP."
    )
    nfs_path = models.CharField(
        "NFS path", max_length=1024, blank=True, help_text="Exported path, e.g. /exports/models."
    )
    s3_endpoint = models.URLField("S3 endpoint", blank=True, help_text="Endpoint URL; empty for AWS.")
    s3_bucket = models.CharField("S3 bucket", max_length=63, blank=True)
    s3_prefix = models.CharField("S3 prefix", max_length=1024, blank=True)
    s3_region = models.CharField("S3 region", max_length=32, blank=True)
    s3_path_style = models.BooleanField(
        "S3 path-style addressing", default=False, help_text="Needed by most non-AWS servers (MinIO, Ceph)."
    )
    # The hub fields serve both hubs: Hugging Face and ModelScope repos are named, versioned and
    # mirrored the same way.
    hub_repo = models.CharField(
        "repository",
        max_length=200,
        blank=True,
        help_text="owner/name on the hub, e.g. THUDM/chatglm2-6b (Hugging Face) or ZhipuAI/chatglm2-6b "
        "(ModelScope).",
    )
    hub_revision = models.CharField(
        "revision",
        max_length=255,
        blank=True,
        default="",
        help_text="Branch, tag (or, on Hugging Face, commit id); empty for main (Hugging Face) or "
        "master (ModelScope).",
    )
    hub_endpoint = models.URLField(
        "hub endpoint",
        blank=True,
        help_text="Empty for https://huggingface.co or https://www.modelscope.cn; a mirror, e.g. "
        "https://hf-mirror.com.",
    )
    # Access key and secret (and the hub token), encrypted (console.crypto); never shown back, only replaced.
    credentials_encrypted = models.TextField(blank=True, editable=False)
    local_path = models.CharField(
        "node path", max_length=1024, blank=True, help_text="Absolute path on the GPU nodes."
    )
    pvc_name = models.CharField("PVC name", max_length=253, blank=True, validators=[validate_dns_label])
    cache_size = models.CharField(
        max_length=16,
        blank=True,
        validators=[validate_quantity],
        help_text="Size of the cluster-local copy (PVC), e.g. 200Gi; empty for the console's default.",
    )
    storage_class = models.CharField(
        max_length=253, blank=True, help_text="Storage class of the copy; empty for the cluster's default."
    )
    # The files as last listed by a prewarm: [[path, size], ...], for browsing NFS copies.
    files = models.JSONField(default=list, blank=True, editable=False)
    phase = models.CharField(max_length=16, choices=Phase.choices, default=Phase.PENDING)
    phase_message = models.CharField(max_length=500, blank=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="datasets")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    PREWARMED_KINDS = (Kind.NFS, Kind.S3, Kind.HUB, Kind.MODELSCOPE)
    # Which fields each kind needs; the form and the API report a missing one next to the field.
    REQUIRED_FIELDS = {
        Kind.NFS: ("nfs_server", "nfs_path"),
        Kind.S3: ("s3_bucket",),
        Kind.LOCAL: ("local_path",),
        Kind.PVC: ("pvc_name",),
        Kind.HUB: ("hub_repo",),
        Kind.MODELSCOPE: ("hub_repo",),
    }

    def clean(self) -> None:
        errors: dict[str, str] = {}
        for field in self.REQUIRED_FIELDS.get(self.kind, ()):
            if not getattr(self, field):
                label = self._meta.get_field(field).verbose_name
                errors[field] = f"Give the {label}: a dataset of kind {self.get_kind_display()} needs it."
        if self.nfs_server and not _is_host(self.nfs_server):
            errors["nfs_server"] = "Give a host name or an IP address, e.g. nfs.example.com or 10.0.0.5."
        if self.kind in (self.Kind.HUB, self.Kind.MODELSCOPE):
            default = "main" if self.kind == self.Kind.HUB else modelscope.DEFAULT_REVISION
            self.hub_revision = self.hub_revision.strip() or default
            self.hub_endpoint = self.hub_endpoint.rstrip("/")
        if self.kind == self.Kind.MODELSCOPE:
            if self.hub_repo and not modelscope.valid_repo_id(self.hub_repo):
                errors["hub_repo"] = "Give the repository as owner/name, e.g. ZhipuAI/chatglm2-6b."
        elif self.hub_repo and not valid_repo_id(self.hub_repo):
            errors["hub_repo"] = "Give the repository as owner/name, e.g. THUDM/chatglm2-6b."
        if self.hub_revision and not _is_revision(self.hub_revision):
            errors["hub_revision"] = "Give a branch, a tag or a commit id, e.g. main or v1.0."
        for field in ("nfs_path", "local_path"):
            value = getattr(self, field)
            if value and (not value.startswith("/") or ".." in value.split("/")):
                errors[field] = "Give an absolute path without '..', e.g. /exports/models."
        if errors:
            raise ValidationError(errors)

    @property
    def prewarmed(self) -> bool:
        """NFS, S3 and hub (Hugging Face, ModelScope) files are copied into a cluster-local PVC;
        PVCs and node paths are used in place."""
        return self.kind in self.PREWARMED_KINDS

    @property
    def cache_claim_name(self) -> str:
        return f"dataset-{self.name}"

    def credentials(self) -> dict[str, str]:
        return decrypt_json(self.credentials_encrypted)

    def set_credentials(self, values: dict[str, str]) -> None:
        self.credentials_encrypted = encrypt_json({k: v for k, v in values.items() if v})

    @property
    def has_credentials(self) -> bool:
        return bool(self.credentials_encrypted)

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
        if self.kind == self.Kind.HUB:
            where = f"hf://{self.hub_repo}@{self.hub_revision or 'main'}"
            return f"{where} via {self.hub_endpoint}" if self.hub_endpoint else where
        if self.kind == self.Kind.MODELSCOPE:
            where = f"{modelscope.SCHEME}{self.hub_repo}@{self.hub_revision or modelscope.DEFAULT_REVISION}"
            return f"{where} via {self.hub_endpoint}" if self.hub_endpoint else where
        return f"pvc/{self.pvc_name}"

    def model_volume(self) -> ModelVolume:
        """How pods see this dataset: the prewarmed copy, or the PVC / node path itself."""
        if self.kind == self.Kind.LOCAL:
            return ModelVolume(kind="hostPath", host_path=self.local_path)
        if self.kind == self.Kind.PVC:
            return ModelVolume(kind="pvc", claim_name=self.pvc_name)
        return ModelVolume(kind="pvc", claim_name=self.cache_claim_name)


class DatasetEvent(models.Model):
    """One line of a dataset's history (created, prewarm started/finished/failed)."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="events")
    created_at = models.DateTimeField(auto_now_add=True)
    message = models.CharField(max_length=1000)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return self.message


class PrewarmRun(models.Model):
    """One prewarm of a dataset: a Job copying its files into the cluster-local PVC.

    The row is the job's record: status, live progress (from the copier's JSON lines) and
    the tail of its log, so the page survives reloads and worker restarts.
    """

    class Status(models.TextChoices):
        PENDING = "Pending"
        RUNNING = "Running"
        SUCCEEDED = "Succeeded"
        FAILED = "Failed"

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="prewarm_runs")
    job_name = models.CharField(max_length=63)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    reason = models.CharField(max_length=64, blank=True)
    message = models.CharField(max_length=2000, blank=True)
    files_total = models.PositiveIntegerField(default=0)
    files_done = models.PositiveIntegerField(default=0)
    files_skipped = models.PositiveIntegerField(default=0)
    bytes_total = models.PositiveBigIntegerField(default=0)
    bytes_done = models.PositiveBigIntegerField(default=0)
    rate_bytes_per_second = models.FloatField(default=0)
    eta_seconds = models.FloatField(null=True, blank=True)
    log_tail = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.job_name} {self.status}"

    @property
    def is_finished(self) -> bool:
        return self.status in {self.Status.SUCCEEDED, self.Status.FAILED}

    @property
    def percent(self) -> int:
        if self.status == self.Status.SUCCEEDED:
            return 100
        return int(100 * self.bytes_done / self.bytes_total) if self.bytes_total else 0
