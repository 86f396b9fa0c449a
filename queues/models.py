from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from console.validators import validate_dns_label


class Queue(models.Model):
    """A place services wait for GPUs, with a quota; backed by a Kueue LocalQueue of the same name."""

    name = models.CharField(
        max_length=63,
        unique=True,
        validators=[validate_dns_label],
        help_text="Lowercase DNS label, e.g. gpu-a100. Services carry it as kueue.x-k8s.io/queue-name.",
    )
    description = models.CharField(max_length=200, blank=True)
    gpu_quota = models.PositiveIntegerField(
        default=8, validators=[MaxValueValidator(10_000)], help_text="nvidia.com/gpu the queue may hold."
    )
    cpu_quota = models.DecimalField(
        max_digits=8,
        decimal_places=1,
        default=64,
        validators=[MinValueValidator(0)],
        help_text="CPU cores the queue may hold.",
    )
    memory_quota_gib = models.PositiveIntegerField(
        default=512, validators=[MaxValueValidator(1_000_000)], help_text="Memory (GiB) the queue may hold."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
