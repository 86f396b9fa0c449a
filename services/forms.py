"""The create-service form. Field checks live on the model (shared with the API); this
form only turns the text boxes for env, node rules and tolerations into lists."""

from django import forms
from django.core.exceptions import ValidationError

from datasets.models import Dataset
from queues.models import Queue
from services.actions import SPEC_FIELDS
from services.auth_policy import param_names
from services.models import InferenceService

SECTIONS = (
    ("Basics", ("name", "description", "queue")),
    ("Runtime", ("runtime", "image", "engine_args", "env")),
    ("Model", ("dataset", "model_path", "served_model_name")),
    ("Resources", ("replicas", "cpu", "memory", "gpu_count", "gpu_type", "shm_size", "fit_override")),
    ("Access", ("auth_policy", "auth_header", "auth_params", "allowed_cidrs")),
    ("Scheduling", ("affinity_mode", "node_rules", "tolerations")),
)


def parse_env(text: str) -> list[dict[str, str]]:
    items = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise ValidationError(f"Line {number}: write NAME=value.")
        items.append({"name": name.strip(), "value": value})
    return items


def parse_node_rules(text: str) -> list[dict]:
    rules = []
    for number, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) == 2 and parts[1] in {"Exists", "DoesNotExist"}:
            rules.append({"key": parts[0], "operator": parts[1], "values": []})
        elif len(parts) == 3:
            rules.append({"key": parts[0], "operator": parts[1], "values": parts[2].split(",")})
        else:
            raise ValidationError(f"Line {number}: write 'key In value1,value2' or 'key Exists'.")
    return rules


def parse_tolerations(text: str) -> list[dict]:
    """kubectl-taint-like lines: key=value:Effect, key:Effect (any value), key."""
    tolerations = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        head, _, effect = line.partition(":")
        key, eq, value = head.partition("=")
        toleration = {"key": key.strip(), "operator": "Equal" if eq else "Exists"}
        if eq:
            toleration["value"] = value.strip()
        if effect:
            toleration["effect"] = effect.strip()
        tolerations.append(toleration)
    return tolerations


def parse_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def parse_auth_params(text: str) -> list[dict[str, str]]:
    """Lines 'header X-Tenant=acme' or 'query tenant=acme'; 'header X-Tenant' alone keeps the
    stored value (the edit form shows names only)."""
    params = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        place, _, rest = line.strip().partition(" ")
        name, sep, value = rest.strip().partition("=")
        if place not in {"header", "query"} or not name.strip():
            raise ValidationError(
                f"Line {number}: start with header or query, e.g. 'header X-Tenant=acme' or 'query team=b'."
            )
        item = {"in": place, "name": name.strip()}
        if sep:
            item["value"] = value.strip()
        params.append(item)
    return params


def format_auth_param_names(names: list[dict]) -> str:
    return "\n".join(f"{p['in']} {p['name']}" for p in names)


class PolicyFieldsMixin(forms.Form):
    """The gateway's auth policy fields, shared by the create form and the policy edit form."""

    auth_header = forms.CharField(
        label="Key header",
        required=False,
        max_length=64,
        help_text="Authorization (the default) means 'Authorization: Bearer <key>'; another header, "
        "e.g. X-Api-Key, carries the raw key.",
        widget=forms.TextInput(attrs={"placeholder": "Authorization"}),
    )
    auth_params = forms.CharField(
        label="Extra required parameters",
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "header X-Tenant=acme\nquery team=search"}),
        help_text="Callers must also send these: one per line, 'header Name=value' or 'query name=value'. "
        "Values are stored encrypted and never shown again; a line without '=value' keeps the stored value.",
    )
    allowed_cidrs = forms.CharField(
        label="Allowed source networks",
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "10.0.0.0/8\n2001:db8::/32"}),
        help_text="One network per line; callers from elsewhere are refused. Empty: anywhere.",
    )

    def clean_auth_header(self) -> str:
        return self.cleaned_data.get("auth_header", "").strip() or "Authorization"

    def clean_auth_params(self) -> list[dict[str, str]]:
        return parse_auth_params(self.cleaned_data.get("auth_params", ""))

    def clean_allowed_cidrs(self) -> list[str]:
        return parse_lines(self.cleaned_data.get("allowed_cidrs", ""))


def format_env(items: list[dict]) -> str:
    return "\n".join(f"{i['name']}={i['value']}" for i in items)


class InferenceServiceForm(PolicyFieldsMixin, forms.ModelForm):
    env = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "HF_HOME=/root/.cache/huggingface"}),
        help_text="One NAME=value per line.",
    )
    node_rules = forms.CharField(
        required=False,
        widget=forms.Textarea(
            attrs={"rows": 2, "placeholder": "topology.kubernetes.io/zone In zone-a,zone-b"}
        ),
        help_text="Custom mode: one rule per line, 'key In v1,v2', 'key NotIn v', 'key Exists'.",
    )
    tolerations = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "dedicated=inference:NoSchedule"}),
        help_text="Custom mode: one per line, 'key=value:Effect' or 'key:Effect' (any value).",
    )

    class Meta:
        model = InferenceService
        fields = SPEC_FIELDS
        widgets = {
            "description": forms.TextInput(),
            "engine_args": forms.TextInput(attrs={"placeholder": "--dtype=half --max-model-len=4096"}),
            "gpu_type": forms.TextInput(attrs={"list": "gpu-types"}),
        }

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        if user is None or not user.is_staff:
            del self.fields["fit_override"]
        self.fields["queue"].queryset = Queue.objects.order_by("name")
        if user is not None and user.pk:
            # Only the user's own teams; none chosen counts against their only team, if one.
            self.fields["team"].queryset = user.teams.order_by("name")
        self.fields["dataset"].queryset = Dataset.objects.exclude(phase=Dataset.Phase.FAILED).order_by("name")
        self.fields["image"].widget.attrs["placeholder"] = "empty: the runtime's default image"
        # Shown (and sent) only in the custom affinity mode: see console.js, showChosenParts.
        custom = f"id_affinity_mode {InferenceService.Affinity.CUSTOM}"
        self.fields["node_rules"].shown_for = self.fields["tolerations"].shown_for = custom

    def clean_env(self):
        return parse_env(self.cleaned_data.get("env", ""))

    def clean_node_rules(self):
        return parse_node_rules(self.cleaned_data.get("node_rules", ""))

    def clean_tolerations(self):
        return parse_tolerations(self.cleaned_data.get("tolerations", ""))

    def sections(self):
        return [(title, [self[name] for name in names if name in self.fields]) for title, names in SECTIONS]


class AuthPolicyForm(PolicyFieldsMixin, forms.Form):
    """Change a service's auth policy at the gateway; no redeploy is needed."""

    auth_policy = forms.ChoiceField(label="Auth policy", choices=InferenceService.AuthPolicy.choices)

    field_order = ("auth_policy", "auth_header", "auth_params", "allowed_cidrs")

    @classmethod
    def for_service(cls, service: InferenceService, data=None) -> "AuthPolicyForm":
        """The stored policy as initial values: parameter names without their values."""
        stored = param_names(service.auth_params_encrypted)
        initial = {
            "auth_policy": service.auth_policy,
            "auth_header": service.auth_header,
            "auth_params": format_auth_param_names(stored),
            "allowed_cidrs": "\n".join(service.allowed_cidrs),
        }
        form = cls(data, initial=initial)
        if stored:
            form.fields["auth_params"].help_text += " Stored now: " + ", ".join(
                f"{p['in']} {p['name']} (value set)" for p in stored
            )
        return form


class ScaleForm(forms.Form):
    replicas = forms.IntegerField(min_value=0, max_value=32)
