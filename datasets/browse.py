"""Browse a dataset and inspect a model path in it: the reads behind the model-path picker."""

from __future__ import annotations

import shlex
from typing import Any

from django.core.exceptions import ValidationError

from datasets.inspect import InspectError, check_layout, estimate_fit
from datasets.models import Dataset
from datasets.sources import storage_for
from datasets.storage import ManifestStorage, StorageError
from deploy.clusters import ClusterError, get_cluster
from deploy.gpus import gpu_memory_gib, gpu_products

NOT_LISTED_YET = "The files of this dataset are listed after its first prewarm."


def browse_dataset(dataset: Dataset, path: str) -> dict[str, Any]:
    storage = storage_for(dataset)
    if storage is None:
        return {"path": path, "folders": [], "files": [], "note": NOT_LISTED_YET}
    try:
        listing = storage.list_dir(path)
    except StorageError as exc:
        raise ValidationError({"path": exc.message}) from None
    return {**listing.as_dict(), "note": ""}


def engine_options(engine_args: str) -> dict[str, str]:
    """The few engine flags that change memory use: --dtype, --quantization, --max-model-len."""
    options = {}
    try:
        tokens = shlex.split(engine_args or "")
    except ValueError:
        return {}
    for i, token in enumerate(tokens):
        name, eq, value = token.partition("=")
        if not eq and i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
            value = tokens[i + 1]
        if name in {"--dtype", "--quantization", "--max-model-len"} and value:
            options[name.lstrip("-").replace("-", "_")] = value
    return options


def cluster_gpu_memory(gpu_type: str) -> float | None:
    """Memory of the chosen GPU type, or of the smallest GPU in the cluster for 'any type'."""
    try:
        nodes = list(get_cluster().nodes())
    except ClusterError:
        return None
    if gpu_type:
        return gpu_memory_gib(gpu_type, nodes)
    sizes = [size for size in gpu_products(nodes).values() if size]
    return min(sizes) if sizes else None


def inspect_model_path(
    dataset: Dataset,
    *,
    path: str,
    runtime: str,
    gpu_count: int | str = 1,
    gpu_type: str = "",
    gpu_memory_gib: float | str = "",
    engine_args: str = "",
) -> dict[str, Any]:
    """{"layout": LayoutReport or None, "fit": FitEstimate or None, "notes": [...]}, never raising
    for what the files say; only a bad request (unknown runtime, bad numbers) is an error."""
    from datasets.inspect import RUNTIMES

    if runtime not in RUNTIMES:
        raise ValidationError({"runtime": f"Choose one of {', '.join(RUNTIMES)}."})
    try:
        gpus = int(gpu_count)
        memory = float(gpu_memory_gib) if gpu_memory_gib not in ("", None) else cluster_gpu_memory(gpu_type)
    except ValueError:
        raise ValidationError({"gpu_count": "Give whole numbers for GPUs and GiB for memory."}) from None
    result: dict[str, Any] = {"path": path, "runtime": runtime, "layout": None, "fit": None, "notes": []}
    storage = storage_for(dataset)
    if storage is None:
        result["notes"].append(NOT_LISTED_YET)
        return result
    try:
        result["layout"] = check_layout(storage, path, runtime).as_dict()
    except StorageError as exc:
        result["layout"] = {
            "ok": False,
            "layout": "unknown",
            "found": [],
            "problems": [exc.message],
            "notes": [],
        }
        return result
    if runtime != "vllm" or gpus < 1:
        return result  # the fit estimate models vLLM's tensor parallelism
    if memory is None:
        result["notes"].append("No GPU memory size is known for this GPU type: no fit estimate.")
        return result
    if isinstance(storage, ManifestStorage):
        result["notes"].append("The fit estimate reads config.json, which the console cannot read here.")
        return result
    options = engine_options(engine_args)
    try:
        fit = estimate_fit(
            storage,
            path,
            dtype=options.get("dtype", "auto"),
            quantization=options.get("quantization"),
            gpu_memory_gib=memory,
            gpu_count=gpus,
            max_model_len=int(options["max_model_len"])
            if options.get("max_model_len", "").isdigit()
            else None,
        )
    except (InspectError, StorageError) as exc:
        result["notes"].append(f"No fit estimate: {exc}")
        return result
    result["fit"] = fit.as_dict()
    return result
