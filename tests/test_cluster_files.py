"""`cluster/`: the launcher configs pass the schema Ray ships, the Dockerfile pins exactly what
pyproject.toml pins, and the KubeRay manifests keep Ray's token, the trigger secret and the
versions in line. (Not checked here: the manifests against KubeRay's CRD schema.)"""
from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

REPO = Path(__file__).resolve().parent.parent
CLUSTER = REPO / "cluster"
LAUNCHER_SCHEMA = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
PIN = re.compile(r'"?([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([0-9][^"\s\\]*)"?')


def pyproject_pins() -> dict[str, str]:
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return dict(PIN.fullmatch(dependency).groups() for dependency in dependencies if "==" in dependency)


@pytest.mark.parametrize("config", ["aws.yaml", "gcp.yaml"])
def test_launcher_configs_pass_rays_schema(config):
    schema = json.loads(LAUNCHER_SCHEMA.read_text())
    loaded = yaml.safe_load((CLUSTER / config).read_text())
    jsonschema.validate(loaded, schema)
    broken = copy.deepcopy(loaded)
    broken["available_node_types"]["gpu_worker"]["max_wrokers"] = 4
    with pytest.raises(jsonschema.ValidationError):  # the check can fail
        jsonschema.validate(broken, schema)
    assert "auth_token" in json.dumps(loaded["file_mounts"])  # Ray's token reaches every node
    assert "--env RAY_AUTH_MODE=token" in loaded["docker"]["run_options"]  # and every node uses it


def test_the_dockerfile_pins_what_pyproject_pins():
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    pinned = dict(PIN.findall(" ".join(line for line in dockerfile.splitlines() if not line.startswith("#"))))
    expected = pyproject_pins()
    assert pinned == expected
    assert f"FROM rayproject/ray:{expected['ray']}-" in dockerfile


@pytest.mark.parametrize("manifest", ["kuberay-raycluster.yaml", "kuberay-rayjob.yaml"])
def test_kuberay_manifests_keep_the_token_the_trigger_secret_and_the_versions(manifest):
    document = yaml.safe_load((CLUSTER / manifest).read_text())
    assert document["apiVersion"] == "ray.io/v1"
    cluster = document["spec"].get("rayClusterSpec", document["spec"])
    assert cluster["rayVersion"] == pyproject_pins()["ray"]
    assert cluster["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "0.0.0.0"  # the submitter reaches it
    pods = [cluster["headGroupSpec"]["template"]["spec"], *(group["template"]["spec"] for group in cluster["workerGroupSpecs"])]
    if "submitterPodTemplate" in document["spec"]:
        pods.append(document["spec"]["submitterPodTemplate"]["spec"])
    for pod in pods:
        secrets = {volume["secret"]["secretName"] for volume in pod["volumes"] if "secret" in volume}
        assert "ray-auth-token" in secrets
        for container in pod["containers"]:
            env = {item["name"]: item for item in container["env"]}
            assert env["RAY_AUTH_MODE"]["value"] == "token"
            assert "value" not in env.get("PS_TRIGGER", {})  # from a secret, never written here
            assert any(mount["mountPath"].endswith("/.ray/auth_token") for mount in container["volumeMounts"])


def test_placeholders_are_explicit():
    for path in CLUSTER.iterdir():
        text = path.read_text()
        assert "REPLACE" not in text and "TODO" not in text, path
    from persona_sweep.sweep_file import load_sweep

    spec = load_sweep(REPO / "sweeps" / "marker-survival.yaml")  # validates here, without a GPU
    assert spec.tracking.mlflow_uri == "http://<YOUR_MLFLOW_HOST>:5000"
    assert spec.resources.storage == "s3://<YOUR_BUCKET>/persona-sweep" and spec.resources.gpus_per_worker == 1


def test_a_python_without_the_project_s_dependencies_says_so_in_one_line(tmp_path):
    """What a node nobody installed the project on does with a submitted job: the job ships the
    package (here: PYTHONPATH), `-S` leaves out every installed dependency."""
    result = subprocess.run([sys.executable, "-S", "-m", "persona_sweep", "run", "sweep.yaml"], cwd=tmp_path,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: {sys.executable} lacks click, yaml, pydantic, ray, torch")
    assert "install persona-sweep with its dependencies into this Python on every node" in result.stderr


def test_a_ray_job_s_driver_keeps_nothing_in_the_job_s_package(tmp_path, monkeypatch):
    """Its working directory is Ray's to delete: the default home is `~/persona-sweep/runs` and
    the driver moves there once the sweep is read."""
    from persona_sweep import sweep_record

    package = tmp_path / "_ray_pkg_0123"
    package.mkdir()
    monkeypatch.chdir(package)
    monkeypatch.delenv("PERSONA_SWEEP_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "head"))
    assert sweep_record.home_folder() == package / "runs"  # not a job: the README's default
    monkeypatch.setenv(sweep_record.RAY_JOB_DRIVER, "{}")
    assert sweep_record.home_folder() == tmp_path / "head" / "persona-sweep" / "runs"
    sweep_record.stand_in_home()
    assert Path.cwd() == tmp_path / "head" / "persona-sweep" / "runs"
    monkeypatch.setenv("PERSONA_SWEEP_HOME", str(tmp_path / "shared"))
    assert sweep_record.home_folder() == tmp_path / "shared"  # the nodes' own home wins
