"""The admission side of the create-service form and the detail page, as htmx partials: the
pre-submit check (services.actions.service_check: admitted now, must wait and where in line, or
refused with the numbers), the free GPUs of the queues the user may use, and a Queued service's
position in its queue. The views only read the query string and render."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from queues.models import Queue, Team
from queues.selectors import queue_states, queue_workloads
from services import phases
from services.actions import service_check
from services.forms import InferenceServiceForm
from services.models import InferenceService
from services.selectors import services_visible_to

# The form fields the admission check depends on (a problem in one of them is shown in the panel).
ADMISSION_FIELDS = ("queue", "team", "priority_class", "replicas", "cpu", "memory", "gpu_count", "gpu_type")
# What service_check also reads: the model files (layout for the runtime, fit for the GPUs).
MODEL_FIELDS = ("dataset", "model_path", "runtime", "engine_args", "fit_override")
# The name plays no part in admission; service_check only needs a valid one.
PLACEHOLDER_NAME = "check"

OUTCOMES = {
    "fits": ("fits now", "ok"),
    "borrows": ("fits by borrowing", "ok"),
    "waits": ("must wait", "warn"),
    "exceeds_quota": ("over its quota", "bad"),
    "wrong_gpu_type": ("other GPU type", "muted"),
    "no_node": ("no node fits", "bad"),
}


def _team(user, chosen: Team | None) -> Team | None:
    """The team the service would count against: the chosen one, or the user's only team."""
    if chosen is not None:
        return chosen
    teams = list(user.teams.all()[:2])
    return teams[0] if len(teams) == 1 else None


def _capacity(user, team: Team | None) -> list[dict[str, Any]]:
    """The queues the user may use, each with the GPUs free per flavor (own quota, no borrowing)."""
    team = _team(user, team)
    queues = list(team.queues.order_by("name")) if team is not None else []
    if not queues:
        queues = list(Queue.objects.order_by("name"))
    states = queue_states(queues)
    return [
        {
            "queue": queue,
            "flavors": [
                {
                    "flavor": f.flavor,
                    "free": max(0, f.nominal.gpu - f.used.gpu),
                    "quota": f.nominal.gpu,
                }
                for f in states[queue.id].flavors
            ],
        }
        for queue in queues
    ]


def _labelled(form: InferenceServiceForm, errors: dict[str, list[str]]) -> list[dict[str, Any]]:
    rows = []
    for field, messages in errors.items():
        label = form[field].label if field in form.fields else field.replace("_", " ").capitalize()
        rows.append({"field": field, "label": label, "messages": messages})
    return rows


def _check_fields(form: InferenceServiceForm, sent: set[str]) -> dict[str, Any]:
    """service_check's arguments from what validated; defaults for the rest."""
    data = form.cleaned_data
    fields: dict[str, Any] = {"name": PLACEHOLDER_NAME, "queue": data["queue"]}
    for name in ("replicas", "cpu", "memory", "gpu_count", "gpu_type", "runtime", "engine_args"):
        if name in sent and name in data:
            fields[name] = data[name]
    for name in ("team", "priority_class", "dataset", "model_path", "fit_override"):
        if data.get(name):
            fields[name] = data[name]  # an empty team: service_check picks the user's only team
    # Tolerations decide which nodes a flavor may use; they count in the custom mode only.
    custom = data.get("affinity_mode") == InferenceService.Affinity.CUSTOM
    if custom and "tolerations" in data:
        fields.update(affinity_mode=data["affinity_mode"], tolerations=data["tolerations"])
    return fields


@login_required
@require_GET
def admission_check_partial(request: HttpRequest) -> HttpResponse:
    """The pre-submit check for the form's current values (the form's own field names)."""
    form = InferenceServiceForm(request.GET, user=request.user)
    form.is_valid()  # lenient: what validated is used, problems in the admission fields are shown
    data = form.cleaned_data
    sent = set(request.GET)
    context: dict[str, Any] = {
        "state": "",
        "capacity": _capacity(request.user, data.get("team")),
        "queue": data.get("queue"),
        "errors": [],
        "result": None,
    }
    problems = {f: form.errors[f] for f in ADMISSION_FIELDS if f in form.errors and f in sent}
    if data.get("queue") is None:
        context["state"] = "no-queue"
    elif problems:
        context.update(state="fix", errors=_labelled(form, problems))
    elif not data.get("dataset") or not data.get("model_path"):
        context["state"] = "no-model"
    else:
        try:
            result = service_check(owner=request.user, **_check_fields(form, sent))
        except ValidationError as exc:
            errors = exc.message_dict if hasattr(exc, "error_dict") else {"__all__": exc.messages}
            context.update(state="invalid", errors=_labelled(form, errors))
        else:
            for flavor in result["flavors"]:
                flavor["label"], flavor["badge"] = OUTCOMES.get(flavor["outcome"], (flavor["outcome"], ""))
            context.update(state=result["verdict"], result=result)
            if result["field"] and result["field"] in form.fields:
                context["field_label"] = form[result["field"]].label
    return render(request, "services/_admission_check.html", context)


@login_required
@require_GET
def queue_position_partial(request: HttpRequest, pk: int) -> HttpResponse:
    """A Queued service's place in its queue's line (the message says what it waits for)."""
    service = get_object_or_404(services_visible_to(request.user).select_related("queue"), pk=pk)
    context: dict[str, Any] = {"service": service, "position": None, "waiting": 0}
    if service.phase == phases.QUEUED:
        waiting = queue_workloads(service.queue)["waiting"]
        context["waiting"] = len(waiting)
        context["position"] = next((w["position"] for w in waiting if w["id"] == service.id), None)
    return render(request, "services/_queue_position.html", context)
