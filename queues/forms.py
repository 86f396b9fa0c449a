from django import forms

from queues.actions import QUEUE_FIELDS
from queues.models import Queue


class QueueForm(forms.ModelForm):
    class Meta:
        model = Queue
        fields = QUEUE_FIELDS
