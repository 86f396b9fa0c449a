"""`manage.py render_service`: JSON in, YAML out, no database, clear errors."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
PYTHON = ROOT / ".venv" / "bin" / "python"


def render(*args: str) -> list[dict]:
    out = io.StringIO()
    call_command("render_service", *args, stdout=out)
    return list(yaml.safe_load_all(out.getvalue()))


def run_manage(*args: str, tmp_path: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    # A fresh var dir: no database file, no migration ever run.
    env = {**os.environ, "CONSOLE_VAR_DIR": str(tmp_path / "var")}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    python = PYTHON if PYTHON.exists() else Path(sys.executable)
    return subprocess.run(
        [str(python), "manage.py", "render_service", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_vllm_example_renders_config_map_deployment_service() -> None:
    objects = render(str(EXAMPLES / "spec-vllm.json"))
    assert [o["kind"] for o in objects] == ["ConfigMap", "NetworkPolicy", "Deployment", "Service"]
    deployment = objects[2]
    assert deployment["metadata"] == {**deployment["metadata"], "name": "chatglm2", "namespace": "inference"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["volumes"][0]["nfs"] == {"server": "10.0.0.5", "path": "/exports/models", "readOnly": True}
    assert pod["containers"][0]["args"][0] == "--model=/models/THUDM/chatglm2-6b"
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}} in pod["volumes"]


def test_triton_example_renders_deployment_service() -> None:
    objects = render(str(EXAMPLES / "spec-triton.json"))
    assert [o["kind"] for o in objects] == ["NetworkPolicy", "Deployment", "Service"]
    pod = objects[1]["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert pod["volumes"][0]["persistentVolumeClaim"]["readOnly"] is True
    expressions = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ][0]["matchExpressions"]
    assert expressions == [
        {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-A100-SXM4-80GB"]}
    ]


@pytest.mark.parametrize("example", ["spec-vllm.json", "spec-triton.json"])
def test_examples_pass_newest_strict_schema(example: str) -> None:
    for obj in render(str(EXAMPLES / example)):
        kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)


def test_cluster_domain_option() -> None:
    objects = render(str(EXAMPLES / "spec-vllm.json"), "--cluster-domain", "corp.internal")
    assert objects[-1]["metadata"]["annotations"]["inference.console/url"].endswith(".svc.corp.internal:8000")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "must hold a JSON object"),
        ('{"name": "x", "colour": "blue"}', "unknown spec fields: colour"),
    ],
)
def test_bad_input_is_a_command_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "spec.json"
    path.write_text(content)
    with pytest.raises(CommandError, match=message):
        render(str(path))


def test_missing_file_is_a_command_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="cannot read spec"):
        render(str(tmp_path / "nope.json"))


def test_subprocess_without_database(tmp_path: Path) -> None:
    result = run_manage("examples/spec-vllm.json", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    kinds = [doc["kind"] for doc in yaml.safe_load_all(result.stdout)]
    assert kinds == ["ConfigMap", "NetworkPolicy", "Deployment", "Service"]
    assert not (tmp_path / "var" / "console.sqlite3").exists()


def test_subprocess_reads_stdin(tmp_path: Path) -> None:
    spec = (EXAMPLES / "spec-triton.json").read_text()
    result = run_manage("-", tmp_path=tmp_path, stdin=spec)
    assert result.returncode == 0, result.stderr
    assert [doc["kind"] for doc in yaml.safe_load_all(result.stdout)] == [
        "NetworkPolicy",
        "Deployment",
        "Service",
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{broken", "is not valid JSON"),
        ('{"name": "x", "runtime": "vllm", "typo": 1}', "unknown spec fields: typo"),
        (
            '{"name": "x", "namespace": "n", "runtime": "vllm", "image": "i", "model_path": "m",'
            ' "served_model_name": "m", "model_volume": {"kind": "pvc"}}',
            "claim_name is required",
        ),
    ],
)
def test_subprocess_bad_spec_exits_nonzero_without_traceback(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    result = run_manage(str(path), tmp_path=tmp_path)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
