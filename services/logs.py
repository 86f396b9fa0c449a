"""Reading a service's pod logs through the cluster adapter."""

from dataclasses import dataclass

from deploy.clusters import ClusterError, get_cluster
from services.models import InferenceService
from services.selectors import service_pod_names


class PodNotFound(LookupError):
    pass


@dataclass(frozen=True)
class PodLog:
    pod: str
    previous: bool
    text: str
    error: str = ""


def service_pod_log(*, service: InferenceService, pod: str = "", previous: bool = False) -> PodLog:
    """The log of one of the service's pods; `previous` is the last crashed container's log.

    Only pods the console observed for this service can be read, so a user cannot name
    another service's pod. Cluster errors come back as `error`, never as an exception.
    """
    pods = service_pod_names(service=service)
    if not pod:
        if not pods:
            raise PodNotFound("The service has no pods yet.")
        pod = pods[0]
    if pod not in pods:
        raise PodNotFound(f"Pod {pod} is not one of this service's pods.")
    try:
        text = get_cluster().pod_logs(service.namespace, pod, previous=previous)
    except ClusterError as exc:
        return PodLog(pod=pod, previous=previous, text="", error=str(exc))
    return PodLog(pod=pod, previous=previous, text=text)
