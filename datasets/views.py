from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from datasets.actions import dataset_create
from datasets.forms import DatasetForm
from datasets.models import Dataset


@login_required
def dataset_list_view(request: HttpRequest) -> HttpResponse:
    return render(request, "datasets/list.html", {"datasets": Dataset.objects.all()})


@login_required
def dataset_create_view(request: HttpRequest) -> HttpResponse:
    form = DatasetForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            dataset = dataset_create(owner=request.user, **form.cleaned_data)
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, f"Dataset {dataset.name} created; prewarming.")
            return redirect("datasets:detail", pk=dataset.pk)
    return render(request, "datasets/create.html", {"form": form})


@login_required
def dataset_detail_view(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = get_object_or_404(Dataset, pk=pk)
    return render(request, "datasets/detail.html", {"dataset": dataset, "events": dataset.events.all()})
