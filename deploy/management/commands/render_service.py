"""`manage.py render_service spec.json`: print the objects a spec renders to, as YAML.

Needs no database and no cluster, so it works on a fresh checkout before `migrate`.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from deploy.render import objects_to_yaml, render_service
from deploy.spec import ServiceSpec


class Command(BaseCommand):
    help = "Render a service spec (JSON file, or - for stdin) to the Kubernetes objects the console applies."
    # System checks may touch the database or other apps' models; rendering needs neither.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("spec", help="path to a ServiceSpec JSON file, or - to read stdin")
        parser.add_argument(
            "--cluster-domain",
            default="cluster.local",
            help="the cluster's DNS domain, used in the service URL (default: cluster.local)",
        )

    def handle(self, *args: Any, spec: str, cluster_domain: str, **options: Any) -> None:
        data = _load_json(spec)
        try:
            service_spec = ServiceSpec.from_dict(data)
            objects = render_service(service_spec, cluster_domain=cluster_domain)
        except (TypeError, ValueError) as exc:
            raise CommandError(f"invalid spec in {_source(spec)}: {exc}") from None
        self.stdout.write(objects_to_yaml(objects), ending="")


def _source(path: str) -> str:
    return "stdin" if path == "-" else path


def _load_json(path: str) -> dict[str, Any]:
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"cannot read spec {_source(path)}: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"{_source(path)} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CommandError(f"{_source(path)} must hold a JSON object, got {type(data).__name__}")
    return data
