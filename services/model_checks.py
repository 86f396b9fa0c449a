"""Checks of the model files behind a new service: the layout its runtime needs and whether the
weights fit the GPUs asked for. Both read the dataset (ranged reads only), so they run before
any transaction opens; datasets whose files the console cannot read yet are not checked."""

from django.core.exceptions import ValidationError

from datasets.browse import inspect_model_path
from services.models import InferenceService


def check_model_files(service: InferenceService) -> None:
    if service.dataset_id is None or not service.model_path:
        return
    result = inspect_model_path(
        service.dataset,
        path=service.model_path,
        runtime=service.runtime,
        gpu_count=service.gpu_count,
        gpu_type=service.gpu_type,
        engine_args=service.engine_args,
    )
    errors: dict[str, list[str]] = {}
    layout = result["layout"]
    if layout is not None and not layout["ok"]:
        errors["model_path"] = layout["problems"]
    fit = result["fit"]
    if fit is not None and not fit["fits"] and not service.fit_override:
        errors["gpu_count"] = [fit["message"]]
    if errors:
        raise ValidationError(errors)
