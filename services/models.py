import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from console.validators import (
    ENV_NAME,
    IMAGE_REF,
    LABEL_VALUE,
    QUALIFIED_NAME,
    toleration_problems,
    validate_dns_label,
    validate_label_value,
    validate_quantity,
    validate_relative_path,
    validate_resource_name,
)
from deploy.runtimes import RUNTIMES, EngineArgsError, get_runtime
from services import phases
from services.auth_policy import auth_header_problems, cidr_problems

MAX_REPLICAS = 32
MAX_GPUS_PER_REPLICA = 64
MAX_ENV_VARS = 64
# Set by the console in every pod; a user value would be silently overridden.
RESERVED_ENV = {"HF_HUB_OFFLINE"}
NODE_OPERATORS = {"In", "NotIn", "Exists", "DoesNotExist"}


class InferenceService(models.Model):
    """The desired spec of an inference service and what the console last saw of it."""

    class Runtime(models.TextChoices):
        VLLM = "vllm", "vLLM"
        TRITON = "triton", "Triton Inference Server"

    class AuthPolicy(models.TextChoices):
        NONE = "none", "None (cluster-internal only)"
        API_KEY = "api_key", "API key"

    class Affinity(models.TextChoices):
        AUTO = "auto", "Automatic (by GPU type)"
        CUSTOM = "custom", "Custom node rules and tolerations"

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(
        max_length=50,
        validators=[validate_resource_name],
        help_text="Lowercase letters, digits and '-', starting with a letter (e.g. chatglm2-6b). "
        "Used as the Deployment and Service name.",
    )
    namespace = models.CharField(max_length=63, validators=[validate_dns_label])
    description = models.CharField(max_length=500, blank=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="services")
    queue = models.ForeignKey(
        "queues.Queue",
        on_delete=models.PROTECT,
        related_name="services",
        help_text="The queue whose quota the service uses.",
    )
    team = models.ForeignKey(
        "queues.Team",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="services",
        help_text="The team whose limits the service counts against.",
    )
    priority_class = models.ForeignKey(
        "queues.PriorityClass",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="services",
        help_text="Higher priority goes first in the queue.",
    )
    # Set by admission: the flavor whose quota the service holds (null while Queued).
    flavor = models.ForeignKey(
        "queues.ResourceFlavor", on_delete=models.PROTECT, null=True, blank=True, related_name="services"
    )
    runtime = models.CharField(max_length=16, choices=Runtime.choices, default=Runtime.VLLM)
    image = models.CharField(
        max_length=300, blank=True, help_text="Container image; empty for the runtime's default version."
    )
    dataset = models.ForeignKey(
        "datasets.Dataset",
        on_delete=models.PROTECT,
        related_name="services",
        help_text="Where the model files live.",
    )
    model_path = models.CharField(
        max_length=512,
        validators=[validate_relative_path],
        help_text="Path inside the dataset, e.g. THUDM/chatglm2-6b (vLLM: a Hugging Face model folder; "
        "Triton: a model repository).",
    )
    served_model_name = models.CharField(
        max_length=128,
        blank=True,
        validators=[validate_label_value],
        help_text="The model name clients send (vLLM: --served-model-name; Triton: the model's folder in the "
        "repository). Empty: the service name.",
    )
    engine_args = models.CharField(
        max_length=2000, blank=True, help_text="Extra runtime flags, e.g. --dtype=half --max-model-len=4096."
    )
    env = models.JSONField(
        "Environment variables", default=list, blank=True, help_text='[{"name": "NAME", "value": "value"}]'
    )
    replicas = models.PositiveIntegerField(default=1, validators=[MaxValueValidator(MAX_REPLICAS)])
    cpu = models.CharField(
        "CPU", max_length=16, default="4", validators=[validate_quantity], help_text="e.g. 4 or 500m"
    )
    memory = models.CharField(
        max_length=16, default="30Gi", validators=[validate_quantity], help_text="e.g. 30Gi"
    )
    gpu_count = models.PositiveIntegerField(
        "GPU count",
        default=1,
        validators=[MinValueValidator(0), MaxValueValidator(MAX_GPUS_PER_REPLICA)],
        help_text="GPUs per replica; with vLLM, tensor parallelism equals this count.",
    )
    gpu_type = models.CharField(
        "GPU type",
        max_length=63,
        blank=True,
        validators=[validate_label_value],
        help_text="nvidia.com/gpu.product of the nodes to use, e.g. NVIDIA-A100-SXM4-80GB; empty for any.",
    )
    # cpu and memory as numbers, written by the actions with the strings, so that queue usage is
    # one SQL aggregate rather than parsing every row.
    cpu_milli = models.PositiveBigIntegerField(default=0, editable=False)
    memory_bytes = models.PositiveBigIntegerField(default=0, editable=False)
    shm_size = models.CharField(
        "Shared memory (/dev/shm)",
        max_length=16,
        blank=True,
        validators=[validate_quantity],
        help_text="Size of /dev/shm, e.g. 16Gi.",
    )
    auth_policy = models.CharField(
        "Auth policy", max_length=16, choices=AuthPolicy.choices, default=AuthPolicy.API_KEY
    )
    auth_header = models.CharField(
        "Key header",
        max_length=64,
        default="Authorization",
        help_text="Where callers put the key: `Authorization: Bearer <key>`, or the raw key in "
        "another header such as X-Api-Key.",
    )
    auth_params_encrypted = models.TextField(
        blank=True,
        editable=False,
        help_text="Extra headers or query parameters callers must send, encrypted "
        '(console.crypto): [{"in": "header"|"query", "name": ..., "value": ...}].',
    )
    allowed_cidrs = models.JSONField(
        "Allowed source networks",
        default=list,
        blank=True,
        help_text='Callers must come from one of these, e.g. ["10.0.0.0/8"]. Empty: anywhere.',
    )
    affinity_mode = models.CharField(max_length=8, choices=Affinity.choices, default=Affinity.AUTO)
    node_rules = models.JSONField(
        default=list, blank=True, help_text='[{"key": ..., "operator": "In", "values": [...]}]'
    )
    fit_override = models.BooleanField(
        "Override the fit check",
        default=False,
        help_text="Admins only: create the service even if the GPU fit estimate says it does not fit.",
    )
    tolerations = models.JSONField(
        default=list, blank=True, help_text='[{"key": ..., "operator": "Equal", ...}]'
    )

    # What the console last decided or saw.
    phase = models.CharField(max_length=16, choices=phases.CHOICES, default=phases.PENDING, db_index=True)
    reason = models.CharField(max_length=64, blank=True)
    message = models.CharField(max_length=2000, blank=True)
    ready_replicas = models.PositiveIntegerField(default=0)
    applied_revision = models.CharField(max_length=32, blank=True)
    applied_at = models.DateTimeField(null=True, blank=True)
    observed = models.JSONField(default=dict, blank=True)
    observed_at = models.DateTimeField(null=True, blank=True)
    phase_changed_at = models.DateTimeField(auto_now_add=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["namespace", "name"],
                condition=~Q(phase="Deleted"),
                name="unique_live_service_name",
                violation_error_message="A service with this name already exists.",
            )
        ]
        indexes = [models.Index(fields=["queue", "phase"])]

    def __str__(self) -> str:
        return self.name

    # --- validation shared by the form, the API and the actions -------------------------

    def clean(self) -> None:
        errors: dict[str, list[str]] = {}

        def add(field: str, message: str) -> None:
            errors.setdefault(field, []).append(message)

        runtime = RUNTIMES.get(self.runtime)
        if runtime is not None:
            try:
                self.parsed_engine_args()
            except EngineArgsError as exc:
                for problem in exc.problems:
                    add("engine_args", problem)
        if self.image and not IMAGE_REF.match(self.image):
            add("image", "Give an image reference such as vllm/vllm-openai:v0.11.0 (no spaces).")
        for message in _env_problems(self.env):
            add("env", message)
        if self.affinity_mode == self.Affinity.CUSTOM:
            for message in _node_rule_problems(self.node_rules):
                add("node_rules", message)
            for message in toleration_problems(self.tolerations):
                add("tolerations", message)
        elif self.node_rules or self.tolerations:
            add("affinity_mode", "Node rules and tolerations need the custom affinity mode.")
        for message in auth_header_problems(self.auth_header):
            add("auth_header", message)
        for message in cidr_problems(self.allowed_cidrs):
            add("allowed_cidrs", message)
        if self.dataset_id is not None and self.dataset.phase == self.dataset.Phase.FAILED:
            add("dataset", f"Dataset {self.dataset.name} failed to prewarm: {self.dataset.phase_message}")
        if errors:
            raise ValidationError(errors)

    def parsed_engine_args(self) -> tuple[str, ...]:
        return get_runtime(self.runtime).parse_engine_args(self.engine_args)

    @property
    def runtime_info(self):
        return get_runtime(self.runtime)

    @property
    def effective_image(self) -> str:
        return self.image or self.runtime_info.default_image

    @property
    def effective_model_name(self) -> str:
        return self.served_model_name or self.name

    @property
    def requires_key(self) -> bool:
        return self.auth_policy != self.AuthPolicy.NONE

    @property
    def key_header(self) -> str:
        """The header callers put the key in (`Authorization` means `Bearer <key>`)."""
        return (self.auth_header or "Authorization").strip()

    @property
    def gpus_total(self) -> int:
        return self.gpu_count * self.replicas

    @property
    def is_terminal(self) -> bool:
        return self.phase in phases.TERMINAL

    @property
    def badge(self) -> str:
        return phases.BADGE.get(self.phase, "busy")


def _env_problems(env: object) -> list[str]:
    if not isinstance(env, list):
        return ["Give a list of {name, value} pairs."]
    if len(env) > MAX_ENV_VARS:
        return [f"At most {MAX_ENV_VARS} variables."]
    problems, seen = [], set()
    for item in env:
        if not isinstance(item, dict) or set(item) != {"name", "value"}:
            problems.append("Each variable needs exactly a name and a value.")
            continue
        name, value = item["name"], item["value"]
        if not isinstance(name, str) or not ENV_NAME.match(name):
            problems.append(
                f"{name!r} is not a valid variable name (letters, digits and _, not starting with a digit)."
            )
        elif name in RESERVED_ENV:
            problems.append(f"{name} is set by the console.")
        elif name in seen:
            problems.append(f"{name} is given twice.")
        seen.add(name)
        if not isinstance(value, str) or len(value) > 4096 or "\0" in value:
            problems.append(f"The value of {name} must be text of at most 4096 characters.")
    return problems


def _node_rule_problems(rules: object) -> list[str]:
    if not isinstance(rules, list):
        return ["Give a list of {key, operator, values} rules."]
    problems = []
    for rule in rules:
        if not isinstance(rule, dict) or not set(rule) <= {"key", "operator", "values"}:
            problems.append("Each rule has a key, an operator and values.")
            continue
        key, op, values = rule.get("key", ""), rule.get("operator", "In"), rule.get("values", [])
        if not isinstance(key, str) or not QUALIFIED_NAME.match(key):
            problems.append(f"{key!r} is not a valid node label key.")
        if op not in NODE_OPERATORS:
            problems.append(f"Operator {op!r} must be one of {', '.join(sorted(NODE_OPERATORS))}.")
        elif op in {"In", "NotIn"} and not values:
            problems.append(f"Rule on {key} with {op} needs at least one value.")
        elif op in {"Exists", "DoesNotExist"} and values:
            problems.append(f"Rule on {key} with {op} takes no values.")
        if not isinstance(values, list) or not all(
            isinstance(v, str) and LABEL_VALUE.match(v) for v in values
        ):
            problems.append(f"Values of the rule on {key} must be valid label values.")
    return problems


class ServiceEvent(models.Model):
    """One entry of a service's timeline: a phase change, an action or what the cluster said."""

    class Kind(models.TextChoices):
        PHASE = "phase"
        ACTION = "action"
        CLUSTER = "cluster"

    service = models.ForeignKey(InferenceService, on_delete=models.CASCADE, related_name="events")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    phase = models.CharField(max_length=16, blank=True)
    reason = models.CharField(max_length=64, blank=True)
    message = models.CharField(max_length=2000, blank=True)
    actor = models.CharField(
        max_length=150, blank=True, help_text="Username, or empty for the console itself."
    )

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.kind} {self.phase} {self.reason}".strip()
