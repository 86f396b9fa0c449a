from django import forms

from queues.actions import QUEUE_FIELDS
from queues.models import Queue


class QueueForm(forms.ModelForm):
    """A simple queue: its quota on the default flavor (every node). Per-flavor quotas: the API."""

    gpu_quota = forms.IntegerField(label="GPU quota", min_value=0, initial=8, help_text="nvidia.com/gpu")
    cpu_quota = forms.DecimalField(
        label="CPU quota (cores)", min_value=0, initial=64, max_digits=8, decimal_places=1
    )
    memory_quota_gib = forms.IntegerField(label="Memory quota (GiB)", min_value=0, initial=512)

    class Meta:
        model = Queue
        fields = QUEUE_FIELDS
