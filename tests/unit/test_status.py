"""derive_status: one case per phase and failure reason."""

import pytest

from deploy.observation import ContainerObservation, Observation, PodObservation
from deploy.status import derive_status


def pod(name="p-1", *, phase="Running", ready=False, scheduled=True, containers=(), **kw):
    return PodObservation(
        name=name, phase=phase, ready=ready, scheduled=scheduled, containers=containers, **kw
    )


def running(ready=True, **kw):
    return ContainerObservation(name="server", state="running", ready=ready, **kw)


def waiting(reason, message="", **kw):
    return ContainerObservation(name="server", state="waiting", reason=reason, message=message, **kw)


def obs(pods=(), ready=0, updated=None, **kw):
    return Observation(
        found=True,
        desired_replicas=kw.pop("desired", 1),
        ready_replicas=ready,
        updated_replicas=len(pods) if updated is None else updated,
        pods=tuple(pods),
        **kw,
    )


def test_nothing_in_cluster_is_deploying():
    status = derive_status(Observation(found=False), desired_replicas=1)
    assert (status.phase, status.reason) == ("Deploying", "NotFound")


def test_deployment_without_pods_is_deploying():
    assert derive_status(obs(), desired_replicas=1).phase == "Deploying"


def test_unscheduled_pod_is_scheduling_until_the_scheduler_says_no():
    status = derive_status(obs([pod(phase="Pending", scheduled=None)]), desired_replicas=1)
    assert (status.phase, status.reason) == ("Starting", "Scheduling")


def test_container_creating_is_starting():
    status = derive_status(
        obs([pod(phase="Pending", containers=(waiting("ContainerCreating"),))]), desired_replicas=1
    )
    assert (status.phase, status.reason) == ("Starting", "ContainerCreating")


def test_running_not_ready_is_loading_model():
    status = derive_status(obs([pod(containers=(running(ready=False),))]), desired_replicas=1)
    assert (status.phase, status.reason) == ("Starting", "LoadingModel")


def test_all_ready_is_running():
    pods = [pod("a", ready=True, containers=(running(),)), pod("b", ready=True, containers=(running(),))]
    status = derive_status(obs(pods, ready=2, desired=2), desired_replicas=2)
    assert (status.phase, status.ready_replicas) == ("Running", 2)
    assert status.message == "2/2 replicas ready."


def test_ready_but_old_revision_still_rolling_is_not_running():
    pods = [pod("a", ready=True, containers=(running(),))]
    status = derive_status(obs(pods, ready=1, updated=0), desired_replicas=1)
    assert status.phase == "Starting"


def test_unschedulable_is_failed_with_scheduler_words():
    p = pod(
        phase="Pending",
        scheduled=False,
        scheduling_reason="Unschedulable",
        scheduling_message="0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
    )
    status = derive_status(obs([p]), desired_replicas=1)
    assert (status.phase, status.reason) == ("Failed", "Unschedulable")
    assert "3 Insufficient nvidia.com/gpu" in status.message


@pytest.mark.parametrize("reason", ["ImagePullBackOff", "ErrImagePull"])
def test_image_pull_failure(reason):
    p = pod(phase="Pending", containers=(waiting(reason, 'pull access denied for "x"'),))
    status = derive_status(obs([p]), desired_replicas=1)
    assert (status.phase, status.reason) == ("Failed", "ImagePullBackOff")
    assert "pull access denied" in status.message


def test_crash_loop():
    c = waiting("CrashLoopBackOff", restart_count=3, last_terminated_reason="Error", last_exit_code=1)
    status = derive_status(obs([pod(containers=(c,))]), desired_replicas=1)
    assert (status.phase, status.reason) == ("Failed", "CrashLoopBackOff")
    assert "exit code 1" in status.message


def test_oom_killed_wins_over_crash_loop():
    c = waiting("CrashLoopBackOff", restart_count=2, last_terminated_reason="OOMKilled", last_exit_code=137)
    status = derive_status(obs([pod(containers=(c,))]), desired_replicas=1)
    assert (status.phase, status.reason) == ("Failed", "OOMKilled")
    assert "memory" in status.message


def test_config_error():
    c = waiting("CreateContainerConfigError", 'secret "hf-token" not found')
    status = derive_status(obs([pod(phase="Pending", containers=(c,))]), desired_replicas=1)
    assert (status.phase, status.reason) == ("Failed", "CreateContainerConfigError")


def test_some_ready_some_failing_is_degraded():
    good = pod("a", ready=True, containers=(running(),))
    bad = pod("b", containers=(waiting("CrashLoopBackOff", restart_count=5),))
    status = derive_status(obs([good, bad], ready=1, desired=2), desired_replicas=2)
    assert (status.phase, status.reason) == ("Degraded", "CrashLoopBackOff")
    assert status.message.startswith("1/2 replicas ready.")


def test_progress_deadline_exceeded():
    o = obs(
        [pod(containers=(running(ready=False),))],
        conditions={"Progressing": ("False", "ProgressDeadlineExceeded", "took too long")},
    )
    status = derive_status(o, desired_replicas=1)
    assert (status.phase, status.reason) == ("Failed", "ProgressDeadlineExceeded")


def test_scaled_to_zero_is_stopped():
    assert derive_status(obs(desired=0), desired_replicas=0).phase == "Stopped"


def test_terminating_pods_are_ignored_for_failures():
    old = pod("old", containers=(waiting("CrashLoopBackOff"),), terminating=True)
    new = pod("new", ready=True, containers=(running(),))
    status = derive_status(obs([old, new], ready=1, updated=1), desired_replicas=1)
    assert status.phase == "Running"
