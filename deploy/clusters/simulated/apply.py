"""The simulated API server and ReplicaSet controller: checking and storing applied objects, and
keeping a Deployment's pod rows in step with its replicas and template.

Objects are stored as JSON rows (deploy.models.SimulatedObject) without status and with Secret
values replaced by digests. The functions here run inside the adapter's transactions.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import random
from dataclasses import dataclass
from datetime import datetime

from django.utils.crypto import salted_hmac

from console.crypto import encrypt_json
from deploy.clusters.base import LABEL_SERVICE, PermanentClusterError
from deploy.clusters.simulated.deployments import (
    NAME_ALPHABET,
    Obj,
    PodTemplate,
    invalid,
    parse_pod_template,
)
from deploy.clusters.simulated.jobs import JobTemplate, StateDir, create_job_pod, parse_job
from deploy.models import SimulatedObject, SimulatedPod

SERVED = {
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "Namespace"),
    ("v1", "PersistentVolumeClaim"),
    ("batch/v1", "Job"),
    # Stored and deleted with the service; nothing here enforces it (all traffic is local).
    ("networking.k8s.io/v1", "NetworkPolicy"),
}
CLUSTER_SCOPED = {"Namespace"}


@dataclass(frozen=True)
class Applied:
    """One object checked and ready to store."""

    api_version: str
    kind: str
    namespace: str
    name: str
    labels: dict[str, str]
    body: Obj
    template: PodTemplate | None = None
    replicas: int = 0
    job: JobTemplate | None = None
    secret_values: dict[str, str] | None = None

    @property
    def display(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


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


def prepare(obj: Obj) -> Applied:
    """Check an object as the API server would; nothing is stored yet."""
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
    if kind == "NetworkPolicy" and not isinstance((obj.get("spec") or {}).get("podSelector"), dict):
        raise invalid(kind, name, "spec.podSelector: Required value")
    body = _stored_body(obj, kind)
    template = parse_pod_template(body) if kind == "Deployment" else None
    job = parse_job(body) if kind == "Job" else None
    secret_values = _secret_values(obj, name) if kind == "Secret" else None
    return Applied(
        api_version=api_version,
        kind=kind,
        namespace=namespace,
        name=name,
        labels={str(k): str(v) for k, v in (metadata.get("labels") or {}).items()},
        body=body,
        template=template,
        replicas=int((body.get("spec") or {}).get("replicas", 1)) if template else 0,
        job=job,
        secret_values=secret_values,
    )


def _secret_values(obj: Obj, name: str) -> dict[str, str]:
    """A Secret's values in clear (data is base64, stringData plain; stringData wins)."""
    values = {}
    for key, value in (obj.get("data") or {}).items():
        try:
            values[str(key)] = base64.b64decode(str(value), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise invalid("Secret", name, f"data[{key}]: Invalid value: not base64-encoded text") from None
    values.update({str(k): str(v) for k, v in (obj.get("stringData") or {}).items()})
    return values


def apply_one(item: Applied, now: datetime, state: StateDir) -> str:
    """Store one object (the caller holds a transaction); kubectl's line for it."""
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
            secret_data=encrypt_json(item.secret_values or {}),
            created_at=now,
            updated_at=now,
        )
        verb = "created"
        if item.job is not None:
            create_job_pod(item.namespace, item.name, item.job, now)  # the Job controller's first pod
        if item.kind == "PersistentVolumeClaim":
            state.claim(item.namespace, item.name).mkdir(parents=True, exist_ok=True)  # provisioned
    elif row.body == item.body and row.api_version == item.api_version:
        verb = "unchanged"
    else:
        if item.kind == "Deployment":
            old_selector = (row.body.get("spec") or {}).get("selector")
            if old_selector != item.body["spec"].get("selector"):
                raise invalid("Deployment", item.name, "spec.selector: Invalid value: field is immutable")
        if item.kind == "Job" and (row.body.get("spec") or {}).get("template") != item.body["spec"].get(
            "template"
        ):
            raise invalid("Job", item.name, "spec.template: Invalid value: field is immutable")
        if item.secret_values is not None:
            row.secret_data = encrypt_json(item.secret_values)
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
        reconcile_pods(item, item.template, now)
    return f"{item.kind} {item.display}: {verb}"


def reconcile_pods(item: Applied, template: PodTemplate, now: datetime) -> None:
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
