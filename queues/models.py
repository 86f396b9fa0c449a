"""Queues and what governs them, as Kueue models it: resource flavors (kinds of nodes), queues
with a quota per flavor (a ClusterQueue, plus a LocalQueue in the services' namespace), priority
classes, and teams with their own limits. The console renders these into Kueue objects
(deploy/kueue.py) and applies the same rules itself where no Kueue runs (queues/admission.py)."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from console.validators import node_label_problems, toleration_problems, validate_dns_label

GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GIB = 2**30


class ResourceFlavor(models.Model):
    """A kind of node (a Kueue ResourceFlavor): the node labels that pick those nodes, and the
    tolerations their taints need. Services admitted to a flavor are placed on its nodes."""

    # The flavor every node belongs to: simple queues have their quota on it.
    DEFAULT = "default"

    name = models.CharField(
        max_length=63, unique=True, validators=[validate_dns_label], help_text="e.g. h100, a100-80gb, cpu"
    )
    description = models.CharField(max_length=200, blank=True)
    node_labels = models.JSONField(
        default=dict,
        blank=True,
        help_text='Nodes of this flavor carry all these labels, e.g. {"nvidia.com/gpu.product": '
        '"NVIDIA-H100-80GB-HBM3"}. Empty: every node.',
    )
    tolerations = models.JSONField(
        default=list,
        blank=True,
        help_text='Tolerations for the taints these nodes carry, e.g. [{"key": "nvidia.com/gpu", '
        '"operator": "Exists", "effect": "NoSchedule"}].',
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors = {}
        if problems := node_label_problems(self.node_labels):
            errors["node_labels"] = problems
        if problems := toleration_problems(self.tolerations):
            errors["tolerations"] = problems
        if errors:
            raise ValidationError(errors)

    @property
    def gpu_product(self) -> str:
        return str((self.node_labels or {}).get(GPU_PRODUCT_LABEL, ""))


class Queue(models.Model):
    """A place services wait for GPUs (a Kueue ClusterQueue, with a LocalQueue of the same name in
    the services' namespace). Its quota is a set of FlavorQuota rows, tried in order."""

    class Strategy(models.TextChoices):
        BEST_EFFORT_FIFO = "BestEffortFIFO", "Best-effort FIFO (a later service that fits may go first)"
        STRICT_FIFO = "StrictFIFO", "Strict FIFO (nobody overtakes the head of the queue)"

    name = models.CharField(
        max_length=63,
        unique=True,
        validators=[validate_dns_label],
        help_text="Lowercase DNS label, e.g. gpu-a100. Services carry it as kueue.x-k8s.io/queue-name.",
    )
    description = models.CharField(max_length=200, blank=True)
    cohort = models.CharField(
        max_length=63,
        blank=True,
        validators=[validate_dns_label],
        help_text="Queues in the same cohort lend each other unused quota. Empty: no borrowing.",
    )
    strategy = models.CharField(
        "Queueing strategy", max_length=16, choices=Strategy.choices, default=Strategy.BEST_EFFORT_FIFO
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class KueueState(models.TextChoices):
        PENDING = "Pending"
        APPLIED = "Applied"
        NOT_APPLIED = "NotApplied", "Not applied (no Kueue)"
        FAILED = "Failed"

    # What happened to the queue's Kueue objects (queues.kueue), shown on the queue's page.
    kueue_state = models.CharField(max_length=16, choices=KueueState.choices, default=KueueState.PENDING)
    kueue_message = models.CharField(max_length=1000, blank=True)
    kueue_applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    # Paths under /queues/ that a queue of the same name would hide.
    RESERVED_NAMES = {"new", "flavors"}

    def clean(self) -> None:
        if self.name in self.RESERVED_NAMES:
            raise ValidationError(
                {"name": f"{self.name} is taken by the console's own pages (/queues/{self.name}/)."}
            )

    @property
    def strict_fifo(self) -> bool:
        return self.strategy == self.Strategy.STRICT_FIFO

    @property
    def gpu_quota(self) -> int:
        """GPUs over all flavors (prefetch `quotas` when listing queues)."""
        return sum(quota.gpus for quota in self.quotas.all())


class FlavorQuota(models.Model):
    """A queue's nominal quota in one flavor (a ClusterQueue resourceGroups[].flavors[] entry)."""

    queue = models.ForeignKey(Queue, on_delete=models.CASCADE, related_name="quotas")
    flavor = models.ForeignKey(ResourceFlavor, on_delete=models.PROTECT, related_name="quotas")
    position = models.PositiveSmallIntegerField(default=0, help_text="Flavors are tried in this order.")
    gpus = models.PositiveIntegerField(
        "GPUs", default=8, validators=[MaxValueValidator(10_000)], help_text="nvidia.com/gpu"
    )
    cpu = models.DecimalField(
        "CPU cores", max_digits=8, decimal_places=1, default=64, validators=[MinValueValidator(0)]
    )
    memory_gib = models.PositiveIntegerField(
        "Memory (GiB)", default=512, validators=[MaxValueValidator(1_000_000)]
    )
    gpu_borrowing_limit = models.PositiveIntegerField(
        "GPU borrowing limit",
        null=True,
        blank=True,
        help_text="GPUs this queue may borrow from its cohort in this flavor. Empty: no limit.",
    )
    gpu_lending_limit = models.PositiveIntegerField(
        "GPU lending limit",
        null=True,
        blank=True,
        help_text="Of its unused GPUs, how many the cohort may borrow. Empty: all of them.",
    )

    class Meta:
        ordering = ["queue", "position", "id"]
        constraints = [models.UniqueConstraint(fields=["queue", "flavor"], name="flavor_quota_unique")]

    def __str__(self) -> str:
        return f"{self.queue} / {self.flavor}"

    def clean(self) -> None:
        if self.gpu_lending_limit is not None and self.gpu_lending_limit > self.gpus:
            raise ValidationError({"gpu_lending_limit": "A queue cannot lend more GPUs than its quota."})

    @property
    def cpu_milli(self) -> int:
        return int(self.cpu * 1000)

    @property
    def memory_bytes(self) -> int:
        return self.memory_gib * GIB


class PriorityClass(models.Model):
    """A Kueue WorkloadPriorityClass: higher values go first in a queue."""

    name = models.CharField(max_length=63, unique=True, validators=[validate_dns_label])
    value = models.IntegerField(validators=[MinValueValidator(-1_000_000), MaxValueValidator(1_000_000)])
    description = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-value", "name"]
        verbose_name_plural = "priority classes"

    def __str__(self) -> str:
        return f"{self.name} ({self.value})"


class Team(models.Model):
    """People who share limits the console enforces itself (Kueue has no per-team caps), and the
    queues they may use."""

    name = models.CharField(max_length=63, unique=True, validators=[validate_dns_label])
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="teams", blank=True)
    queues = models.ManyToManyField(
        Queue, related_name="teams", blank=True, help_text="Queues the team may use. None: every queue."
    )
    max_gpus = models.PositiveIntegerField(
        "Max GPUs",
        null=True,
        blank=True,
        help_text="GPUs the team's services may hold at once. Empty: no cap.",
    )
    max_services = models.PositiveIntegerField(
        null=True, blank=True, help_text="Live services the team may have. Empty: no cap."
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
