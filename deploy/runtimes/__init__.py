"""The serving runtimes the console can deploy. Add one by describing it as data."""

from deploy.runtimes.base import EngineArgsError, Runtime
from deploy.runtimes.triton import TRITON
from deploy.runtimes.vllm import VLLM

RUNTIMES: dict[str, Runtime] = {r.name: r for r in (VLLM, TRITON)}


def get_runtime(name: str) -> Runtime:
    try:
        return RUNTIMES[name]
    except KeyError:
        raise ValueError(f"unknown runtime {name!r}; choose one of {', '.join(RUNTIMES)}") from None


__all__ = ["RUNTIMES", "EngineArgsError", "Runtime", "get_runtime"]
