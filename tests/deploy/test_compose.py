"""deploy/compose.yaml, checked by the real parsers (no Docker engine here) and kept in step
with the local runner behind `make up`: the Compose Specification's JSON Schema
(check-jsonschema); compose-go's own command (the model); compose-go's loader with
interpolation, env files and its consistency checks on (deploy/compose-check, the way
`docker compose` loads a project); and the same variables, topics, broker settings and ports
as deploy/local."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.local.kafka import BROKER_SETTINGS
from deploy.local.stack import SERVICE_PORTS, LocalStack, StackConfig
from shared.settings import TopicSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
COMPOSE_GO = Path(os.environ.get("UPKEEP_COMPOSE_GO", ROOT / ".cache/compose-go/v2.16.2/cmd"))
COMPOSE_CHECK = Path(
    os.environ.get("UPKEEP_COMPOSE_CHECK", ROOT / ".cache/compose-check/compose-check")
)
SERVICES = tuple(SERVICE_PORTS)
INFRA = ("kafka", "mongodb", "topics", "prometheus", "grafana", "mailpit")
REQUIRED = re.compile(r"\$\{([A-Z0-9_]+):\?")


def tool(path: Path, how: str) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: {how}")
    return path


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())  # anchors and << resolved
    return loaded


def example_env(name: str = ".env.example") -> dict[str, str]:
    found = {}
    for line in (DEPLOY / name).read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            name, value = line.split("=", 1)
            found[name] = value
    return found


def compose_go(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = tool(COMPOSE_GO, "`make test` installs compose-go's cmd into .cache/compose-go")
    return subprocess.run(
        [str(binary), *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_compose_file_validates_against_the_compose_specification_schema() -> None:
    checker = tool(
        Path(sys.executable).parent / "check-jsonschema", "pip install check-jsonschema (dev)"
    )
    done = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok -- validation done" in done.stdout


def deploy_copy(into: Path, *, env_files: bool = True) -> Path:
    """deploy/ as an operator has it: with .env and upkeep.env copied from their examples."""
    work = into / "deploy"
    shutil.copytree(DEPLOY, work, ignore=shutil.ignore_patterns("local", "__pycache__"))
    if env_files:
        shutil.copy(DEPLOY / ".env.example", work / ".env")
        shutil.copy(DEPLOY / "upkeep.env.example", work / "upkeep.env")
    return work


def compose_check(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = tool(COMPOSE_CHECK, "`make test` builds deploy/compose-check into .cache")
    return subprocess.run(
        [str(binary), *args], cwd=workdir, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The project as compose-go's loader resolves it for `docker compose up`: interpolated
    from .env, env files read, normalised, with the consistency checks on."""
    work = deploy_copy(tmp_path_factory.mktemp("compose"))
    done = compose_check(work, "-env-file", ".env", "compose.yaml")
    assert done.returncode == 0, done.stderr
    loaded: dict[str, Any] = json.loads(done.stdout)
    return loaded


def test_compose_gos_own_command_loads_the_model(tmp_path: Path) -> None:
    work = deploy_copy(tmp_path)
    done = compose_go(work, "--no-interpolation", "--format", "json", "compose.yaml")
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout)["services"]) == {*SERVICES, *INFRA}


def test_the_loader_refuses_an_inconsistent_file(tmp_path: Path) -> None:
    """The consistency checks are really on: a dependency on a service that does not exist
    is refused."""
    work = deploy_copy(tmp_path)
    broken = COMPOSE.read_text().replace(
        "      mailpit:\n        condition: service_healthy",
        "      mailbox:\n        condition: service_healthy",
    )
    assert broken != COMPOSE.read_text()
    (work / "compose.yaml").write_text(broken)
    done = compose_check(work, "-env-file", ".env", "compose.yaml")
    assert done.returncode != 0
    assert 'depends on undefined service "mailbox"' in done.stderr


def test_the_loader_refuses_to_start_without_the_secrets(tmp_path: Path) -> None:
    work = deploy_copy(tmp_path, env_files=False)
    done = compose_check(work, "compose.yaml")
    assert done.returncode != 0
    assert "MONGO_ROOT_PASSWORD" in done.stderr or "UPKEEP_MONGO_PASSWORD" in done.stderr
    shutil.copy(DEPLOY / ".env.example", work / ".env")
    done = compose_check(work, "-env-file", ".env", "compose.yaml")
    assert done.returncode != 0  # upkeep.env is required too
    assert "upkeep.env" in done.stderr


def test_every_container_is_checked_restarted_and_limited(model: dict[str, Any]) -> None:
    services = model["services"]
    assert set(services) == {*SERVICES, *INFRA}
    for name, spec in services.items():
        limits = spec.get("deploy", {}).get("resources", {}).get("limits", {})
        assert limits.get("memory"), f"{name} has no memory limit"
        assert limits.get("cpus"), f"{name} has no CPU limit"
        assert spec.get("restart"), f"{name} has no restart policy"
        if name == "topics":  # a one-shot job: it exits, and the services wait for that
            assert spec["healthcheck"] == {"disable": True}
            assert spec["restart"].startswith("on-failure")
            continue
        assert spec["healthcheck"]["test"], f"{name} has no health check"
        assert spec["restart"] == "unless-stopped"


def test_services_wait_for_healthy_dependencies(model: dict[str, Any]) -> None:
    services = model["services"]
    for name in SERVICES:
        needs = services[name]["depends_on"]
        assert needs["kafka"]["condition"] == "service_healthy"
        assert needs["mongodb"]["condition"] == "service_healthy"
        assert needs["topics"]["condition"] == "service_completed_successfully"
    assert services["notifier"]["depends_on"]["mailpit"]["condition"] == "service_healthy"
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"


def test_data_lives_in_named_volumes(model: dict[str, Any]) -> None:
    volumes = model["volumes"]
    for service, target in [
        ("kafka", "/var/lib/kafka/data"),
        ("mongodb", "/data/db"),
        ("prometheus", "/prometheus"),
        ("grafana", "/var/lib/grafana"),
    ]:
        mounts = model["services"][service]["volumes"]
        named = [m for m in mounts if m["type"] == "volume" and m["target"] == target]
        assert named, f"{service}: {target} is not a volume"
        assert named[0]["source"] in volumes


def test_the_four_services_share_one_image_and_rules_scales(model: dict[str, Any]) -> None:
    services = model["services"]
    images = {services[s]["image"] for s in (*SERVICES, "topics")}
    builds = {json.dumps(services[s]["build"], sort_keys=True) for s in (*SERVICES, "topics")}
    assert len(images) == 1
    assert len(builds) == 1
    assert services["ingest"]["build"]["dockerfile"] == "deploy/Dockerfile"
    assert [services[s]["command"][0] for s in SERVICES] == [f"services.{s}" for s in SERVICES]
    # `--scale rules=3`: no fixed name, no published host port
    assert "container_name" not in services["rules"]
    assert "ports" not in services["rules"]
    for name in ("ingest", "notifier", "analytics"):
        (port,) = services[name]["ports"]
        assert port["host_ip"] == "127.0.0.1", f"{name} is published beyond this host"


def test_secrets_come_from_an_env_file_that_is_not_committed(
    raw: dict[str, Any], model: dict[str, Any]
) -> None:
    services = model["services"]
    for name in (*SERVICES, "topics"):
        # the services' secrets were read from upkeep.env into their environment...
        env = services[name]["environment"]
        assert env["UPKEEP_NOTIFIER_UNSUBSCRIBE_SECRET"].startswith("change-me")
        # ...and the infrastructure's are not handed to them
        assert "MONGO_ROOT_PASSWORD" not in env
        assert "GRAFANA_ADMIN_PASSWORD" not in env
    assert services["mongodb"]["environment"]["MONGO_INITDB_ROOT_PASSWORD"] == "change-me-root"
    assert services["ingest"]["environment"]["UPKEEP_MONGO_URI"].startswith(
        "mongodb://upkeep:change-me-upkeep@mongodb:27017/"
    )
    for secret in (".env", "upkeep.env"):
        ignored = subprocess.run(
            ["git", "check-ignore", "-q", str(DEPLOY / secret)], cwd=ROOT, check=False
        )
        assert ignored.returncode == 0, f"deploy/{secret} must be ignored by git"
    # every variable the file requires is in .env.example, with a value to replace
    required = set(REQUIRED.findall(COMPOSE.read_text()))
    example = example_env()
    assert required, "no required variables found"
    assert required <= set(example), f"missing from .env.example: {required - set(example)}"
    # and no password is written into the compose file itself
    for name, spec in raw["services"].items():
        for key, value in (spec.get("environment") or {}).items():
            if re.search("PASSWORD|SECRET", key):
                assert str(value).startswith("${"), f"{name}.{key} is not from the env file"


def compose_env(raw: dict[str, Any], service: str) -> dict[str, str]:
    return {k: str(v) for k, v in raw["services"][service]["environment"].items()}


def test_compose_and_the_local_runner_set_the_same_variables(raw: dict[str, Any]) -> None:
    local = LocalStack(StackConfig(state_dir=ROOT / ".run"))
    example = example_env("upkeep.env.example") | example_env()
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    for service in SERVICES:
        prefix = f"UPKEEP_{service.upper()}_"
        mine = compose_env(raw, service)
        theirs = local.service_env(service)
        # the instance id: Compose leaves it to the container's host name (unique per replica)
        expected = set(theirs) - {prefix + "INSTANCE_ID"}
        provided = set(mine) | set(example) | {"PYTHONUNBUFFERED"}
        assert expected <= provided, f"{service}: Compose lacks {expected - provided}"
        assert "PYTHONUNBUFFERED=1" in dockerfile.replace(" ", "")
        # only listening on every interface (inside the container) and where the other
        # containers are differ from the local runner
        extra = set(mine) - set(theirs)
        allowed = {prefix + "HTTP_HOST", prefix + "SMTP_HOST"}
        assert extra <= allowed, f"{service}: only Compose sets {extra - allowed}"
        assert mine[prefix + "HTTP_PORT"] == theirs[prefix + "HTTP_PORT"]
        assert mine[prefix + "HTTP_HOST"] == "0.0.0.0"
        assert mine["UPKEEP_LOG_LEVEL"].endswith(theirs["UPKEEP_LOG_LEVEL"] + "}")
        assert mine["UPKEEP_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert mine["UPKEEP_MONGO_URI"].startswith("mongodb://upkeep:")


def test_both_create_the_same_topics(raw: dict[str, Any]) -> None:
    """Both run shared.kafka.topics' layout with the default names: neither renames a topic."""
    assert raw["services"]["topics"]["command"] == ["shared.kafka.topics"]
    for service in (*SERVICES, "topics"):
        renamed = [k for k in compose_env(raw, service) if k.startswith("UPKEEP_TOPIC_")]
        assert renamed == [], f"{service} renames topics: {renamed}"
    local = LocalStack(StackConfig(state_dir=ROOT / ".run"))
    for service in SERVICES:
        assert not [k for k in local.service_env(service) if k.startswith("UPKEEP_TOPIC_")]
    assert TopicSettings().events == "upkeep.events.v1"


def test_the_broker_is_configured_as_the_local_one(raw: dict[str, Any]) -> None:
    env = compose_env(raw, "kafka")
    for key, value in BROKER_SETTINGS.items():
        name = "KAFKA_" + key.upper().replace(".", "_")
        assert env.get(name) == value, f"{name}: compose {env.get(name)!r}, local {value!r}"
    assert raw["services"]["kafka"]["image"] == "apache/kafka:3.9.1"


def test_prometheus_scrapes_every_service_on_its_port(raw: dict[str, Any]) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for service, port in SERVICE_PORTS.items():
        (sd,) = jobs[f"upkeep-{service}"]["dns_sd_configs"]
        assert sd["names"] == [service]
        assert sd["port"] == port
        assert compose_env(raw, service)[f"UPKEEP_{service.upper()}_HTTP_PORT"] == str(port)


def test_the_image_is_multi_stage_slim_and_runs_as_a_user() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, flags=re.MULTILINE)
    assert len(stages) >= 2, "one stage builds, another runs"
    final = text.rsplit("\nFROM ", 1)[1]
    assert "slim" in re.search(r"ARG PYTHON_IMAGE=(\S+)", text)[1]  # type: ignore[index]
    assert "COPY --from=build" in final
    user = re.findall(r"^USER\s+(\S+)", final, flags=re.MULTILINE)
    assert user
    assert user[-1].split(":")[0] not in {"0", "root"}
    for build_tool in ("gcc", "build-essential", "apt-get install", "pip install"):
        assert build_tool not in final, f"the final stage has {build_tool}"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".run", ".cache", ".git"} <= set(ignored)
