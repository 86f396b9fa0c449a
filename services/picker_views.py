"""The model-path picker of the create-service form: two htmx partials, a folder browser for the
chosen dataset and a live check of the chosen model path. The reads are datasets.browse's; these
views only parse the query string and render."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from console.validators import validate_relative_path
from datasets.browse import browse_dataset, inspect_model_path
from datasets.models import Dataset
from services.forms import InferenceServiceForm
from services.models import InferenceService

# A huge folder (a bucket root, a checkpoint with thousands of shards) must not turn into a
# multi-megabyte partial: show the first entries and say how many are left out.
MAX_ENTRIES = 500

LAYOUT_LABELS = {
    "huggingface": "Hugging Face layout",
    "triton": "Triton model repository",
    "gguf": "GGUF file",
    "torchserve": "TorchServe model store",
}


def _picked_dataset(request: HttpRequest, raw: str) -> Dataset | None:
    """The dataset the create form offers under this id (the same queryset, so the picker never
    reads a dataset the form would refuse); None while none is picked; 404 for any other id."""
    if not raw:
        return None
    try:
        pk = int(raw)
    except ValueError:
        raise Http404("No such dataset.") from None
    offered = InferenceServiceForm(user=request.user).fields["dataset"].queryset
    return get_object_or_404(offered, pk=pk)


def _crumbs(path: str) -> list[dict[str, str]]:
    parts = [part for part in path.split("/") if part]
    return [{"name": part, "path": "/".join(parts[: i + 1])} for i, part in enumerate(parts)]


def _child(path: str, name: str) -> str:
    return f"{path}/{name}" if path else name


@login_required
@require_GET
def model_browse_partial(request: HttpRequest) -> HttpResponse:
    """Folders and files of the picked dataset at ?path=; reloaded when the dataset changes."""
    dataset = _picked_dataset(request, request.GET.get("dataset", ""))
    path = request.GET.get("path", "").strip().strip("/")
    context: dict[str, Any] = {"dataset": dataset, "path": path, "errors": [], "crumbs": _crumbs(path)}
    if dataset is None:
        return render(request, "services/_model_browser.html", context)
    try:
        if "\x00" in path:  # the filesystem refuses it with a ValueError, not a StorageError
            raise ValidationError("A path cannot contain a NUL character.")
        listing = browse_dataset(dataset, path)
    except ValidationError as exc:
        context["errors"] = exc.messages
        return render(request, "services/_model_browser.html", context)
    path = listing["path"]
    folders = [{"name": name, "path": _child(path, name)} for name in listing["folders"]]
    files = [{**f, "path": _child(path, f["name"])} for f in listing["files"]]
    context.update(
        path=path,
        crumbs=_crumbs(path),
        note=listing["note"],
        folders=folders[:MAX_ENTRIES],
        files=files[:MAX_ENTRIES],
        left_out=max(0, len(folders) - MAX_ENTRIES) + max(0, len(files) - MAX_ENTRIES),
    )
    return render(request, "services/_model_browser.html", context)


@login_required
@require_GET
def model_check_partial(request: HttpRequest) -> HttpResponse:
    """Layout check and GPU fit estimate for the form's current dataset, model_path, runtime,
    gpu_count, gpu_type and engine_args (the form's own field names, sent by hx-include)."""
    params = request.GET
    dataset = _picked_dataset(request, params.get("dataset", ""))
    path = params.get("model_path", "").strip()
    runtime = params.get("runtime", "") or InferenceService.Runtime.VLLM.value
    context: dict[str, Any] = {
        "dataset": dataset,
        "path": path,
        "runtime": runtime,
        "gpu_count": params.get("gpu_count", "1").strip(),
        "gpu_type": params.get("gpu_type", "").strip(),
        "errors": [],
        "result": None,
    }
    if dataset is None or not path:
        return render(request, "services/_model_check.html", context)
    try:
        # The form's own rules first, so the panel never reports a path Create would refuse
        # anyway; an unknown runtime would be a ValueError deeper down, not a message.
        if runtime not in InferenceService.Runtime.values:
            raise ValidationError(f"Unknown runtime {runtime!r}.")
        validate_relative_path(path)
        result = inspect_model_path(
            dataset,
            path=path,
            runtime=runtime,
            gpu_count=context["gpu_count"],
            gpu_type=context["gpu_type"],
            engine_args=params.get("engine_args", ""),
        )
    except ValidationError as exc:
        context["errors"] = exc.messages
        return render(request, "services/_model_check.html", context)
    layout = result["layout"]
    context.update(
        runtime_label=InferenceService.Runtime(runtime).label,
        result=result,
        layout=layout,
        layout_label=LAYOUT_LABELS.get(layout["layout"], "Layout") if layout else "",
        fit=result["fit"],
    )
    return render(request, "services/_model_check.html", context)
