"""Failure injection: which simulated pods fail, how, and what the failure says.

It uses the harness's vocabulary, so a test triggers the same failure on both backends:
pod-template annotations `sim.harness/fail`, `fail-containers`, `exit-code`, `ready-after`,
`start-after`; a rules file (settings.SIMULATED_CLUSTER_FAULTS) in the harness's format; and
the built-in rules (image tag `doesnotexist` or `invalid.example` in the repository ->
ErrImagePull then ImagePullBackOff; memory limit below 64Mi -> OOMKilled).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from deploy.models import SimulatedPod

log = logging.getLogger(__package__)  # the simulated cluster logs as deploy.clusters.simulated

ANNOTATION_PREFIX = "sim.harness/"
OOM_MIN_BYTES = 64 * 2**20  # built-in: a memory limit below 64Mi is OOMKilled
PULL_CYCLE = "ErrImagePull->ImagePullBackOff"  # fail mode of the built-in image rule

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
_cache_lock = threading.Lock()


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
