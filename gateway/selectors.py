"""The gateway's only database reads: one key by prefix, one service by name. Run in a worker
thread on a cache miss, never per request."""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from django.db import close_old_connections

from auth.models import InferenceKey
from console.crypto import CredentialsUnreadable
from gateway.upstream import parse_endpoint
from services import phases
from services.auth_policy import stored_params
from services.models import InferenceService

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: int
    prefix: str
    digest: str
    service_ids: frozenset[int]
    expires_at: float | None  # epoch seconds; a rotated key's grace period ends here too
    revoked: bool
    disabled: bool
    rpm_limit: int | None
    tpm_limit: int | None
    daily_token_budget: int | None
    monthly_token_budget: int | None
    owner_active: bool = True  # a deactivated user's keys stop working too (within the cache TTL)

    @property
    def limited(self) -> bool:
        return bool(self.rpm_limit or self.tpm_limit or self.daily_token_budget or self.monthly_token_budget)


@dataclass(frozen=True, slots=True)
class AuthParam:
    where: str  # "header" or "query"
    name: str  # header names lower-cased
    value: str


@dataclass(frozen=True, slots=True)
class RouteRecord:
    service_id: int
    name: str
    namespace: str
    phase: str
    runtime: str
    requires_key: bool
    key_header: str  # lower-case; "authorization" means `Bearer <key>`
    params: tuple[AuthParam, ...]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    endpoint: str | None  # base URL, None when nothing is ready to take traffic
    grpc_endpoint: str | None = None  # the same for the runtime's gRPC port, if it has one
    # Derived once per cached route, not per call: what is never forwarded.
    strip_headers: frozenset[bytes] = field(init=False)  # the key's header and the extra headers
    query_names: frozenset[str] = field(init=False)  # the extra query parameters
    upstream: tuple[str, int, bytes] | None = field(init=False)  # the endpoint's host, port, base path
    grpc_target: str | None = field(init=False)  # host:port of grpc_endpoint

    def __post_init__(self) -> None:
        headers = {param.name.encode() for param in self.params if param.where == "header"}
        if self.requires_key:
            headers.add(self.key_header.encode())
        object.__setattr__(self, "strip_headers", frozenset(headers))
        queries = frozenset(param.name for param in self.params if param.where == "query")
        object.__setattr__(self, "query_names", queries)
        object.__setattr__(self, "upstream", parse_endpoint(self.endpoint) if self.endpoint else None)
        object.__setattr__(
            self, "grpc_target", urlsplit(self.grpc_endpoint).netloc if self.grpc_endpoint else None
        )


def load_key(prefix: str) -> KeyRecord | None:
    close_old_connections()  # this worker thread's connection may have gone stale
    row = (
        InferenceKey.objects.filter(prefix=prefix)
        .values(
            "id",
            "prefix",
            "digest",
            "expires_at",
            "revoked_at",
            "disabled_at",
            "rpm_limit",
            "tpm_limit",
            "daily_token_budget",
            "monthly_token_budget",
            "user__is_active",
        )
        .first()
    )
    if row is None:
        return None
    service_ids = frozenset(
        InferenceKey.services.through.objects.filter(inferencekey_id=row["id"]).values_list(
            "inferenceservice_id", flat=True
        )
    )
    return KeyRecord(
        id=row["id"],
        prefix=row["prefix"],
        digest=row["digest"],
        service_ids=service_ids,
        expires_at=row["expires_at"].timestamp() if row["expires_at"] else None,
        revoked=row["revoked_at"] is not None,
        disabled=row["disabled_at"] is not None,
        rpm_limit=row["rpm_limit"],
        tpm_limit=row["tpm_limit"],
        daily_token_budget=row["daily_token_budget"],
        monthly_token_budget=row["monthly_token_budget"],
        owner_active=row["user__is_active"],
    )


def load_route(*, namespace: str, name: str) -> RouteRecord | None:
    close_old_connections()
    service = (
        InferenceService.objects.filter(namespace=namespace, name=name)
        .exclude(phase__in=[phases.DELETED])
        .only(
            "id",
            "name",
            "namespace",
            "phase",
            "runtime",
            "auth_policy",
            "auth_header",
            "auth_params_encrypted",
            "allowed_cidrs",
        )
        .first()
    )
    if service is None:
        return None
    endpoint = grpc_endpoint = None
    if service.phase in phases.SERVING:
        from deploy.clusters import get_cluster
        from deploy.runtimes import get_runtime

        cluster = get_cluster()
        endpoint = cluster.service_endpoint(namespace=service.namespace, name=service.name)
        if endpoint and any(port.name == "grpc" for port in get_runtime(service.runtime).ports):
            grpc_endpoint = cluster.service_endpoint(
                namespace=service.namespace, name=service.name, port="grpc"
            )
    return RouteRecord(
        service_id=service.id,
        name=service.name,
        namespace=service.namespace,
        phase=service.phase,
        runtime=service.runtime,
        requires_key=service.requires_key,
        key_header=service.key_header.lower(),
        params=_auth_params(service) if service.requires_key else (),
        networks=_networks(service),
        endpoint=endpoint.rstrip("/") if endpoint else None,
        grpc_endpoint=grpc_endpoint,
    )


def _auth_params(service: InferenceService) -> tuple[AuthParam, ...]:
    """The extra headers/query parameters callers must send (services.auth_policy stores them)."""
    if not service.auth_params_encrypted:
        return ()
    try:
        stored = stored_params(service.auth_params_encrypted)
    except CredentialsUnreadable:
        # Fail closed: a parameter we cannot read is one no caller can match.
        logger.error("service %s: auth parameters cannot be decrypted; refusing calls", service.name)
        return (AuthParam("header", "x-undecryptable-auth-parameter", "\0"),)
    return tuple(
        AuthParam(p["in"], p["name"].lower() if p["in"] == "header" else p["name"], p["value"])
        for p in stored
    )


def _networks(service: InferenceService) -> tuple:
    networks = []
    for cidr in service.allowed_cidrs or []:
        try:
            networks.append(ipaddress.ip_network(str(cidr), strict=False))
        except ValueError:
            logger.error("service %s: ignoring invalid allowed network %r", service.name, cidr)
    if service.allowed_cidrs and not networks:
        # Fail closed: the owner meant to restrict callers; 0.0.0.0/32 is no caller's address.
        networks.append(ipaddress.ip_network("0.0.0.0/32"))
    return tuple(networks)
