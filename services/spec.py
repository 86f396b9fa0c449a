"""Turn a saved InferenceService into the pure ServiceSpec the renderer takes."""

from deploy.spec import NodeRule, ServiceSpec, Toleration
from services.models import InferenceService


def service_spec(service: InferenceService) -> ServiceSpec:
    flavor = service.flavor
    return ServiceSpec(
        name=service.name,
        namespace=service.namespace,
        runtime=service.runtime,
        image=service.effective_image,
        model_volume=service.dataset.model_volume(),
        model_path=service.model_path,
        served_model_name=service.effective_model_name,
        replicas=service.replicas,
        cpu=service.cpu,
        memory=service.memory,
        gpu_count=service.gpu_count,
        gpu_type=service.gpu_type,
        shm_size=service.shm_size,
        engine_args=service.parsed_engine_args(),
        env=tuple((item["name"], item["value"]) for item in service.env),
        affinity_mode=service.affinity_mode,
        node_rules=tuple(
            NodeRule(key=r["key"], operator=r.get("operator", "In"), values=tuple(r.get("values", ())))
            for r in service.node_rules
        ),
        tolerations=tuple(map(Toleration.from_json, service.tolerations)),
        queue_name=service.queue.name,
        priority_class=service.priority_class.name if service.priority_class_id else "",
        flavor_node_labels=tuple(sorted((flavor.node_labels or {}).items())) if flavor else (),
        flavor_tolerations=_flavor_tolerations(service),
        auth_policy=service.auth_policy,
        service_uid=str(service.uid),
    )


def _flavor_tolerations(service: InferenceService) -> tuple[Toleration, ...]:
    """The admitted flavor's tolerations, plus tolerations of its node taints that the service's
    own tolerations (only rendered in custom mode) do not cover already."""
    if service.flavor is None:
        return ()
    own = service.tolerations if service.affinity_mode == "custom" else []
    return tuple(map(Toleration.from_json, service.flavor.pod_tolerations(own or ())))
