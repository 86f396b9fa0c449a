"""What the console knows about a serving runtime, as data (like KServe's ServingRuntime)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Port:
    name: str  # also the Service port name: http, grpc, metrics
    port: int
    app_protocol: str = ""  # e.g. "grpc", for meshes and ingress controllers


@dataclass(frozen=True)
class Probe:
    path: str
    port_name: str = "http"
    period_seconds: int = 10
    failure_threshold: int = 3
    initial_delay_seconds: int = 0


@dataclass(frozen=True)
class Flag:
    name: str  # with the leading dashes: --max-model-len
    takes_value: bool = True


class EngineArgsError(ValueError):
    """Engine args that cannot be passed to the runtime; `problems` lists each one."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Runtime:
    name: Literal["vllm", "triton"]
    label: str
    default_image: str
    ports: tuple[Port, ...]
    startup_probe: Probe
    readiness_probe: Probe
    model_mount_path: str
    description: str
    # Flags a user may pass; anything else is refused next to the field.
    flags: tuple[Flag, ...]
    # Flags the console sets itself (model location, ports, parallelism).
    managed_flags: tuple[str, ...]
    # How the server is started: `command` (empty: the image's entrypoint), then
    # `<model_flag>=<mount>/<model path>`, the served-name flag, the fixed args, `<flag>=<port>`
    # for each named port, the tensor-parallel flag when it applies, then the user's args.
    model_flag: str
    port_flags: tuple[tuple[str, str], ...]  # (flag, port name)
    command: tuple[str, ...] = ()
    fixed_args: tuple[str, ...] = ()
    served_name_flag: str = ""
    tensor_parallel_flag: str = ""  # tensor parallel size = GPU count, when > 1
    # None when a liveness probe could kill a server that is still loading its models.
    liveness_probe: Probe | None = None
    layouts: tuple[str, ...] = ()
    extra_env: tuple[tuple[str, str], ...] = field(default=())

    @property
    def startup_seconds(self) -> int:
        """How long the startup probe lets a model load (13 minutes in the Triton field report)."""
        probe = self.startup_probe
        return probe.initial_delay_seconds + probe.period_seconds * probe.failure_threshold

    def port(self, name: str) -> Port:
        return next(p for p in self.ports if p.name == name)

    def parse_engine_args(self, text: str) -> tuple[str, ...]:
        """Split and check user engine args; return normalised `--flag=value` / `--flag` tokens.

        Never passes anything through unchecked: user input must not become raw YAML or
        shell, so every token must be a known flag of this runtime, or the value of one.
        """
        try:
            tokens = shlex.split(text or "")
        except ValueError as exc:
            raise EngineArgsError([f"cannot parse engine args: {exc}"]) from None
        known = {f.name: f for f in self.flags}
        problems: list[str] = []
        result: list[str] = []
        seen: set[str] = set()
        i = 0
        while i < len(tokens):
            token = tokens[i]
            i += 1
            if not token.startswith("--"):
                problems.append(f"unexpected value {token!r}: engine args are --flag or --flag=value")
                continue
            name, has_eq, value = token.partition("=")
            if name in self.managed_flags:
                problems.append(f"{name} is set by the console, remove it")
                continue
            flag = known.get(name)
            if flag is None:
                problems.append(f"unknown flag {name} for {self.label}")
                continue
            if name in seen:
                problems.append(f"{name} is given twice")
                continue
            seen.add(name)
            if not flag.takes_value:
                if has_eq:
                    problems.append(f"{name} takes no value")
                    continue
                result.append(name)
                continue
            if not has_eq:
                if i < len(tokens) and not tokens[i].startswith("--"):
                    value = tokens[i]
                    i += 1
                else:
                    problems.append(f"{name} needs a value")
                    continue
            if value == "" or any(c in value for c in "\n\r\0"):
                problems.append(f"{name} has an empty or invalid value")
                continue
            result.append(f"{name}={value}")
        if problems:
            raise EngineArgsError(problems)
        return tuple(result)
