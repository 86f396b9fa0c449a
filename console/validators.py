"""Validators for names and values that end up in Kubernetes objects.

User input never becomes raw YAML: every string that reaches a manifest is checked here.
"""

import re

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator

# Service and Deployment names: a DNS-1035 label (a Service name must start with a letter).
# 50 characters leaves room for the suffixes Kubernetes adds to pod names.
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
QUALIFIED_NAME = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
QUANTITY = re.compile(r"^([0-9]+(\.[0-9]+)?|\.[0-9]+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
IMAGE_REF = re.compile(r"^[a-z0-9][a-z0-9._\-/:@]*$", re.IGNORECASE)
RELATIVE_PATH = re.compile(r"^[A-Za-z0-9._\-][A-Za-z0-9._\-/]*$")

validate_resource_name = RegexValidator(
    DNS1035_LABEL,
    "Use lowercase letters, digits and '-', starting with a letter and ending with a letter or digit "
    "(a DNS-1035 label, e.g. chatglm2-6b).",
    code="invalid_name",
)
validate_dns_label = RegexValidator(
    DNS1123_LABEL,
    "Use lowercase letters, digits and '-', starting and ending with a letter or digit (a DNS-1123 label).",
    code="invalid_name",
)
validate_label_value = RegexValidator(
    LABEL_VALUE,
    "Use letters, digits, '-', '_' and '.', starting and ending with a letter or digit.",
    code="invalid_label_value",
)


def validate_quantity(value: str) -> None:
    if not QUANTITY.match(value or ""):
        raise ValidationError(
            "%(value)s is not a Kubernetes quantity (examples: 4, 500m, 30Gi).",
            code="invalid_quantity",
            params={"value": repr(value)},
        )


def validate_relative_path(value: str) -> None:
    """A path inside a dataset: relative, no '..', no odd characters."""
    parts = value.split("/")
    if value.startswith("/") or not RELATIVE_PATH.match(value) or ".." in parts or "" in parts[:-1]:
        raise ValidationError(
            "Give a relative path inside the dataset such as THUDM/chatglm2-6b "
            "(letters, digits, '.', '_', '-' and '/'; no leading '/', no '..').",
            code="invalid_path",
        )


# What parse_quantity reads: the Kubernetes client's grammar (signs, exponents, "K", "n", "u"),
# wider than QUANTITY, so that it also reads what a cluster or a nodes file holds. User input is
# held to QUANTITY by validate_quantity before anything parses it.
_PARSED_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)([a-zA-Z]*)$")
_SUFFIX = {
    "": 1.0,
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    "k": 1e3,
    "K": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
    "Pi": 2.0**50,
    "Ei": 2.0**60,
}


def parse_quantity(value: str | int | float) -> float:
    """A Kubernetes quantity as a number (cores for cpu, bytes for memory): "500m" -> 0.5,
    "16Gi" -> 17179869184.0, 8 -> 8.0. ValueError when it is not a quantity."""
    if isinstance(value, bool):
        raise ValueError(f"invalid quantity {value!r}")
    if isinstance(value, int | float):
        return float(value)
    match = _PARSED_QUANTITY.match(str(value).strip())
    if not match or match.group(2) not in _SUFFIX:
        raise ValueError(f"invalid quantity {value!r}")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


TAINT_EFFECTS = {"", "NoSchedule", "PreferNoSchedule", "NoExecute"}


def toleration_problems(tolerations: object) -> list[str]:
    """What is wrong with a list of pod tolerations, one sentence each."""
    if not isinstance(tolerations, list):
        return ["Give a list of {key, operator, value, effect} tolerations."]
    problems = []
    for t in tolerations:
        if not isinstance(t, dict) or not set(t) <= {"key", "operator", "value", "effect"}:
            problems.append("Each toleration has key, operator, value and effect.")
            continue
        key, op = t.get("key", ""), t.get("operator", "Equal")
        if not isinstance(key, str) or (key and not QUALIFIED_NAME.match(key)):
            problems.append(f"{key!r} is not a valid taint key.")
        if op not in {"Equal", "Exists"}:
            problems.append(f"Toleration operator {op!r} must be Equal or Exists.")
        if op == "Exists" and t.get("value"):
            problems.append(f"Toleration on {key} with Exists takes no value.")
        if op == "Equal" and not key:
            problems.append("A toleration with Equal needs a key.")
        value = t.get("value", "")
        if not isinstance(value, str) or not LABEL_VALUE.match(value):
            problems.append(f"Toleration value {value!r} is not a valid label value.")
        if t.get("effect", "") not in TAINT_EFFECTS:
            problems.append(f"Effect {t.get('effect')!r} must be NoSchedule, PreferNoSchedule or NoExecute.")
    return problems


def node_label_problems(labels: object) -> list[str]:
    """What is wrong with a {key: value} map of node labels, one sentence each."""
    if not isinstance(labels, dict):
        return ['Give node labels as {"key": "value"}.']
    problems = []
    for key, value in labels.items():
        if not isinstance(key, str) or not QUALIFIED_NAME.match(key):
            problems.append(f"{key!r} is not a valid node label key.")
        if not isinstance(value, str) or not LABEL_VALUE.match(value):
            problems.append(f"{value!r} (label {key}) is not a valid label value.")
    return problems
