"""Queues and what governs them, as Kueue models it: resource flavors (kinds of nodes), queues
with a quota per flavor (a ClusterQueue, plus a LocalQueue in the services' namespace), priority
classes, and teams with their own limits. The console renders these into Kueue objects
(deploy/kueue.py) and applies the same rules itself where no Kueue runs (queues/admission.py)."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from console.validators import (
    LABEL_VALUE,
    QUALIFIED_NAME,
    node_label_problems,
    toleration_problems,
    validate_dns_label,
)

GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GIB = 2**30
# A node taint's effects (a taint always has one, unlike a toleration).
NODE_TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def node_taint_problems(taints: object) -> list[str]:
    """What is wrong with a list of {key, value, effect} node taints, one sentence each."""
    if not isinstance(taints, list):
        return ["Give a list of {key, value, effect} taints."]
    problems = []
    for taint in taints:
        if not isinstance(taint, dict) or not set(taint) <= {"key", "value", "effect"}:
            problems.append("Each taint has a key, an optional value and an effect.")
            continue
        key, value, effect = taint.get("key", ""), taint.get("value", ""), taint.get("effect", "")
        if not isinstance(key, str) or not QUALIFIED_NAME.match(key):
            problems.append(f"{key!r} is not a valid taint key.")
        if not isinstance(value, str) or not LABEL_VALUE.match(value):
            problems.append(f"Taint value {value!r} is not a valid label value.")
        if effect not in NODE_TAINT_EFFECTS:
            problems.append(
                f"Taint {key}: effect {effect!r} must be NoSchedule, PreferNoSchedule or NoExecute."
            )
    keys = [(t.get("key"), t.get("effect")) for t in taints if isinstance(t, dict)]
    if len(keys) != len(set(keys)):
        problems.append("A taint key and effect may be given only once.")
    return problems


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
    # Kueue's ResourceFlavor.spec.nodeTaints: Kueue admits a workload to the flavor only if it
    # tolerates them; the console adds the matching tolerations to a service placed here.
    node_taints = models.JSONField(
        default=list,
        blank=True,
        help_text='Taints the nodes of this flavor carry, e.g. [{"key": "dedicated", "value": "h100", '
        '"effect": "NoSchedule"}]. Services placed on the flavor tolerate them.',
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
        if problems := node_taint_problems(self.node_taints):
            errors["node_taints"] = problems
        if errors:
            raise ValidationError(errors)

    @property
    def gpu_product(self) -> str:
        return str((self.node_labels or {}).get(GPU_PRODUCT_LABEL, ""))

    def pod_tolerations(self, existing: list[dict] | tuple[dict, ...] = ()) -> list[dict]:
        """The tolerations a pod placed on this flavor gets: the flavor's own, plus one for each
        node taint that neither those nor `existing` (the service's own) already tolerate."""
        result = [dict(t) for t in self.tolerations or ()]
        for taint in self.node_taints or ():
            if not any(tolerates(t, taint) for t in (*result, *existing)):
                toleration = {"key": taint["key"], "operator": "Equal" if taint.get("value") else "Exists"}
                if taint.get("value"):
                    toleration["value"] = taint["value"]
                toleration["effect"] = taint["effect"]
                result.append(toleration)
        return result


def tolerates(toleration: dict, taint: dict) -> bool:
    """Kubernetes' rule: an empty key with Exists tolerates everything; else the keys match, the
    effects match (or the toleration has none), and Exists or the same value."""
    effect = toleration.get("effect", "")
    if effect and effect != taint.get("effect"):
        return False
    operator = toleration.get("operator", "Equal")
    key = toleration.get("key", "")
    if not key:
        return operator == "Exists"
    if key != taint.get("key"):
        return False
    return operator == "Exists" or toleration.get("value", "") == taint.get("value", "")


class Queue(models.Model):
    """A place services wait for GPUs (a Kueue ClusterQueue, with a LocalQueue of the same name in
    the services' namespace and in the namespace of each team allowed to use it). Its quota is a
    set of FlavorQuota rows, tried in order."""

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
    # The namespaces whose LocalQueue the last successful apply made: a namespace that drops out
    # (its team left the queue) has its LocalQueue deleted by the next apply.
    kueue_namespaces = models.JSONField(default=list, blank=True)

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
    # Where the team's LocalQueues live. Services are all created in SERVICE_NAMESPACE today, so
    # every queue also has a LocalQueue there; a team namespace lets the team's own workloads
    # (or a future per-team service namespace) submit to the queue too.
    namespace = models.CharField(
        max_length=63,
        blank=True,
        validators=[validate_dns_label],
        help_text="Namespace of the team's LocalQueues. Empty: the services' namespace.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def effective_namespace(self) -> str:
        return self.namespace or settings.SERVICE_NAMESPACE


class QueueUsageSample(models.Model):
    """What one queue held in one flavor at one minute (queues.tasks.sample_queue_usage), for the
    usage-over-time chart. Pruned after settings.QUEUE_USAGE_RETENTION_DAYS."""

    queue = models.ForeignKey(Queue, on_delete=models.CASCADE, related_name="usage_samples")
    flavor = models.ForeignKey(ResourceFlavor, on_delete=models.CASCADE, related_name="usage_samples")
    at = models.DateTimeField()
    gpus_used = models.PositiveIntegerField(default=0)
    gpus_quota = models.PositiveIntegerField(default=0)
    cpu_milli_used = models.BigIntegerField(default=0)
    cpu_milli_quota = models.BigIntegerField(default=0)
    memory_used = models.BigIntegerField(default=0, help_text="bytes")
    memory_quota = models.BigIntegerField(default=0, help_text="bytes")
    services_running = models.PositiveIntegerField(default=0, help_text="admitted (holding quota)")
    services_queued = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["queue", "flavor", "at"]
        indexes = [
            models.Index(fields=["queue", "at"], name="usage_sample_queue_at"),
            models.Index(fields=["at"], name="usage_sample_at"),
        ]
        constraints = [models.UniqueConstraint(fields=["queue", "flavor", "at"], name="usage_sample_unique")]

    def __str__(self) -> str:
        return f"{self.queue} / {self.flavor} @ {self.at:%Y-%m-%d %H:%M}"
