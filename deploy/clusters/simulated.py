"""The simulated cluster: the embedded default backend, so the console runs with no cluster.

The web server, the Celery worker and the watcher are separate processes, so everything the
cluster holds (applied objects, pods and their node bindings) is in the database
(deploy.models). Pod *status* is never stored: like the harness's kubelet simulator
(deploy/testenv/kubelet_sim.py) it is a pure function of how long ago the pod was scheduled
and of its fault settings, so every process computes the same answer from the same rows.

The file reads top to bottom:
  quantities -> nodes file -> scheduler (pure) -> faults -> pod state (pure)
  -> events and logs (pure) -> SimulatedCluster, the DB-backed adapter.

Failure injection uses the harness's vocabulary, so a test triggers the same failure on both:
pod-template annotations `sim.harness/fail`, `fail-containers`, `exit-code`, `ready-after`,
`start-after`; a rules file (settings.SIMULATED_CLUSTER_FAULTS) in the harness's format; and
the built-in rules (image tag `doesnotexist` or `invalid.example` in the repository ->
ErrImagePull then ImagePullBackOff; memory limit below 64Mi -> OOMKilled).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import random
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import yaml
from django.conf import settings
from django.db import DatabaseError, IntegrityError, close_old_connections, connection, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.crypto import salted_hmac

from deploy.clusters.base import (
    LABEL_SERVICE,
    NodeInfo,
    PermanentClusterError,
    TransientClusterError,
)
from deploy.models import SimulatedObject, SimulatedPod
from deploy.observation import ContainerObservation, EventObservation, Observation, PodObservation

log = logging.getLogger(__name__)

Obj = dict[str, Any]

SERVED = {
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "Namespace"),
}
CLUSTER_SCOPED = {"Namespace"}
# What Observation.other_objects counts: what is left of a service besides its Deployment.
OTHER_KINDS = ("Service", "ConfigMap", "Secret")
# Kubernetes' alphabet for generated names (no vowels, no look-alikes).
NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"

ANNOTATION_PREFIX = "sim.harness/"
BACKOFF_STEPS = (10, 20, 40, 80, 160, 300)  # kubelet's restart / image pull back-off, capped at 300 s
PULL_ERROR_SECONDS = 3  # built-in pull failures: ErrImagePull this long per attempt
OOM_MIN_BYTES = 64 * 2**20  # built-in: a memory limit below 64Mi is OOMKilled
PULL_CYCLE = "ErrImagePull->ImagePullBackOff"  # fail mode of the built-in image rule
UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"
AFFINITY_REASON = "node(s) didn't match Pod's node affinity/selector"
WATCH_STOP_CHECK_SECONDS = 0.2


# --- quantities ---------------------------------------------------------------------------

_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)([a-zA-Z]*)$")
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
# Sums of float cores (0.1 + 0.2) must not make a pod that exactly fits look too big.
_EPSILON = 1e-6


def parse_quantity(value: str | int | float) -> float:
    """A Kubernetes quantity as a number: "500m" -> 0.5, "16Gi" -> 17179869184.0, 8 -> 8.0."""
    if isinstance(value, bool):
        raise ValueError(f"invalid quantity {value!r}")
    if isinstance(value, int | float):
        return float(value)
    match = _QUANTITY.match(str(value).strip())
    if not match or match.group(2) not in _SUFFIX:
        raise ValueError(f"invalid quantity {value!r}")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


# --- nodes file ---------------------------------------------------------------------------

_nodes_cache: dict[str, tuple[tuple[int, int], tuple[NodeInfo, ...]]] = {}
_cache_lock = threading.Lock()


def load_nodes(path: str) -> tuple[NodeInfo, ...]:
    """The nodes of a nodes file (the harness's format), re-read when the file changes."""
    try:
        stat = os.stat(path)
    except OSError:
        raise PermanentClusterError(f"the simulated cluster's nodes file {path} does not exist") from None
    key = (stat.st_mtime_ns, stat.st_size)
    with _cache_lock:
        cached = _nodes_cache.get(path)
        if cached and cached[0] == key:
            return cached[1]
    nodes = _parse_nodes_file(path)
    with _cache_lock:
        _nodes_cache[path] = (key, nodes)
    return nodes


def _parse_nodes_file(path: str) -> tuple[NodeInfo, ...]:
    try:
        with open(path) as f:
            text = f.read()
        try:
            data = json.loads(text)
        except ValueError:
            data = yaml.safe_load(text)  # the harness accepts YAML too
        items = data.get("nodes", []) if isinstance(data, dict) else data
        nodes = tuple(_node_from_entry(entry) for entry in items or [])
    except (OSError, ValueError, TypeError, KeyError, AttributeError, yaml.YAMLError) as exc:
        raise PermanentClusterError(f"cannot read the simulated cluster's nodes file {path}: {exc}") from None
    if not nodes:
        raise PermanentClusterError(f"no nodes in the simulated cluster's nodes file {path}")
    return nodes


def _node_from_entry(entry: Obj) -> NodeInfo:
    name = str(entry["name"])
    labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}
    labels.update({str(k): str(v) for k, v in (entry.get("labels") or {}).items()})
    capacity = {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"}
    capacity.update({str(k): str(v) for k, v in (entry.get("capacity") or {}).items()})
    allocatable = {**capacity, **{str(k): str(v) for k, v in (entry.get("allocatable") or {}).items()}}
    for quantity in allocatable.values():
        parse_quantity(quantity)  # a typo in the file fails here, not in the scheduler
    taints = [{str(k): str(v) for k, v in taint.items()} for taint in entry.get("taints") or []]
    if entry.get("unschedulable"):
        # A cordoned node carries this taint in Kubernetes too (added by the node controller).
        taints.append({"key": UNSCHEDULABLE_TAINT, "effect": "NoSchedule"})
    return NodeInfo(name=name, labels=labels, allocatable=allocatable, taints=tuple(taints))


# --- scheduler (pure) ---------------------------------------------------------------------


@dataclass(frozen=True)
class PodNeeds:
    """What the scheduler looks at in a pod."""

    requests: Mapping[str, float]  # cpu in cores, memory in bytes, others as counts
    node_selector: Mapping[str, str] = field(default_factory=dict)
    affinity: Mapping[str, Any] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()


def tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    """Kubernetes' ToleratesTaint: effect, then key (empty key + Exists matches all), then value."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    operator = toleration.get("operator") or "Equal"
    key = toleration.get("key") or ""
    if not key:
        return operator == "Exists"
    if key != taint.get("key"):
        return False
    if operator == "Exists":
        return True
    return operator == "Equal" and (toleration.get("value") or "") == (taint.get("value") or "")


def _matches_expression(labels: Mapping[str, str], expression: Mapping[str, Any]) -> bool:
    key = expression.get("key", "")
    operator = expression.get("operator", "")
    values = [str(v) for v in expression.get("values") or []]
    if operator == "In":
        return key in labels and labels[key] in values
    if operator == "NotIn":
        return key not in labels or labels[key] not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    if operator in ("Gt", "Lt") and key in labels and len(values) == 1:
        try:
            left, right = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return left > right if operator == "Gt" else left < right
    return False


def _matches_term(node: NodeInfo, term: Mapping[str, Any]) -> bool:
    expressions = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not expressions and not fields:
        return False  # an empty term matches no node, as in Kubernetes
    return all(_matches_expression(node.labels, e) for e in expressions) and all(
        _matches_expression({"metadata.name": node.name}, f) for f in fields
    )


def matches_node_affinity(node: NodeInfo, pod: PodNeeds) -> bool:
    """nodeSelector (all pairs) and required node affinity (terms ORed, expressions ANDed)."""
    if any(node.labels.get(k) != v for k, v in pod.node_selector.items()):
        return False
    required = (pod.affinity.get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution")
    terms = (required or {}).get("nodeSelectorTerms") or []
    return not terms or any(_matches_term(node, term) for term in terms)


def _resource_order(resource: str) -> tuple[int, str]:
    return ({"cpu": 0, "memory": 1, "ephemeral-storage": 2}.get(resource, 3), resource)


def node_misfit(node: NodeInfo, pod: PodNeeds, used: Mapping[str, float]) -> list[str]:
    """Why `pod` cannot run on `node` in the scheduler's words ([] = it fits).

    Filters run in kube-scheduler's default order and the first that fails gives the
    reasons, so one node counts once per reason as in "0/3 nodes are available: ...".
    `used` holds the requests of the pods already bound there (and "pods": their count).
    """
    untolerated = [
        taint
        for taint in node.taints
        if taint.get("effect") in ("NoSchedule", "NoExecute")
        and not any(tolerates(t, taint) for t in pod.tolerations)
    ]
    if any(taint.get("key") == UNSCHEDULABLE_TAINT for taint in untolerated):
        return ["node(s) were unschedulable"]
    if untolerated:
        taint = untolerated[0]
        return [f"node(s) had untolerated taint {{{taint.get('key', '')}: {taint.get('value', '')}}}"]
    if not matches_node_affinity(node, pod):
        return [AFFINITY_REASON]
    reasons = []
    if used.get("pods", 0) + 1 > parse_quantity(node.allocatable.get("pods", "110")):
        reasons.append("Too many pods")
    for resource in sorted(pod.requests, key=_resource_order):
        wanted = pod.requests[resource]
        if wanted <= 0 or resource == "pods":
            continue
        free = parse_quantity(node.allocatable.get(resource, "0")) - used.get(resource, 0.0)
        if wanted > free + _EPSILON:
            reasons.append(f"Insufficient {resource}")
    return reasons


def scheduler_message(node_count: int, reasons: Iterable[str]) -> str:
    """kube-scheduler's FitError text: each reason counted over the nodes, sorted as strings."""
    if node_count == 0:
        return "no nodes available to schedule pods"
    counts = Counter(reasons)
    parts = sorted(f"{count} {reason}" for reason, count in counts.items())
    return f"0/{node_count} nodes are available: {', '.join(parts)}."


def pick_node(
    nodes: Iterable[NodeInfo], pod: PodNeeds, usage: Mapping[str, Mapping[str, float]]
) -> tuple[str | None, str]:
    """(the first node, in file order, the pod fits on, "") or (None, the scheduler's message)."""
    nodes = list(nodes)
    reasons: list[str] = []
    for node in nodes:
        misfit = node_misfit(node, pod, usage.get(node.name, {}))
        if not misfit:
            return node.name, ""
        reasons.extend(misfit)
    return None, scheduler_message(len(nodes), reasons)


# --- faults -------------------------------------------------------------------------------

RULE_MATCHERS = ("labels", "namespace", "image_regex", "name_regex")
# rule key -> annotation name (without the sim.harness/ prefix)
RULE_EFFECTS = {
    "fail": "fail",
    "fail_containers": "fail-containers",
    "exit_code": "exit-code",
    "ready_after": "ready-after",
    "start_after": "start-after",
    "complete_after": "complete-after",  # Job pods in the harness; accepted, unused here
}


@dataclass(frozen=True)
class FaultRule:
    index: int
    labels: Mapping[str, str]
    namespaces: tuple[str, ...] | None
    image_regex: re.Pattern[str] | None
    name_regex: re.Pattern[str] | None
    effects: Mapping[str, str]  # annotation name -> value

    def matches(self, pod: SimulatedPod) -> bool:
        if self.namespaces is not None and pod.namespace not in self.namespaces:
            return False
        if any((pod.labels or {}).get(k) != v for k, v in self.labels.items()):
            return False
        if self.name_regex is not None and not self.name_regex.search(pod.name):
            return False
        return self.image_regex is None or any(self.image_regex.search(c["image"]) for c in pod.containers)


def _compile_rule(index: int, raw: Any) -> FaultRule:
    if not isinstance(raw, dict):
        raise ValueError("not an object")
    unknown = sorted(set(raw) - set(RULE_MATCHERS) - set(RULE_EFFECTS) - {"comment"})
    if unknown:
        raise ValueError(f"unknown key(s) {unknown}")
    labels = raw.get("labels") or {}
    if not isinstance(labels, dict):
        raise ValueError("labels must be an object")
    namespace = raw.get("namespace")
    namespaces = (
        None if namespace is None else (namespace,) if isinstance(namespace, str) else tuple(namespace)
    )
    regexes = {
        k: re.compile(str(raw[k])) if raw.get(k) not in (None, "") else None for k in RULE_MATCHERS[2:]
    }
    effects = {
        annotation: ",".join(map(str, raw[key])) if isinstance(raw[key], list) else str(raw[key])
        for key, annotation in RULE_EFFECTS.items()
        if raw.get(key) is not None
    }
    return FaultRule(
        index=index,
        labels={str(k): str(v) for k, v in labels.items()},
        namespaces=namespaces,
        image_regex=regexes["image_regex"],
        name_regex=regexes["name_regex"],
        effects=effects,
    )


_rules_cache: dict[str, tuple[tuple[Any, ...], tuple[FaultRule, ...]]] = {}


def load_fault_rules(path: str) -> tuple[FaultRule, ...]:
    """The rules of the faults file, re-parsed when it changes. A missing file means no rules;
    a file that does not parse keeps the previous rules; a bad rule is skipped (both logged)."""
    try:
        stat = os.stat(path)
        key: tuple[Any, ...] = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
    except OSError:
        key = ()  # no file
    with _cache_lock:
        cached = _rules_cache.get(path)
    if cached and cached[0] == key:
        return cached[1]
    rules: tuple[FaultRule, ...] = ()
    if key:
        try:
            rules = _read_fault_rules(path)
            log.info("simulated cluster: %d fault rule(s) loaded from %s", len(rules), path)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            rules = cached[1] if cached else ()
            log.warning(
                "simulated cluster: faults file %s not loaded (%s); keeping previous rules", path, exc
            )
    with _cache_lock:
        _rules_cache[path] = (key, rules)
    return rules


def _read_fault_rules(path: str) -> tuple[FaultRule, ...]:
    with open(path) as f:
        text = f.read()
    if not text.strip():
        return ()
    data = yaml.safe_load(text) if path.endswith((".yaml", ".yml")) else json.loads(text)
    items = data.get("rules") if isinstance(data, dict) else data
    if not isinstance(items or [], list):
        raise ValueError('expected a list of rules or {"rules": [...]}')
    rules = []
    for index, raw in enumerate(items or []):
        try:
            rules.append(_compile_rule(index, raw))
        except (ValueError, TypeError, re.error) as exc:
            log.warning("simulated cluster: faults file %s: rule #%d skipped: %s", path, index, exc)
    return tuple(rules)


def _split_image(image: str) -> tuple[str, str | None]:
    """'reg:5000/a/b:tag@sha256:..' -> ('reg:5000/a/b', 'tag' or None)."""
    ref = image.split("@", 1)[0]
    slash, colon = ref.rfind("/"), ref.rfind(":")
    return (ref[:colon], ref[colon + 1 :]) if colon > slash else (ref, None)


def _full_reference(image: str) -> str:
    """The reference as containerd names it: docker.io/library/nginx:latest for nginx."""
    repo, tag = _split_image(image)
    first = repo.split("/", 1)[0]
    if "/" not in repo or not ("." in first or ":" in first or first == "localhost"):
        repo = "docker.io/" + ("library/" + repo if "/" not in repo else repo)
    digest = image.split("@", 1)[1] if "@" in image else None
    return repo + (f":{tag}" if tag else "" if digest else ":latest") + (f"@{digest}" if digest else "")


def pull_error(image: str) -> str:
    """A containerd-style pull error, worded as the harness's simulator words it."""
    ref = _full_reference(image)
    host, _, rest = _split_image(ref)[0].partition("/")
    if "invalid.example" in host:
        version = ref.split("@", 1)[1] if "@" in ref else _split_image(ref)[1] or "latest"
        return (
            f'rpc error: code = Unknown desc = failed to pull and unpack image "{ref}": failed to resolve '
            f'reference "{ref}": failed to do request: Head "https://{host}/v2/{rest}/manifests/{version}": '
            f"dial tcp: lookup {host.split(':')[0]}: no such host"
        )
    return (
        f'rpc error: code = NotFound desc = failed to pull and unpack image "{ref}": failed to resolve '
        f'reference "{ref}": {ref}: not found'
    )


def builtin_fault(container: Mapping[str, Any]) -> str | None:
    """What a real kubelet makes of this container: PULL_CYCLE, "OOMKilled" or None."""
    repo, tag = _split_image(container.get("image") or "")
    if tag == "doesnotexist" or "invalid.example" in repo:
        return PULL_CYCLE
    limit = container.get("memory_limit")
    if limit is not None and limit < OOM_MIN_BYTES:
        return "OOMKilled"
    return None


def _seconds(value: str | None) -> float | None:
    """An annotation's seconds ("5", "5s", "never"); None when unset or unreadable."""
    if value is None or not str(value).strip():
        return None
    text = str(value).strip().lower()
    if text in ("never", "inf", "infinity", "-1"):
        return math.inf
    try:
        return max(0.0, float(text.rstrip("s")))
    except ValueError:
        return None


@dataclass(frozen=True)
class Faults:
    """A pod's effective fault settings (annotation over rule, rule over built-in)."""

    fails: Mapping[str, str] = field(default_factory=dict)  # container name -> fail word or PULL_CYCLE
    exit_code: int = 1
    start_after: float | None = None  # replaces the pull time when set
    ready_after: float | None = None  # replaces the model load time when set
    note: str = ""  # where the settings came from, shown in the pod's log

    def creating_seconds(self, pull_seconds: float) -> float:
        return pull_seconds if self.start_after is None else self.start_after

    def loading_seconds(self, load_seconds: float) -> float:
        return load_seconds if self.ready_after is None else self.ready_after


def pod_faults(pod: SimulatedPod, rules: Iterable[FaultRule]) -> Faults:
    """Each setting from the pod's own sim.harness/ annotation if present, else from the first
    matching rule (`fail` and `fail-containers` count as one); failure-free containers then
    get the built-in rules. The same precedence as the harness's kubelet simulator."""
    annotations = {
        k[len(ANNOTATION_PREFIX) :]: str(v)
        for k, v in (pod.annotations or {}).items()
        if k.startswith(ANNOTATION_PREFIX)
    }
    rule = next((r for r in rules if r.matches(pod)), None)
    settings_: dict[str, str] = dict(rule.effects) if rule else {}
    if "fail" in annotations:
        settings_.pop("fail", None)
        settings_.pop("fail-containers", None)
    else:
        annotations.pop("fail-containers", None)  # meaningless without sim.harness/fail
        if rule and settings_.get("fail") and "fail-containers" not in settings_ and rule.image_regex:
            # A rule about an image fails only the containers running that image.
            settings_["fail-containers"] = ",".join(
                c["name"] for c in pod.containers if rule.image_regex.search(c["image"])
            )
    from_rule = sorted(k for k in settings_ if k not in annotations)
    settings_.update(annotations)

    fails: dict[str, str] = {}
    fail = settings_.get("fail", "").strip()
    if fail:
        listed = [n.strip() for n in settings_.get("fail-containers", "").split(",") if n.strip()]
        for name in listed or [c["name"] for c in pod.containers]:
            fails[name] = fail
    builtin = {}
    for container in pod.containers:
        if container["name"] not in fails and (found := builtin_fault(container)):
            fails[container["name"]] = builtin[container["name"]] = found
    try:
        exit_code = int(settings_.get("exit-code", "1"))
    except ValueError:
        exit_code = 1
    notes = []
    if annotations:
        notes.append(f"annotation: {','.join(sorted(annotations))}")
    if rule and from_rule:
        notes.append(f"rule #{rule.index}: {','.join(from_rule)}")
    if builtin:
        notes.append(
            "built-in: "
            + ",".join(f"{n}={'image pull' if b == PULL_CYCLE else b}" for n, b in builtin.items())
        )
    return Faults(
        fails=fails,
        exit_code=exit_code,
        start_after=_seconds(settings_.get("start-after")),
        ready_after=_seconds(settings_.get("ready-after")),
        note="; ".join(notes),
    )


# --- pod state (pure) ---------------------------------------------------------------------


@dataclass(frozen=True)
class PodState:
    """What a kubelet would report for a pod at one moment."""

    phase: str
    ready: bool
    containers: tuple[ContainerObservation, ...] = ()
    running_since: float | None = None  # seconds after scheduling the containers started; None = not yet


def restarts_after(elapsed: float) -> tuple[int, int, float]:
    """(restart count, current back-off, seconds to the last crash) of a container that has
    crash-looped for `elapsed` seconds, as the harness counts it: it crashes 1 s after each
    start and waits 10, 20, 40 ... 300 s before the next start."""
    t = 1.0
    for count, backoff in enumerate(BACKOFF_STEPS):
        if elapsed < t + backoff:
            return max(1, count), backoff, min(t, elapsed)
        t += backoff + 1
    # From here the back-off stays at its cap: one crash every cap + 1 s (no loop over days).
    cap = BACKOFF_STEPS[-1]
    extra = max(0, math.floor((elapsed - t - cap) / (cap + 1)) + 1)
    return len(BACKOFF_STEPS) + extra, cap, t + extra * (cap + 1)


def pull_attempts_after(elapsed: float) -> tuple[str, int, float]:
    """(reason, pull attempts, seconds to the last attempt) of a built-in pull failure:
    ErrImagePull for 3 s at each attempt, ImagePullBackOff in between, attempts on the
    10, 20 ... 300 s back-off."""
    t = 0.0
    for attempt, backoff in enumerate(BACKOFF_STEPS, start=1):
        if elapsed < t + PULL_ERROR_SECONDS:
            return "ErrImagePull", attempt, t
        if elapsed < t + PULL_ERROR_SECONDS + backoff:
            return "ImagePullBackOff", attempt, t
        t += PULL_ERROR_SECONDS + backoff
    cycle = PULL_ERROR_SECONDS + BACKOFF_STEPS[-1]
    extra = max(0, math.floor((elapsed - t) / cycle))
    t += extra * cycle
    reason = "ErrImagePull" if elapsed < t + PULL_ERROR_SECONDS else "ImagePullBackOff"
    return reason, len(BACKOFF_STEPS) + 1 + extra, t


def _backoff_text(seconds: int) -> str:
    return f"{seconds // 60}m{seconds % 60}s" if seconds >= 60 else f"{seconds}s"


def _failed_container(
    container: Mapping[str, Any], fail: str, run: float, faults: Faults, restart_policy: str, pod_ref: str
) -> ContainerObservation:
    name, image = container["name"], container["image"]
    if fail == PULL_CYCLE:
        fail = pull_attempts_after(run)[0]
    if fail in ("ImagePullBackOff", "ErrImagePull"):
        message = f'Back-off pulling image "{image}"' if fail == "ImagePullBackOff" else pull_error(image)
        return ContainerObservation(name=name, state="waiting", reason=fail, message=message)
    if fail in ("CrashLoopBackOff", "OOMKilled", "Error"):
        reason = "OOMKilled" if fail == "OOMKilled" else "Error"
        code = 137 if fail == "OOMKilled" else faults.exit_code
        if restart_policy == "Never":  # as in the harness; a Deployment's pods always restart
            # The container stays terminated; its exit code is the only one there is.
            return ContainerObservation(name=name, state="terminated", reason=reason, last_exit_code=code)
        count, backoff, _ = restarts_after(run)
        return ContainerObservation(
            name=name,
            state="waiting",
            reason="CrashLoopBackOff",
            message=f"back-off {_backoff_text(backoff)} restarting failed container={name} pod={pod_ref}",
            restart_count=count,
            last_terminated_reason=reason,
            last_exit_code=code,
        )
    message = (
        "simulated: couldn't find key or configmap/secret for container"
        if fail == "CreateContainerConfigError"
        else f"simulated {fail}"
    )
    return ContainerObservation(name=name, state="waiting", reason=fail, message=message)


def compute_pod_state(
    elapsed: float | None,
    containers: list[Mapping[str, Any]],
    faults: Faults,
    *,
    restart_policy: str,
    pull_seconds: float,
    load_seconds: float,
    pod_ref: str,
) -> PodState:
    """The pod's status `elapsed` seconds after it was scheduled (None: not scheduled).

    Healthy: ContainerCreating (pulling) -> Running, not ready (loading the model) -> Ready.
    """
    if elapsed is None:
        return PodState(phase="Pending", ready=False)
    creating = faults.creating_seconds(pull_seconds)
    run = elapsed - creating
    if run < 0:
        waiting = tuple(
            ContainerObservation(
                name=c["name"],
                state="waiting",
                reason="ContainerCreating",
                message=f'Pulling image "{c["image"]}"',
            )
            for c in containers
        )
        return PodState(phase="Pending", ready=False, containers=waiting)

    statuses = []
    for container in containers:
        fail = faults.fails.get(container["name"])
        if fail:
            statuses.append(_failed_container(container, fail, run, faults, restart_policy, pod_ref))
        else:
            ready = run >= faults.loading_seconds(load_seconds)
            statuses.append(
                ContainerObservation(
                    name=container["name"],
                    ready=ready,
                    state="running",
                    message="" if ready else "loading model",
                )
            )
    states = [c.state for c in statuses]
    if all(s == "terminated" for s in states):
        phase = "Failed"  # only failures terminate a long-running server here
    elif "running" in states or any(c.last_terminated_reason for c in statuses):
        phase = "Running"
    else:
        phase = "Pending"  # e.g. every container waiting on an image pull
    ready = phase == "Running" and all(c.ready for c in statuses)
    return PodState(phase=phase, ready=ready, containers=tuple(statuses), running_since=creating)


# --- events and logs (pure) ---------------------------------------------------------------


def pod_events(
    pod: SimulatedPod,
    state: PodState,
    faults: Faults,
    *,
    scheduling_message: str,
    now: datetime,
    load_seconds: float,
) -> list[EventObservation]:
    """The scheduler's and kubelet's events for a pod so far, as `kubectl describe pod` lists them."""

    def event(kind: str, reason: str, message: str, at: datetime, count: int = 1) -> EventObservation:
        return EventObservation(
            type=kind,
            reason=reason,
            message=message,
            object_kind="Pod",
            object_name=pod.name,
            count=count,
            last_seen=at,
        )

    if not pod.node or pod.scheduled_at is None:
        if not scheduling_message:
            return []
        return [event("Warning", "FailedScheduling", scheduling_message, pod.created_at)]
    start = pod.scheduled_at
    events = [
        event("Normal", "Scheduled", f"Successfully assigned {pod.namespace}/{pod.name} to {pod.node}", start)
    ]
    if state.running_since is None:  # still pulling
        return events + [
            event("Normal", "Pulling", f'Pulling image "{c["image"]}"', start) for c in pod.containers
        ]
    started_at = start + timedelta(seconds=min(state.running_since, 10**8))
    run = max(0.0, (now - started_at).total_seconds())

    def after_start(seconds: float) -> datetime:
        return started_at + timedelta(seconds=seconds)

    for spec, status in zip(pod.containers, state.containers, strict=False):
        name, image = spec["name"], spec["image"]
        if status.reason in ("ErrImagePull", "ImagePullBackOff"):
            attempts, last = 1, 0.0
            cycle = faults.fails.get(name) == PULL_CYCLE
            if cycle:
                _, attempts, last = pull_attempts_after(run)
            events += [
                event(
                    "Normal",
                    "Pulling",
                    f'Pulling image "{image}"',
                    after_start(last) if last else start,
                    attempts,
                ),
                event(
                    "Warning",
                    "Failed",
                    f'Failed to pull image "{image}": {pull_error(image)}',
                    after_start(last),
                    attempts,
                ),
                event("Warning", "Failed", "Error: ErrImagePull", after_start(last), attempts),
            ]
            if status.reason == "ImagePullBackOff" or attempts > 1:
                in_backoff = cycle and status.reason == "ImagePullBackOff"
                backoff_at = after_start(last + PULL_ERROR_SECONDS if in_backoff else last)
                events += [
                    event("Normal", "BackOff", f'Back-off pulling image "{image}"', backoff_at, attempts),
                    event("Warning", "Failed", "Error: ImagePullBackOff", backoff_at, attempts),
                ]
            continue
        events += [
            event("Normal", "Pulling", f'Pulling image "{image}"', start),
            event(
                "Normal",
                "Pulled",
                f'Successfully pulled image "{image}" in {state.running_since:g}s',
                started_at,
            ),
        ]
        if status.state == "waiting" and status.reason != "CrashLoopBackOff":
            events.append(event("Warning", "Failed", f"Error: {status.reason}", started_at))
            continue
        last_start = started_at
        if status.reason == "CrashLoopBackOff":
            last_crash = restarts_after(run)[2]
            last_start = after_start(max(0.0, last_crash - 1))  # it crashes 1 s after starting
        runs = status.restart_count + 1
        events += [
            event("Normal", "Created", f"Created container {name}", last_start, runs),
            event("Normal", "Started", f"Started container {name}", last_start, runs),
        ]
        if status.reason == "CrashLoopBackOff":
            message = f"Back-off restarting failed container {name} in pod {pod.name}_{pod.namespace}"
            events.append(event("Warning", "BackOff", message, after_start(last_crash), status.restart_count))
        elif status.state == "running" and faults.loading_seconds(load_seconds) > 0:
            # The readiness probe fails while the model loads; the event stays in the history.
            message = "Readiness probe failed: the model is still loading (simulated)"
            events.append(event("Warning", "Unhealthy", message, started_at))
    return events


LOG_TAG = "[simulated cluster]"


def _exit_lines(spec: Mapping[str, Any], model_dir: str, reason: str, code: int | None) -> list[str]:
    """The log of a container run that the simulation made fail: a fake traceback."""
    return [
        f"{LOG_TAG} starting {spec['name']} from image {spec['image']}",
        f"{LOG_TAG} loading model from {model_dir} ...",
        "Traceback (most recent call last):",
        '  File "/simulated/server.py", line 42, in <module>',
        f'    engine = load_model("{model_dir}")',
        '  File "/simulated/server.py", line 17, in load_model',
        "    raise SimulatedFailure(reason)",
        f"SimulatedFailure: the simulated cluster made this container fail ({reason}, exit code {code})",
        f"{LOG_TAG} container {spec['name']} terminated: {reason} (exit code {code})",
    ]


def pod_log_lines(pod: SimulatedPod, state: PodState, faults: Faults, *, previous: bool) -> list[str]:
    """Clearly fake log lines of the pod's first container, according to its state."""
    if not pod.containers:
        return []
    spec = pod.containers[0]
    status = state.containers[0] if state.containers else None
    image, model_dir = spec["image"], spec.get("model_dir") or "/models"
    if status is None:
        return [] if previous else [f"{LOG_TAG} pod {pod.name} is not scheduled on a node yet"]
    if previous:
        if not status.last_terminated_reason:
            return []  # no earlier run of this container
        return _exit_lines(spec, model_dir, status.last_terminated_reason, status.last_exit_code)

    lines = [f"{LOG_TAG} pulling image {image} ..."]
    if spec["name"] in faults.fails and faults.note:
        lines.insert(0, f"{LOG_TAG} failure injected by {faults.note}")
    if status.reason == "ContainerCreating":
        return lines
    if status.reason in ("ErrImagePull", "ImagePullBackOff"):
        return [*lines, f"{LOG_TAG} failed to pull image {image}: {pull_error(image)}"]
    lines.append(f"{LOG_TAG} pulled image {image}")
    if status.state == "terminated":
        return lines + _exit_lines(spec, model_dir, status.reason, status.last_exit_code)
    if status.reason == "CrashLoopBackOff":
        return [
            *lines,
            f"{LOG_TAG} container {spec['name']} is in CrashLoopBackOff after {status.restart_count} "
            "restart(s); its previous log shows why it exited",
        ]
    if status.state == "waiting":
        return [*lines, f"{LOG_TAG} container {spec['name']} cannot start: {status.reason}: {status.message}"]
    lines += [f"{LOG_TAG} starting {spec['name']}", f"{LOG_TAG} loading model from {model_dir} ..."]
    if status.ready:
        lines.append(f"{LOG_TAG} ready on :{spec.get('port') or 8000}")
    return lines


# --- Deployments: templates and conditions (pure) -----------------------------------------


@dataclass(frozen=True)
class PodTemplate:
    """What the simulated cluster needs from a Deployment's pod template."""

    template_hash: str
    labels: dict[str, str]
    annotations: dict[str, str]
    requests: dict[str, float]
    containers: list[Obj]  # {"name", "image", "memory_limit", "port", "model_dir"}
    scheduling: Obj  # {"nodeSelector", "affinity", "tolerations"}
    restart_policy: str


def template_hash(template: Obj) -> str:
    """A stable 10-character hash of a pod template, in Kubernetes' name alphabet."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True, separators=(",", ":")).encode()).digest()
    number = int.from_bytes(digest[:8], "big")
    chars = []
    for _ in range(10):
        number, index = divmod(number, len(NAME_ALPHABET))
        chars.append(NAME_ALPHABET[index])
    return "".join(chars)


def _invalid(kind: str, name: str, detail: str) -> PermanentClusterError:
    group = "Deployment.apps" if kind == "Deployment" else kind
    return PermanentClusterError(f'{group} "{name}" is invalid: {detail}')


def _model_dir(container: Obj) -> str:
    """Where the server loads its model from, for the fake logs."""
    args = [str(a) for a in container.get("args") or []]
    for i, arg in enumerate(args):
        for flag in ("--model", "--model-repository"):
            if arg.startswith(flag + "="):
                return arg.split("=", 1)[1]
            if arg == flag and i + 1 < len(args):
                return args[i + 1]
    mounts = [m.get("mountPath") for m in container.get("volumeMounts") or [] if m.get("mountPath")]
    return mounts[0] if mounts else "/models"


def parse_pod_template(deployment: Obj) -> PodTemplate:
    """Check a Deployment as the API server would and extract its pod template."""
    name = deployment["metadata"]["name"]
    spec = deployment.get("spec") or {}
    replicas = spec.get("replicas", 1)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise _invalid(
            "Deployment", name, f"spec.replicas: Invalid value: {replicas!r}: must be an integer >= 0"
        )
    template = spec.get("template") or {}
    metadata = template.get("metadata") or {}
    labels = {str(k): str(v) for k, v in (metadata.get("labels") or {}).items()}
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    if not selector:
        raise _invalid("Deployment", name, "spec.selector: Required value")
    if any(labels.get(k) != str(v) for k, v in selector.items()):
        raise _invalid(
            "Deployment",
            name,
            "spec.template.metadata.labels: Invalid value: `selector` does not match template `labels`",
        )
    pod_spec = template.get("spec") or {}
    restart_policy = pod_spec.get("restartPolicy") or "Always"
    if restart_policy != "Always":
        raise _invalid(
            "Deployment",
            name,
            f'spec.template.spec.restartPolicy: Unsupported value: "{restart_policy}": '
            'supported values: "Always"',
        )
    containers = pod_spec.get("containers") or []
    if not containers:
        raise _invalid("Deployment", name, "spec.template.spec.containers: Required value")
    requests: dict[str, float] = {}
    facts = []
    for i, container in enumerate(containers):
        where = f"spec.template.spec.containers[{i}]"
        for key in ("name", "image"):
            if not container.get(key):
                raise _invalid("Deployment", name, f"{where}.{key}: Required value")
        resources = container.get("resources") or {}
        limits = resources.get("limits") or {}
        try:
            # Kubernetes defaults requests to limits when only limits are given (typical for GPUs).
            for resource, quantity in {**limits, **(resources.get("requests") or {})}.items():
                requests[resource] = requests.get(resource, 0.0) + parse_quantity(quantity)
            memory_limit = int(parse_quantity(limits["memory"])) if "memory" in limits else None
        except ValueError as exc:
            raise _invalid("Deployment", name, f"{where}.resources: {exc}") from None
        ports = [p.get("containerPort") for p in container.get("ports") or [] if p.get("containerPort")]
        facts.append(
            {
                "name": str(container["name"]),
                "image": str(container["image"]),
                "memory_limit": memory_limit,
                "port": ports[0] if ports else 8000,
                "model_dir": _model_dir(container),
            }
        )
    return PodTemplate(
        template_hash=template_hash(template),
        labels=labels,
        annotations={str(k): str(v) for k, v in (metadata.get("annotations") or {}).items()},
        requests=requests,
        containers=facts,
        scheduling={
            "nodeSelector": pod_spec.get("nodeSelector") or {},
            "affinity": pod_spec.get("affinity") or {},
            "tolerations": pod_spec.get("tolerations") or [],
        },
        restart_policy=restart_policy,
    )


def _scaled(value: int | str, total: int) -> int:
    """An int-or-percent setting (maxUnavailable) as a count; percentages round down."""
    if isinstance(value, str) and value.endswith("%"):
        return math.floor(total * int(value[:-1]) / 100)
    return int(value)


def deployment_conditions(
    spec: Obj, *, rs_name: str, updated: int, available: int, total: int, seconds_since_update: float
) -> dict[str, tuple[str, str, str]]:
    """The Deployment controller's Available and Progressing conditions.

    Progress is measured from the last change of the Deployment (the real controller also
    counts each pod becoming available as progress)."""
    desired = int(spec.get("replicas", 1))
    strategy = spec.get("strategy") or {}
    if strategy.get("type", "RollingUpdate") == "RollingUpdate":
        max_unavailable = min(
            desired, _scaled((strategy.get("rollingUpdate") or {}).get("maxUnavailable", "25%"), desired)
        )
    else:
        max_unavailable = 0
    if available >= desired - max_unavailable:
        conditions = {
            "Available": ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
        }
    else:
        conditions = {
            "Available": (
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        }
    if updated == desired and available >= desired and total == desired:
        conditions["Progressing"] = (
            "True",
            "NewReplicaSetAvailable",
            f'ReplicaSet "{rs_name}" has successfully progressed.',
        )
    elif seconds_since_update > int(spec.get("progressDeadlineSeconds", 600)):
        conditions["Progressing"] = (
            "False",
            "ProgressDeadlineExceeded",
            f'ReplicaSet "{rs_name}" has timed out progressing.',
        )
    else:
        conditions["Progressing"] = ("True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.')
    return conditions


# --- the adapter --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Applied:
    """One object checked and ready to store."""

    api_version: str
    kind: str
    namespace: str
    name: str
    labels: dict[str, str]
    body: Obj
    template: PodTemplate | None = None
    replicas: int = 0

    @property
    def display(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


@dataclass(frozen=True)
class _PodView:
    """A pod with its computed state at one moment."""

    pod: SimulatedPod
    faults: Faults
    state: PodState
    scheduling_message: str

    def observation(self) -> PodObservation:
        bound = bool(self.pod.node)
        attempted = bound or bool(self.scheduling_message)
        return PodObservation(
            name=self.pod.name,
            phase=self.state.phase,
            node=self.pod.node,
            ready=self.state.ready,
            scheduled=bound if attempted else None,
            scheduling_reason="" if bound or not attempted else "Unschedulable",
            scheduling_message="" if bound else self.scheduling_message,
            containers=self.state.containers,
            created_at=self.pod.created_at,
        )

    def fingerprint(self) -> tuple[Any, ...]:
        """What the watcher would see change: phase, readiness, container reasons, restarts."""
        containers = tuple(
            (c.name, c.state, c.reason, c.ready, c.restart_count) for c in self.state.containers
        )
        return (
            "pod",
            self.pod.name,
            self.pod.node,
            self.state.phase,
            self.state.ready,
            containers,
            self.scheduling_message,
        )


def _stored_body(obj: Obj, kind: str) -> Obj:
    """The object as stored: JSON data only, no status, Secret values replaced by digests."""
    try:
        body = json.loads(json.dumps(obj))
    except (TypeError, ValueError) as exc:
        raise PermanentClusterError(f"{kind} is not JSON-serialisable: {exc}") from None
    body.pop("status", None)
    if kind == "Secret":
        # Credentials must not sit in the console's database in plain text. Nothing in a
        # simulated cluster reads them, and a keyed digest still tells "unchanged" apart.
        for key in ("data", "stringData"):
            if isinstance(body.get(key), dict):
                body[key] = {
                    k: "hmac-sha256:"
                    + salted_hmac("deploy.simulated.secret", str(v), algorithm="sha256").hexdigest()
                    for k, v in body[key].items()
                }
    return body


# Any constant works; it only has to be the same in every process.
_SCHEDULER_LOCK_ID = 0x51_4D_43_4C  # "SMCL"


def _lock_scheduler() -> None:
    """Serialise binding, so two processes cannot hand the same free GPUs to two pods.

    SQLite's IMMEDIATE transactions (settings) already allow one writer at a time."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_SCHEDULER_LOCK_ID])


def _needs(pod: SimulatedPod) -> PodNeeds:
    scheduling = pod.scheduling or {}
    return PodNeeds(
        requests=pod.requests or {},
        node_selector=scheduling.get("nodeSelector") or {},
        affinity=scheduling.get("affinity") or {},
        tolerations=tuple(scheduling.get("tolerations") or ()),
    )


class SimulatedCluster:
    """The Cluster protocol over database rows: a tiny API server, scheduler and kubelet."""

    display_name = "Simulated cluster"
    simulated = True

    def __init__(
        self,
        *,
        nodes_file: str,
        faults_file: str,
        pull_seconds: float,
        load_seconds: float,
        poll_seconds: float,
        clock: Callable[[], datetime] | None = None,
    ):
        self.nodes_file = str(nodes_file)
        self.faults_file = str(faults_file)
        self.pull_seconds = float(pull_seconds)
        self.load_seconds = float(load_seconds)
        self.poll_seconds = float(poll_seconds)
        self.clock = clock or timezone.now

    @classmethod
    def from_settings(cls) -> SimulatedCluster:
        return cls(
            nodes_file=settings.SIMULATED_CLUSTER_NODES,
            faults_file=settings.SIMULATED_CLUSTER_FAULTS,
            pull_seconds=settings.SIMULATED_PULL_SECONDS,
            load_seconds=settings.SIMULATED_LOAD_SECONDS,
            poll_seconds=settings.WATCH_POLL_SECONDS,
        )

    # --- Cluster protocol -------------------------------------------------------------

    def nodes(self) -> list[NodeInfo]:
        return list(load_nodes(self.nodes_file))

    def apply(self, objects: list[Obj]) -> list[str]:
        # Check every object first: a bad one fails the apply before anything changed.
        prepared = [self._prepare(obj) for obj in objects]
        lines = []
        for item in prepared:
            try:
                with transaction.atomic():
                    lines.append(self._apply_one(item))
            except IntegrityError:
                # Another process created the same object at the same moment (a 409 Conflict).
                raise TransientClusterError(
                    f"conflict applying {item.kind} {item.display}; try again"
                ) from None
        self._schedule_pending()
        return lines

    def delete_service(self, namespace: str, name: str) -> None:
        with transaction.atomic():
            deployments = list(
                SimulatedObject.objects.filter(
                    namespace=namespace, service=name, kind="Deployment"
                ).values_list("name", flat=True)
            )
            # Pods go at once (no grace period), so their GPUs are free for the next pod.
            SimulatedPod.objects.filter(
                Q(service=name) | Q(deployment__in=deployments), namespace=namespace
            ).delete()
            SimulatedObject.objects.filter(namespace=namespace, service=name).delete()
        self._schedule_pending()

    def observe(self, namespace: str, name: str) -> Observation:
        messages = self._schedule_pending()
        now = self.clock()
        rules = load_fault_rules(self.faults_file)
        deployment = SimulatedObject.objects.filter(kind="Deployment", namespace=namespace, name=name).first()
        pods = SimulatedPod.objects.filter(namespace=namespace, service=name).order_by("created_at", "name")
        views = [self._view(pod, now, rules, messages) for pod in pods]
        other = SimulatedObject.objects.filter(
            namespace=namespace, service=name, kind__in=OTHER_KINDS
        ).count()
        events = [event for view in views for event in self._events(view, now)]
        events.sort(key=lambda e: e.last_seen or now)
        common = {
            "pods": tuple(view.observation() for view in views),
            "events": tuple(events),
            "other_objects": other,
            "observed_at": now,
        }
        if deployment is None:
            return Observation(found=False, **common)
        spec = deployment.body.get("spec") or {}
        current_hash = template_hash(spec.get("template") or {})
        owned = [view for view in views if view.pod.deployment == name]
        updated = sum(1 for view in owned if view.pod.template_hash == current_hash)
        ready = sum(1 for view in owned if view.state.ready)
        conditions = deployment_conditions(
            spec,
            rs_name=f"{name}-{current_hash}",
            updated=updated,
            available=ready,
            total=len(owned),
            seconds_since_update=(now - deployment.updated_at).total_seconds(),
        )
        return Observation(
            found=True,
            desired_replicas=int(spec.get("replicas", 1)),
            ready_replicas=ready,
            updated_replicas=updated,
            available_replicas=ready,  # minReadySeconds is 0: ready pods are available
            conditions=conditions,
            **common,
        )

    def watch(self, on_change: Callable[[str, str], None], stop: Callable[[], bool]) -> None:
        """Poll every poll_seconds and report services whose fingerprint changed.

        The first loop reports every existing service, as a Kubernetes watch starts with an
        ADDED event per object; a service that disappears is reported once more."""
        seen: dict[tuple[str, str], tuple[Any, ...]] = {}
        while not stop():
            if not connection.in_atomic_block:
                close_old_connections()  # a long-running loop must not keep a dead connection
            try:
                current = self._fingerprints()
            except DatabaseError:
                log.warning("simulated cluster: watch poll failed; retrying", exc_info=True)
                current = None
            if current is not None:
                for key in sorted(seen.keys() | current.keys()):
                    if seen.get(key) != current.get(key):
                        on_change(*key)
                seen = current
            deadline = time.monotonic() + self.poll_seconds
            while not stop() and (left := deadline - time.monotonic()) > 0:
                time.sleep(min(WATCH_STOP_CHECK_SECONDS, left))

    def pod_logs(self, namespace: str, pod: str, *, previous: bool = False, tail_lines: int = 200) -> str:
        row = SimulatedPod.objects.filter(namespace=namespace, name=pod).first()
        if row is None:
            raise PermanentClusterError(f'pods "{pod}" not found')
        view = self._view(row, self.clock(), load_fault_rules(self.faults_file), {})
        lines = pod_log_lines(row, view.state, view.faults, previous=previous)
        if tail_lines is not None:
            lines = lines[-tail_lines:] if tail_lines > 0 else []
        return "".join(f"{line}\n" for line in lines)

    # --- apply ------------------------------------------------------------------------

    def _prepare(self, obj: Obj) -> _Applied:
        if not isinstance(obj, dict):
            raise PermanentClusterError(f"cannot apply {type(obj).__name__}: not a Kubernetes object")
        api_version, kind = str(obj.get("apiVersion") or ""), str(obj.get("kind") or "")
        if (api_version, kind) not in SERVED:
            raise PermanentClusterError(f"the simulated cluster does not serve {api_version} {kind}")
        metadata = obj.get("metadata") or {}
        name = str(metadata.get("name") or "")
        if not name:
            raise PermanentClusterError(f"{kind}: metadata.name: Required value")
        namespace = "" if kind in CLUSTER_SCOPED else str(metadata.get("namespace") or "default")
        body = _stored_body(obj, kind)
        template = parse_pod_template(body) if kind == "Deployment" else None
        return _Applied(
            api_version=api_version,
            kind=kind,
            namespace=namespace,
            name=name,
            labels={str(k): str(v) for k, v in (metadata.get("labels") or {}).items()},
            body=body,
            template=template,
            replicas=int((body.get("spec") or {}).get("replicas", 1)) if template else 0,
        )

    def _apply_one(self, item: _Applied) -> str:
        now = self.clock()
        row = (
            SimulatedObject.objects.select_for_update()
            .filter(kind=item.kind, namespace=item.namespace, name=item.name)
            .first()
        )
        if row is None:
            row = SimulatedObject.objects.create(
                api_version=item.api_version,
                kind=item.kind,
                namespace=item.namespace,
                name=item.name,
                service=item.labels.get(LABEL_SERVICE, ""),
                labels=item.labels,
                body=item.body,
                created_at=now,
                updated_at=now,
            )
            verb = "created"
        elif row.body == item.body and row.api_version == item.api_version:
            verb = "unchanged"
        else:
            if item.kind == "Deployment":
                old_selector = (row.body.get("spec") or {}).get("selector")
                if old_selector != item.body["spec"].get("selector"):
                    raise _invalid(
                        "Deployment", item.name, "spec.selector: Invalid value: field is immutable"
                    )
            row.api_version = item.api_version
            row.service = item.labels.get(LABEL_SERVICE, "")
            row.labels = item.labels
            row.body = item.body
            row.generation += 1
            row.updated_at = now
            row.save()
            verb = "configured"
        if item.template is not None:
            # Also when unchanged: a lost pod comes back, as the ReplicaSet controller would do it.
            self._reconcile_pods(item, item.template, now)
        return f"{item.kind} {item.display}: {verb}"

    def _reconcile_pods(self, item: _Applied, template: PodTemplate, now: datetime) -> None:
        """Make the Deployment's pods match its replicas and template (old-template pods are
        replaced at once, like a Recreate rollout)."""
        pods = list(SimulatedPod.objects.filter(namespace=item.namespace, deployment=item.name))
        current = [pod for pod in pods if pod.template_hash == template.template_hash]
        doomed = [pod.pk for pod in pods if pod.template_hash != template.template_hash]
        excess = len(current) - item.replicas
        if excess > 0:
            # As the ReplicaSet controller picks: unscheduled pods first, then the newest.
            current.sort(key=lambda pod: (pod.node != "", -pod.created_at.timestamp(), pod.name))
            doomed += [pod.pk for pod in current[:excess]]
        if doomed:
            SimulatedPod.objects.filter(pk__in=doomed).delete()
        if excess >= 0:
            return
        prefix = f"{item.name}-{template.template_hash}-"
        taken = set(
            SimulatedPod.objects.filter(namespace=item.namespace, name__startswith=prefix).values_list(
                "name", flat=True
            )
        )
        for _ in range(-excess):
            name = prefix + "".join(random.choices(NAME_ALPHABET, k=5))
            while name in taken:
                name = prefix + "".join(random.choices(NAME_ALPHABET, k=5))
            taken.add(name)
            SimulatedPod.objects.create(
                namespace=item.namespace,
                name=name,
                deployment=item.name,
                service=template.labels.get(LABEL_SERVICE, ""),
                labels={**template.labels, "pod-template-hash": template.template_hash},
                annotations=template.annotations,
                template_hash=template.template_hash,
                requests=template.requests,
                containers=copy.deepcopy(template.containers),
                scheduling=template.scheduling,
                restart_policy=template.restart_policy,
                created_at=now,
            )

    # --- scheduling -------------------------------------------------------------------

    def _schedule_pending(self) -> dict[int, str]:
        """Bind pending pods, oldest first; return {pod id: scheduler message} for the rest."""
        if not SimulatedPod.objects.filter(node="").exists():
            return {}  # the common case, kept to one cheap read
        nodes = self.nodes()
        messages: dict[int, str] = {}
        with transaction.atomic():
            _lock_scheduler()
            usage: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
            for node, requests in SimulatedPod.objects.exclude(node="").values_list("node", "requests"):
                _add_usage(usage[node], requests)
            now = self.clock()
            for pod in SimulatedPod.objects.filter(node="").order_by("created_at", "name"):
                chosen, message = pick_node(nodes, _needs(pod), usage)
                if chosen is None:
                    messages[pod.pk] = message
                    continue
                SimulatedPod.objects.filter(pk=pod.pk, node="").update(node=chosen, scheduled_at=now)
                _add_usage(usage[chosen], pod.requests)
        return messages

    # --- pod state ----------------------------------------------------------------------

    def _view(
        self, pod: SimulatedPod, now: datetime, rules: Iterable[FaultRule], messages: Mapping[int, str]
    ) -> _PodView:
        faults = pod_faults(pod, rules)
        elapsed = None
        if pod.node and pod.scheduled_at is not None:
            elapsed = max(0.0, (now - pod.scheduled_at).total_seconds())
        state = compute_pod_state(
            elapsed,
            pod.containers,
            faults,
            restart_policy=pod.restart_policy,
            pull_seconds=self.pull_seconds,
            load_seconds=self.load_seconds,
            pod_ref=f"{pod.name}_{pod.namespace}",
        )
        return _PodView(pod=pod, faults=faults, state=state, scheduling_message=messages.get(pod.pk, ""))

    def _events(self, view: _PodView, now: datetime) -> list[EventObservation]:
        return pod_events(
            view.pod,
            view.state,
            view.faults,
            scheduling_message=view.scheduling_message,
            now=now,
            load_seconds=self.load_seconds,
        )

    def _fingerprints(self) -> dict[tuple[str, str], tuple[Any, ...]]:
        """A cheap summary per service (namespace, name) of what observe() would report."""
        messages = self._schedule_pending()
        now = self.clock()
        rules = load_fault_rules(self.faults_file)
        parts: dict[tuple[str, str], list[tuple[Any, ...]]] = defaultdict(list)
        objects = (
            SimulatedObject.objects.exclude(service="")
            .exclude(namespace="")
            .values_list(
                "namespace",
                "service",
                "kind",
                "name",
                "generation",
                "updated_at",
                "body__spec__progressDeadlineSeconds",
            )
        )
        for namespace, service, kind, name, generation, updated_at, deadline in objects:
            entry: tuple[Any, ...] = ("object", kind, name, generation)
            if kind == "Deployment":
                # The Progressing condition turns False with time alone: report that moment too.
                limit = 600 if deadline is None else int(deadline)
                entry += ((now - updated_at).total_seconds() > limit,)
            parts[(namespace, service)].append(entry)
        for pod in SimulatedPod.objects.exclude(service=""):
            parts[(pod.namespace, pod.service)].append(self._view(pod, now, rules, messages).fingerprint())
        return {key: tuple(sorted(value, key=repr)) for key, value in parts.items()}


def _add_usage(used: dict[str, float], requests: Mapping[str, float]) -> None:
    used["pods"] += 1
    for resource, amount in (requests or {}).items():
        used[resource] += amount
