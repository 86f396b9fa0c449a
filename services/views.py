from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from console.audit import audit_context
from deploy.render import objects_to_yaml, render_service
from deploy.runtimes import RUNTIMES
from queues.models import Queue
from services import phases
from services.access import access_info
from services.actions import service_create, service_delete, service_update
from services.forms import InferenceServiceForm, ScaleForm
from services.logs import PodNotFound, service_pod_log
from services.models import InferenceService
from services.playground import PlaygroundForm, call_gateway
from services.selectors import service_events, service_list, services_visible_to
from services.spec import service_spec


@login_required
def service_list_view(request: HttpRequest) -> HttpResponse:
    filters = {key: request.GET.get(key, "") for key in ("phase", "queue", "runtime")}
    rows = service_list(user=request.user, search=request.GET.get("q", ""), **filters)
    page = Paginator(rows, 25).get_page(request.GET.get("page"))
    return render(
        request,
        "services/list.html",
        {
            "page": page,
            "filters": filters,
            "q": request.GET.get("q", ""),
            "phase_choices": [p for p, _ in phases.CHOICES],
            "queues": Queue.objects.values_list("name", flat=True),
            "runtimes": RUNTIMES.values(),
        },
    )


@login_required
def service_create_view(request: HttpRequest) -> HttpResponse:
    form = InferenceServiceForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        try:
            service = service_create(
                owner=request.user, context=audit_context(request, via="web"), **form.cleaned_data
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, f"Service {service.name} created; deploying.")
            return redirect("services:detail", pk=service.pk)
    return render(
        request,
        "services/create.html",
        {"form": form, "runtimes": RUNTIMES.values(), "gpu_types": _gpu_types()},
    )


def _gpu_types() -> list[str]:
    from deploy.clusters import ClusterError, get_cluster

    try:
        labels = {n.labels.get("nvidia.com/gpu.product", "") for n in get_cluster().nodes()}
    except ClusterError:
        return []
    return sorted(label for label in labels if label)


def _get_service(request: HttpRequest, pk: int) -> InferenceService:
    return get_object_or_404(services_visible_to(request.user), pk=pk)


@login_required
def service_detail_view(request: HttpRequest, pk: int) -> HttpResponse:
    service = _get_service(request, pk)
    return render(
        request,
        "services/detail.html",
        {
            "service": service,
            "events": service_events(service=service),
            "access": access_info(service),
            "scale_form": ScaleForm(initial={"replicas": service.replicas}),
            "playground_form": PlaygroundForm(service=service),
        },
    )


@login_required
def service_status_partial(request: HttpRequest, pk: int) -> HttpResponse:
    """Polled by htmx (fast while the service moves, slowly once settled, not once Deleted)."""
    service = _get_service(request, pk)
    response = render(
        request, "services/_status.html", {"service": service, "events": service_events(service=service)}
    )
    if request.GET.get("shown", service.phase) != service.phase:
        response["HX-Trigger"] = "service-phase-changed"  # the actions, playground and spec reload
    return response


@login_required
def service_manifests_view(request: HttpRequest, pk: int) -> HttpResponse:
    service = _get_service(request, pk)
    manifest_yaml = objects_to_yaml(render_service(service_spec(service)))
    return render(request, "services/manifests.html", {"service": service, "manifest_yaml": manifest_yaml})


@login_required
def service_logs_view(request: HttpRequest, pk: int) -> HttpResponse:
    service = _get_service(request, pk)
    try:
        log = service_pod_log(
            service=service, pod=request.GET.get("pod", ""), previous=request.GET.get("previous") == "1"
        )
    except PodNotFound as exc:
        raise Http404(str(exc)) from None
    return render(request, "services/logs.html", {"service": service, "log": log})


@login_required
@require_POST
def service_delete_view(request: HttpRequest, pk: int) -> HttpResponse:
    service = _get_service(request, pk)
    service_delete(service=service, actor=request.user, context=audit_context(request, via="web"))
    messages.info(request, f"Deleting {service.name}.")
    return redirect("services:detail", pk=service.pk)


@login_required
@require_POST
def service_scale_view(request: HttpRequest, pk: int) -> HttpResponse:
    service = _get_service(request, pk)
    form = ScaleForm(request.POST)
    if form.is_valid():
        try:
            service_update(
                service=service,
                actor=request.user,
                replicas=form.cleaned_data["replicas"],
                context=audit_context(request, via="web"),
            )
        except ValidationError as exc:
            for message in exc.messages:
                messages.error(request, message)
        else:
            messages.success(request, f"Scaling {service.name} to {form.cleaned_data['replicas']} replicas.")
    else:
        messages.error(request, "Replicas must be a whole number from 0 to 32.")
    return redirect("services:detail", pk=service.pk)


@sensitive_post_parameters()  # the key and the auth parameters' values stay out of error reports
@login_required
@require_POST
def service_playground_partial(request: HttpRequest, pk: int) -> HttpResponse:
    """One call through the gateway with the pasted key; the key is used for this call only."""
    service = _get_service(request, pk)
    form = PlaygroundForm(request.POST, service=service)
    result = None
    not_running = service.phase != phases.RUNNING
    if not not_running and form.is_valid():
        result = call_gateway(service=service, form=form)
    return render(
        request,
        "services/_playground_result.html",
        {"service": service, "form": form, "result": result, "not_running": not_running},
    )
