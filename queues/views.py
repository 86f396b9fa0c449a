"""Queue and flavor pages: thin views over queues.actions (writes, staff only) and
queues.selectors (reads). The queue page's live part is an htmx partial polled every 2 s."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone

from console.charts import gpu_usage_svg
from queues.actions import flavor_create, flavor_update, queue_create, queue_update
from queues.admission import Amounts
from queues.forms import FlavorForm, QueueForm, format_node_taints, format_tolerations
from queues.models import GIB, FlavorQuota, Queue, ResourceFlavor
from queues.selectors import (
    queue_usage_series,
    queue_workloads,
    queues_depending_on,
    queues_with_usage,
    usage_by_flavor,
)

CHART_HOURS = 24


@login_required
def queue_list_view(request: HttpRequest) -> HttpResponse:
    return render(request, "queues/list.html", {"queues": queues_with_usage()})


@staff_member_required
def queue_create_view(request: HttpRequest) -> HttpResponse:
    form = QueueForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            queue = queue_create(flavors=form.flavors(), **form.queue_fields())
        except ValidationError as exc:
            form.add_action_errors(exc)
        else:
            messages.success(request, f"Queue {queue.name} created.")
            return redirect("queues:list")
    return render(request, "queues/create.html", {"form": form})


@staff_member_required
def queue_edit_view(request: HttpRequest, name: str) -> HttpResponse:
    queue = get_object_or_404(Queue, name=name)
    form = QueueForm(request.POST or None, instance=queue)
    if request.method == "POST" and form.is_valid():
        try:
            queue_update(queue=queue, flavors=form.flavors(), **form.queue_fields())
        except ValidationError as exc:
            form.add_action_errors(exc)
        else:
            messages.success(request, f"Queue {queue.name} saved.")
            return redirect("queues:detail", name=queue.name)
    return render(request, "queues/edit.html", {"form": form, "queue": queue})


def _live_context(queue: Queue) -> dict[str, Any]:
    """Per flavor, what admitted services hold against the quota; and the workloads."""
    usage = usage_by_flavor([queue.id])
    rows = []
    for quota in queue.quotas.select_related("flavor").order_by("position", "id"):
        used, services = usage.get((queue.id, quota.flavor_id), (Amounts(), 0))
        rows.append(
            {
                "quota": quota,
                "flavor": quota.flavor,
                "services": services,
                "resources": [
                    _resource("GPUs", used.gpu, quota.gpus, ""),
                    _resource("CPU", used.cpu_milli / 1000, float(quota.cpu), " cores"),
                    _resource("Memory", used.memory / GIB, quota.memory_gib, " GiB"),
                ],
            }
        )
    return {"queue": queue, "flavors": rows, "workloads": queue_workloads(queue)}


def _resource(label: str, used: float, quota: float, unit: str) -> dict[str, Any]:
    percent = 100 if quota <= 0 and used > 0 else (min(100, round(100 * used / quota)) if quota else 0)
    return {
        "label": label,
        "used": used,
        "quota": quota,
        "unit": unit,
        "percent": percent,
        "borrowed": max(0, used - quota),
        "full": used >= quota,
    }


@login_required
def queue_detail_view(request: HttpRequest, name: str) -> HttpResponse:
    queue = get_object_or_404(Queue, name=name)
    end = timezone.now()
    start = end - timedelta(hours=CHART_HOURS)
    charts = [
        gpu_usage_svg(entry["flavor"], entry["points"], start=start, end=end)
        for entry in queue_usage_series(queue, hours=CHART_HOURS, now=end)
    ]
    return render(
        request, "queues/detail.html", {**_live_context(queue), "charts": charts, "chart_hours": CHART_HOURS}
    )


@login_required
def queue_live_partial(request: HttpRequest, name: str) -> HttpResponse:
    """Usage per flavor and the workloads, polled by the queue page every 2 s."""
    queue = get_object_or_404(Queue, name=name)
    return render(request, "queues/_live.html", _live_context(queue))


@login_required
def flavor_list_view(request: HttpRequest) -> HttpResponse:
    flavors = ResourceFlavor.objects.prefetch_related(
        Prefetch("quotas", queryset=FlavorQuota.objects.select_related("queue").order_by("queue__name"))
    ).order_by("name")
    nodes = _cluster_nodes()
    rows = [
        {
            "flavor": flavor,
            "tolerations": format_tolerations(flavor.tolerations).splitlines(),
            "taints": format_node_taints(flavor.node_taints).splitlines(),
            "nodes": None if nodes is None else [n.name for n in nodes if _carries(n, flavor.node_labels)],
        }
        for flavor in flavors
    ]
    return render(request, "queues/flavors.html", {"rows": rows})


@staff_member_required
def flavor_create_view(request: HttpRequest) -> HttpResponse:
    form = FlavorForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            flavor = flavor_create(**form.cleaned_data)
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, f"Resource flavor {flavor.name} created.")
            return redirect("queues:flavors")
    return render(request, "queues/flavor_create.html", {"form": form})


def _cluster_nodes():
    """The cluster's nodes, to show which ones a flavor picks; None when they cannot be read."""
    from services.admission import cluster_nodes

    return cluster_nodes()


def _carries(node, labels: dict[str, str]) -> bool:
    return all(node.labels.get(key) == value for key, value in (labels or {}).items())


@staff_member_required
def flavor_edit_view(request: HttpRequest, name: str) -> HttpResponse:
    flavor = get_object_or_404(ResourceFlavor, name=name)
    form = FlavorForm(request.POST or None, instance=flavor)
    if request.method == "POST" and form.is_valid():
        try:
            flavor_update(flavor=flavor, **form.flavor_fields())
        except ValidationError as exc:
            form.add_action_errors(exc)
        else:
            messages.success(
                request, f"Resource flavor {flavor.name} saved; its queues are being re-applied."
            )
            return redirect("queues:flavor_edit", name=flavor.name)
    return render(request, "queues/flavor_edit.html", {"form": form, **_flavor_queues_context(flavor)})


@login_required
def flavor_queues_partial(request: HttpRequest, name: str) -> HttpResponse:
    """The Kueue state of the queues using the flavor; polled while any is Pending."""
    flavor = get_object_or_404(ResourceFlavor, name=name)
    return render(request, "queues/_flavor_queues.html", _flavor_queues_context(flavor))


def _flavor_queues_context(flavor: ResourceFlavor) -> dict[str, Any]:
    queues = list(queues_depending_on(flavor=flavor))
    return {
        "flavor": flavor,
        "queues": queues,
        "applying": any(q.kueue_state == Queue.KueueState.PENDING for q in queues),
    }
