"""The simulated cluster's nodes, from a nodes file in the harness's format (JSON or YAML).

A node entry gives a name and optionally labels, capacity, allocatable, taints and
`unschedulable`; what it leaves out gets the defaults of a plain 8-core node. The file is
re-read when it changes, so nodes can be added or cordoned while the console runs.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

import yaml

from console.validators import parse_quantity
from deploy.clusters.base import NodeInfo, PermanentClusterError
from deploy.clusters.simulated.scheduler import UNSCHEDULABLE_TAINT

_nodes_cache: dict[str, tuple[tuple[int, int], tuple[NodeInfo, ...]]] = {}
_cache_lock = threading.Lock()


def load_nodes(path: str) -> tuple[NodeInfo, ...]:
    """The nodes of a nodes file (the harness's format), re-read when the file changes."""
    try:
        stat = os.stat(path)
    except OSError:
        raise PermanentClusterError(f"the simulated cluster's nodes file {path} does not exist") from None
    key = (stat.st_mtime_ns, stat.st_size)
    with _cache_lock:
        cached = _nodes_cache.get(path)
        if cached and cached[0] == key:
            return cached[1]
    nodes = _parse_nodes_file(path)
    with _cache_lock:
        _nodes_cache[path] = (key, nodes)
    return nodes


def _parse_nodes_file(path: str) -> tuple[NodeInfo, ...]:
    try:
        with open(path) as f:
            text = f.read()
        try:
            data = json.loads(text)
        except ValueError:
            data = yaml.safe_load(text)  # the harness accepts YAML too
        items = data.get("nodes", []) if isinstance(data, dict) else data
        nodes = tuple(_node_from_entry(entry) for entry in items or [])
    except (OSError, ValueError, TypeError, KeyError, AttributeError, yaml.YAMLError) as exc:
        raise PermanentClusterError(f"cannot read the simulated cluster's nodes file {path}: {exc}") from None
    if not nodes:
        raise PermanentClusterError(f"no nodes in the simulated cluster's nodes file {path}")
    return nodes


def _node_from_entry(entry: dict[str, Any]) -> NodeInfo:
    name = str(entry["name"])
    labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}
    labels.update({str(k): str(v) for k, v in (entry.get("labels") or {}).items()})
    capacity = {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"}
    capacity.update({str(k): str(v) for k, v in (entry.get("capacity") or {}).items()})
    allocatable = {**capacity, **{str(k): str(v) for k, v in (entry.get("allocatable") or {}).items()}}
    for quantity in allocatable.values():
        parse_quantity(quantity)  # a typo in the file fails here, not in the scheduler
    taints = [{str(k): str(v) for k, v in taint.items()} for taint in entry.get("taints") or []]
    if entry.get("unschedulable"):
        # A cordoned node carries this taint in Kubernetes too (added by the node controller).
        taints.append({"key": UNSCHEDULABLE_TAINT, "effect": "NoSchedule"})
    return NodeInfo(name=name, labels=labels, allocatable=allocatable, taints=tuple(taints))
