from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from console.audit import audit_context
from datasets.actions import (
    CREDENTIAL_FIELDS,
    dataset_create,
    dataset_delete,
    dataset_prewarm,
    dataset_update,
)
from datasets.forms import DatasetForm
from datasets.models import Dataset
from datasets.selectors import datasets_for_list, latest_prewarm, services_using


@login_required
def dataset_list_view(request: HttpRequest) -> HttpResponse:
    return render(request, "datasets/list.html", {"datasets": datasets_for_list()})


@login_required
def dataset_create_view(request: HttpRequest) -> HttpResponse:
    form = DatasetForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            dataset = dataset_create(owner=request.user, **_fields(form))
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, f"Dataset {dataset.name} created; prewarming.")
            return redirect("datasets:detail", pk=dataset.pk)
    return render(request, "datasets/create.html", {"form": form})


@login_required
def dataset_edit_view(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = get_object_or_404(Dataset, pk=pk)
    form = DatasetForm(request.POST or None, instance=dataset)
    if request.method == "POST" and form.is_valid():
        try:
            dataset_update(dataset=Dataset.objects.get(pk=pk), actor=request.user, **_fields(form))
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, f"Dataset {dataset.name} saved.")
            return redirect("datasets:detail", pk=dataset.pk)
    return render(request, "datasets/create.html", {"form": form, "editing": dataset})


def _fields(form: DatasetForm) -> dict:
    # Credentials are form-only fields; the action stores them encrypted.
    return {name: form.cleaned_data.get(name, "") for name in (*form.Meta.fields, *CREDENTIAL_FIELDS)}


@login_required
def dataset_detail_view(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = get_object_or_404(Dataset, pk=pk)
    return render(
        request,
        "datasets/detail.html",
        {
            "dataset": dataset,
            "events": dataset.events.all(),
            "run": latest_prewarm(dataset),
            "services": services_using(dataset).order_by("name"),
        },
    )


@login_required
@require_POST
def dataset_delete_view(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = get_object_or_404(Dataset, pk=pk)
    try:
        dataset_delete(dataset=dataset, context=audit_context(request, via="web"))
    except ValidationError as exc:
        messages.error(request, f"Dataset {dataset.name} was not deleted. {' '.join(exc.messages)}")
        return redirect("datasets:detail", pk=pk)
    messages.success(request, f"Dataset {dataset.name} deleted.")
    return redirect("datasets:list")


@login_required
def dataset_progress_partial(request: HttpRequest, pk: int) -> HttpResponse:
    """Polled by htmx while a prewarm runs; stops polling once the run is finished."""
    dataset = get_object_or_404(Dataset, pk=pk)
    return render(request, "datasets/_progress.html", {"dataset": dataset, "run": latest_prewarm(dataset)})


@login_required
@require_POST
def dataset_prewarm_view(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = get_object_or_404(Dataset, pk=pk)
    dataset_prewarm(dataset=dataset, actor=request.user)
    messages.info(request, f"Prewarm of {dataset.name} requested.")
    return redirect("datasets:detail", pk=dataset.pk)
