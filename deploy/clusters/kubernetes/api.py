"""The API as the adapter reads it: the dynamic client, discovery and paged reads.

All reads go through `DynamicClient` and come back as plain API dicts (see observe.py).
Discovery decides whether the cluster serves an object's apiVersion+kind, and says what it
serves instead when it does not.
"""

from __future__ import annotations

import tempfile
import threading
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError
from kubernetes.dynamic.resource import Resource, ResourceList

from deploy.clusters.base import PermanentClusterError
from deploy.clusters.kubernetes.errors import api_errors
from deploy.clusters.kubernetes.observe import Obj

# (connect, read) seconds for ordinary requests: a hung API server must not hang a worker.
REQUEST_TIMEOUT = (5, 30)
LIST_PAGE_SIZE = 500

# The kinds a service is made of besides its Deployment (what delete_service removes and
# what other_objects counts). Deployment first: deleting it stops new pods being made.
DEPLOYMENT = ("apps/v1", "Deployment")
OTHER_KINDS = (
    ("v1", "Service"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
)
JOB = ("batch/v1", "Job")

# The apiVersion the console writes each kind in, for callers that name a kind only
# (delete_labelled). Other kinds are resolved by discovery (resource_for_kind).
KIND_VERSIONS = {
    "Job": JOB[0],
    "Secret": "v1",
    "ConfigMap": "v1",
    "PersistentVolumeClaim": "v1",
    "Service": "v1",
    "Pod": "v1",
    "Deployment": DEPLOYMENT[0],
}


def as_dicts(_client: Any, data: Any) -> Any:
    """Serializer for DynamicClient calls: keep the response as plain dicts."""
    return data


class _DynamicClient(DynamicClient):
    """DynamicClient whose requests time out unless the caller says otherwise: its discovery
    requests (at construction, and on a cache miss) are sent without a timeout, and a hung API
    server would hang them, and every thread waiting for the discovery lock, for good."""

    def request(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        params.setdefault("_request_timeout", REQUEST_TIMEOUT)
        return super().request(method, path, body, **params)


class ClusterApi:
    """An ApiClient with a DynamicClient built on first use, for discovery and reads."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self._api = api_client
        self._dynamic_client: DynamicClient | None = None
        self._dynamic_lock = threading.Lock()
        # The library's discovery cache is not thread-safe: a miss invalidates and refills it
        # while another thread may be reading it (the watcher's threads, the worker's tasks).
        self._discovery_lock = threading.Lock()
        # A private discovery cache: the library's default is one shared file per API host in
        # /tmp, written by every process (web, worker, watcher) at once.
        self._discovery_dir = tempfile.TemporaryDirectory(prefix="infer-console-discovery-")

    @property
    def host(self) -> str:
        return str(self._api.configuration.host)

    @property
    def dynamic(self) -> DynamicClient:
        # Built on first use: DynamicClient's constructor already talks to the server.
        with self._dynamic_lock:
            if self._dynamic_client is None:
                with api_errors(f"cannot discover the API of {self.host}"):
                    self._dynamic_client = _DynamicClient(
                        self._api, cache_file=f"{self._discovery_dir.name}/discovery.json"
                    )
            return self._dynamic_client

    def resource_for(self, api_version: str, kind: str) -> Resource:
        """The served resource for apiVersion+kind, or a PermanentClusterError saying what is served."""
        group, _, version = api_version.rpartition("/")
        prefix = "apis" if group else "api"
        with api_errors(f"cannot discover {api_version} {kind}"):
            found = self._search(prefix=prefix, group=group or None, api_version=version, kind=kind)
            exact = [r for r in found if r.group_version == api_version]
            if exact:
                return exact[0]
            other_versions = self._search(prefix=prefix, group=group or None, kind=kind)
            served = sorted({r.group_version for r in other_versions})
        if served:
            raise PermanentClusterError(
                f"this cluster does not serve {api_version} {kind} (served: {', '.join(served)})"
            )
        where = f"API group {group}" if group else "the core API"
        raise PermanentClusterError(
            f"this cluster does not serve {api_version} {kind}: no version of {kind} in {where} "
            "(is its CustomResourceDefinition or operator installed?)"
        )

    def resource_for_kind(self, kind: str) -> Resource:
        """The served resource for a bare kind: the console's own version of it, else the
        preferred version of the only API group serving it (several groups: ambiguous)."""
        if kind in KIND_VERSIONS:
            return self.resource_for(KIND_VERSIONS[kind], kind)
        with api_errors(f"cannot discover {kind}"):
            found = [r for r in self._search(kind=kind) if r.preferred and "/" not in (r.name or "")]
        groups = sorted({r.group_version for r in found})
        if len(groups) == 1:
            return found[0]
        if not groups:
            raise PermanentClusterError(f"this cluster does not serve any {kind}")
        raise PermanentClusterError(
            f"{kind} is served by several API groups ({', '.join(groups)}): cannot tell which is meant"
        )

    def _search(self, **query: Any) -> list[Resource]:
        try:
            with self._discovery_lock:
                results = self.dynamic.resources.search(**query)
        except ResourceNotFoundError:  # a group version listed in /apis but gone by now
            return []
        return [r for r in results if not isinstance(r, ResourceList)]

    def get_or_none(self, resource: Resource, name: str, namespace: str | None) -> Obj | None:
        try:
            return self.dynamic.get(
                resource,
                name=name,
                namespace=namespace,
                serializer=as_dicts,
                _request_timeout=REQUEST_TIMEOUT,
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list_objects(
        self,
        resource: Resource,
        namespace: str | None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[Obj]:
        return self.list_with_version(
            resource, namespace, label_selector=label_selector, field_selector=field_selector
        )[0]

    def list_with_version(
        self,
        resource: Resource,
        namespace: str | None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[Obj], str]:
        """Every matching object (page by page) and the list's resourceVersion."""
        items: list[Obj] = []
        token: str | None = None
        while True:
            page = self.dynamic.get(
                resource,
                namespace=namespace,
                label_selector=label_selector,
                field_selector=field_selector,
                limit=LIST_PAGE_SIZE,
                _continue=token,
                serializer=as_dicts,
                _request_timeout=REQUEST_TIMEOUT,
            )
            items.extend(page.get("items") or [])
            metadata = page.get("metadata") or {}
            token = metadata.get("continue")
            if not token:
                return items, str(metadata.get("resourceVersion", ""))
