"""Forms for queues and resource flavors. The rules live on the models and in queues.actions;
these forms turn text boxes into the actions' arguments and put the actions' errors next to the
fields they are about."""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from queues.actions import QUEUE_FIELDS, default_flavor
from queues.models import FlavorQuota, Queue, ResourceFlavor
from services.forms import parse_tolerations

# queue_create's per-flavor quota keys -> this form's fields.
QUOTA_TO_FIELD = {
    "gpus": "gpu_quota",
    "cpu": "cpu_quota",
    "memory_gib": "memory_quota_gib",
    "gpu_borrowing_limit": "gpu_borrowing_limit",
    "gpu_lending_limit": "gpu_lending_limit",
}
# The actions name a quota row's problems "<flavor>: <field>: <message>".
QUOTA_PROBLEM = re.compile(r"^(?P<flavor>[a-z0-9-]+): (?P<field>\w+): (?P<message>.*)$", re.S)


def parse_node_labels(text: str) -> dict[str, str]:
    """One `key=value` per line, e.g. nvidia.com/gpu.product=NVIDIA-H100."""
    labels: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise ValidationError(f"Line {number}: write key=value, e.g. nvidia.com/gpu.product=NVIDIA-H100.")
        if key in labels:
            raise ValidationError(f"Line {number}: {key} is given twice.")
        labels[key] = value
    return labels


def format_node_labels(labels: dict[str, str]) -> str:
    return "\n".join(f"{key}={value}" for key, value in (labels or {}).items())


def parse_node_taints(text: str) -> list[dict]:
    """kubectl-taint-like lines: key=value:Effect or key:Effect (the effect is required)."""
    taints = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        head, sep, effect = line.rpartition(":")
        if not sep or not head:
            raise ValidationError(
                f"Line {number}: write key=value:Effect or key:Effect, e.g. dedicated=h100:NoSchedule."
            )
        key, eq, value = head.partition("=")
        taint = {"key": key.strip(), "effect": effect.strip()}
        if eq:
            taint["value"] = value.strip()
        taints.append(taint)
    return taints


def format_node_taints(taints: list[dict]) -> str:
    return "\n".join(
        f"{t.get('key', '')}{'=' + t['value'] if t.get('value') else ''}:{t.get('effect', '')}"
        for t in taints or []
    )


def format_tolerations(tolerations: list[dict]) -> str:
    lines = []
    for t in tolerations or []:
        line = t.get("key", "")
        if t.get("operator", "Equal") == "Equal":
            line += f"={t.get('value', '')}"
        if t.get("effect"):
            line += f":{t['effect']}"
        lines.append(line)
    return "\n".join(lines)


class FlavorForm(forms.ModelForm):
    node_labels = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "nvidia.com/gpu.product=NVIDIA-H100"}),
        help_text="One key=value per line: the nodes of this flavor carry all of them. Empty: every node.",
    )
    tolerations = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "nvidia.com/gpu:NoSchedule"}),
        help_text="For the taints these nodes carry, one per line: 'key=value:Effect' or 'key:Effect' "
        "(any value).",
    )

    node_taints = forms.CharField(
        required=False,
        label="Node taints",
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "dedicated=h100:NoSchedule"}),
        help_text="Taints these nodes carry, one per line: 'key=value:Effect' or 'key:Effect'. "
        "Services placed on this flavor get tolerations for them.",
    )

    class Meta:
        model = ResourceFlavor
        fields = ("name", "description", "node_labels", "tolerations", "node_taints")
        widgets = {"description": forms.TextInput()}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.editing = self.instance.pk is not None
        if self.editing:
            self.fields["name"].disabled = True
            self.fields["name"].help_text = "Fixed once created: it names the Kueue ResourceFlavor."
            # The text boxes show the stored JSON in the form's own line syntax.
            self.initial.update(
                node_labels=format_node_labels(self.instance.node_labels),
                tolerations=format_tolerations(self.instance.tolerations),
                node_taints=format_node_taints(self.instance.node_taints),
            )

    def clean_node_labels(self) -> dict[str, str]:
        return parse_node_labels(self.cleaned_data.get("node_labels", ""))

    def clean_tolerations(self) -> list[dict]:
        return parse_tolerations(self.cleaned_data.get("tolerations", ""))

    def clean_node_taints(self) -> list[dict]:
        return parse_node_taints(self.cleaned_data.get("node_taints", ""))

    def flavor_fields(self) -> dict[str, Any]:
        fields = dict(self.cleaned_data)
        if self.editing:
            fields.pop("name", None)
        return fields

    def add_action_errors(self, exc: ValidationError) -> None:
        """The model's errors next to the fields they are about."""
        if not hasattr(exc, "error_dict"):
            self.add_error(None, exc)
            return
        for field, messages in exc.message_dict.items():
            self.add_error(field if field in self.fields else None, messages)


class QueueForm(forms.ModelForm):
    """A queue with its quota in one flavor (the default flavor, every node, unless chosen).
    Editing a queue with several flavors changes the first; the others are kept as they are
    (the REST API edits them all)."""

    flavor = forms.ModelChoiceField(
        queryset=ResourceFlavor.objects.exclude(name=ResourceFlavor.DEFAULT).order_by("name"),
        required=False,
        to_field_name="name",
        empty_label="default (every node)",
        label="Resource flavor",
        help_text="The kind of nodes this quota is for. Services admitted here run on its nodes.",
    )
    gpu_quota = forms.IntegerField(
        label="GPU quota", min_value=0, initial=8, help_text="nvidia.com/gpu in this flavor"
    )
    cpu_quota = forms.DecimalField(
        label="CPU quota (cores)", min_value=0, initial=64, max_digits=8, decimal_places=1
    )
    memory_quota_gib = forms.IntegerField(label="Memory quota (GiB)", min_value=0, initial=512)
    gpu_borrowing_limit = forms.IntegerField(
        label="GPU borrowing limit",
        min_value=0,
        required=False,
        help_text="GPUs this queue may borrow from its cohort in this flavor. Empty: no limit.",
    )
    gpu_lending_limit = forms.IntegerField(
        label="GPU lending limit",
        min_value=0,
        required=False,
        help_text="Of its unused GPUs, how many the cohort may borrow. Empty: all of them.",
    )

    field_order = (
        "name", "description", "flavor", "gpu_quota", "cpu_quota", "memory_quota_gib", "cohort",
        "gpu_borrowing_limit", "gpu_lending_limit", "strategy",
    )  # fmt: skip

    class Meta:
        model = Queue
        fields = QUEUE_FIELDS
        widgets = {"description": forms.TextInput()}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.editing = self.instance.pk is not None
        self.other_quotas: list[FlavorQuota] = []
        if self.editing:
            self.fields["name"].disabled = True
            self.fields["name"].help_text = "Fixed once created: it names the Kueue objects."
            quotas = list(self.instance.quotas.select_related("flavor").order_by("position", "id"))
            if quotas:
                first, self.other_quotas = quotas[0], quotas[1:]
                self.initial.update(
                    flavor=None if first.flavor.name == ResourceFlavor.DEFAULT else first.flavor.name,
                    gpu_quota=first.gpus,
                    cpu_quota=first.cpu,
                    memory_quota_gib=first.memory_gib,
                    gpu_borrowing_limit=first.gpu_borrowing_limit,
                    gpu_lending_limit=first.gpu_lending_limit,
                )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if not data.get("cohort"):
            # Kueue: both limits are about the cohort; without one the ClusterQueue is invalid.
            for name in ("gpu_borrowing_limit", "gpu_lending_limit"):
                if data.get(name) is not None:
                    self.add_error(name, "A borrowing or lending limit needs a cohort.")
        return data

    def queue_fields(self) -> dict[str, Any]:
        fields = {name: self.cleaned_data[name] for name in QUEUE_FIELDS if name in self.cleaned_data}
        if self.editing:
            fields.pop("name", None)
        return fields

    def flavors(self) -> list[dict[str, Any]]:
        """queue_create's `flavors`: this form's quota first, then the queue's other quotas."""
        data = self.cleaned_data
        edited = {
            "flavor": data.get("flavor") or default_flavor(),
            "gpus": data["gpu_quota"],
            "cpu": data["cpu_quota"],
            "memory_gib": data["memory_quota_gib"],
            "gpu_borrowing_limit": data.get("gpu_borrowing_limit"),
            "gpu_lending_limit": data.get("gpu_lending_limit"),
        }
        others = [
            {"flavor": q.flavor, **{key: getattr(q, key) for key in QUOTA_TO_FIELD}}
            for q in self.other_quotas
        ]
        return [edited, *others]

    def add_action_errors(self, exc: ValidationError) -> None:
        """Put queue_create/queue_update's errors next to the fields they are about."""
        if not hasattr(exc, "error_dict"):
            self.add_error(None, exc)
            return
        edited = (self.cleaned_data.get("flavor") or ResourceFlavor(name=ResourceFlavor.DEFAULT)).name
        for field, messages in exc.message_dict.items():
            if field in self.fields and field != "flavors":
                self.add_error(field, messages)
                continue
            for message in messages:
                match = QUOTA_PROBLEM.match(message)
                if match and match["flavor"] == edited and match["field"] in QUOTA_TO_FIELD:
                    self.add_error(QUOTA_TO_FIELD[match["field"]], match["message"])
                elif "listed twice" in message or "No resource flavor" in message:
                    self.add_error("flavor", message)
                else:
                    self.add_error(None, message)
