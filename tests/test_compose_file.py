"""docker-compose.yml, checked without a Docker engine: structure, security and the commands it runs."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

import compose_file
from compose_file import COMPOSE_FILE, REMOTE_OVERLAY, REPO, MissingVariable, example_env
from convscope.cli.main import build_parser
from convscope.cli.env_flags import with_env_flags

SERVICES = {"postgres", "mlflow", "tensorboard", "optuna-dashboard", "study-init", "worker"}
ONE_SHOT = {"study-init"}
PROJECT_IMAGE_SERVICES = SERVICES - {"postgres"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$")
REQUIRED_VARIABLE = re.compile(r"^\$\{[A-Z0-9_]+:\?[^}]+\}$")
# every variable a secret may come from, all required (${VAR:?…}) wherever they appear
SECRETS = {"POSTGRES_PASSWORD", "MLFLOW_ADMIN_PASSWORD", "MLFLOW_SECRET_KEY"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return compose_file.load()


def all_values(env: dict[str, str]) -> dict[str, str]:
    return example_env() | env


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration))


def test_parses_with_every_service(compose: dict) -> None:
    assert SERVICES <= set(compose["services"]), sorted(compose["services"])
    assert set(compose["volumes"]) >= {"postgres-data", "mlflow-artifacts", "tensorboard-events"}


def test_long_running_services_have_healthchecks(compose: dict) -> None:
    for name in SERVICES - ONE_SHOT:
        check = compose["services"][name].get("healthcheck")
        assert check and check["test"][0] == "CMD", f"{name} needs a healthcheck that runs a command"
        assert seconds(check["interval"]) > 0 and check["retries"] >= 1, name
    assert compose["services"]["study-init"]["restart"] == "no"


def test_postgres_is_pinned_private_and_checked_over_tcp(compose: dict) -> None:
    postgres = compose["services"]["postgres"]
    repository, _, tag = postgres["image"].partition(":")
    assert repository == "postgres" and re.match(r"\d+\.\d+", tag), f"pin a version: {postgres['image']}"
    assert "ports" not in postgres, "postgres must not be published (docker-compose.remote.yml opts in)"
    test = postgres["healthcheck"]["test"]
    assert test[1] == "pg_isready" and test[test.index("--host") + 1] == "127.0.0.1", test
    assert any(v.startswith("postgres-data:") for v in postgres["volumes"])


def _published(service: dict) -> list[str]:
    entries = []
    for port in service.get("ports", []):
        entries.append(port if isinstance(port, str) else f"{port.get('host_ip', '')}:{port.get('published')}")
    return entries


@pytest.mark.parametrize("path", [COMPOSE_FILE, REMOTE_OVERLAY], ids=lambda p: p.name)
def test_ports_are_published_on_loopback_only(path: Path) -> None:
    services = compose_file.load(path)["services"]
    published = {name: _published(service) for name, service in services.items()}
    assert any(published.values()), "the UIs should be reachable on this host"
    for name, entries in published.items():
        for entry in entries:
            assert entry.startswith("127.0.0.1:"), f"{path.name}: {name} publishes {entry!r} beyond 127.0.0.1"


def test_no_secret_literal(compose: dict) -> None:
    text = COMPOSE_FILE.read_text()
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            value = str(value)
            if SECRET_NAME.search(key):
                assert REQUIRED_VARIABLE.match(value), f"{name}.{key} must be ${{VAR:?…}}, not {value!r}"
            for password in re.findall(r"://[^:/@\s]+:([^@\s]+)@", value):  # user:password@ in a URL
                assert REQUIRED_VARIABLE.match(password), f"{name}.{key}: URL password {password!r}"
    for secret in SECRETS:
        uses = re.findall(r"\$\{" + secret + r"([^}]*)\}", text)
        assert uses and all(use.startswith(":?") for use in uses), f"{secret}: always ${{{secret}:?…}}"


def test_a_missing_secret_stops_compose(compose: dict) -> None:
    env = all_values({})
    for secret in SECRETS:
        partial = {k: v for k, v in env.items() if k != secret}
        with pytest.raises(MissingVariable, match=secret):
            compose_file.interpolate(compose, partial)


def test_env_example_covers_every_required_variable_and_env_is_ignored() -> None:
    defined = example_env()
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", COMPOSE_FILE.read_text()))
    assert required <= set(defined), f"missing from .env.example: {required - set(defined)}"
    for secret in SECRETS:
        assert "change-me" in defined[secret], f".env.example must hold a placeholder for {secret}"
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=REPO)
    assert ignored.returncode == 0, ".env must be git-ignored"


def test_worker_reserves_a_gpu_and_stops_gracefully(compose: dict) -> None:
    worker = compose["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices), devices
    assert seconds(worker["stop_grace_period"]) >= 60, "a trial needs time to end KILLED and flush its images"
    assert worker["restart"].startswith("on-failure")
    assert worker.get("shm_size")
    assert "container_name" not in worker and "ports" not in worker, "a fixed name or port prevents --scale"
    assert worker["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "mlflow": {"condition": "service_healthy"},
        "study-init": {"condition": "service_completed_successfully"},
    }


def test_tensorboard_reads_the_events_the_workers_write(compose: dict) -> None:
    services = compose_file.interpolate(compose, all_values({}))["services"]
    logdir = services["tensorboard"]["environment"]["CONVSCOPE_LOGDIR"]
    tensorboard_mounts = [v.split(":") for v in services["tensorboard"]["volumes"]]
    assert [["tensorboard-events", logdir, "ro"]] == tensorboard_mounts
    runs_dir = services["worker"]["environment"]["CONVSCOPE_RUNS_DIR"]
    assert f"tensorboard-events:{logdir}" in services["worker"]["volumes"]
    assert logdir == f"{runs_dir}/tensorboard", "workers write events under <runs-dir>/tensorboard"


def test_mlflow_serves_artifacts_from_a_volume_behind_allowed_hosts(compose: dict) -> None:
    mlflow = compose_file.interpolate(compose, all_values({}))["services"]["mlflow"]
    env = mlflow["environment"]
    assert f"mlflow-artifacts:{env['MLFLOW_ARTIFACTS_DESTINATION']}" in mlflow["volumes"]
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql")
    assert "mlflow:5000" in env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(","), "workers reach it as mlflow:5000"
    assert env["MLFLOW_BACKEND_STORE_URI"].rsplit("/", 1)[1] != env["CONVSCOPE_AUTH_DATABASE_URI"].rsplit("/", 1)[1]
    init = (REPO / "docker" / "postgres-init" / "01-databases.sql").read_text()
    for url in (env["MLFLOW_BACKEND_STORE_URI"], env["CONVSCOPE_AUTH_DATABASE_URI"]):
        assert f"CREATE DATABASE {url.rsplit('/', 1)[1]};" in init, url


def test_basic_auth_is_opt_in(compose: dict) -> None:
    for value, expected in (({}, "--no-auth"), ({"CONVSCOPE_MLFLOW_AUTH": "true"}, "--auth")):
        env = compose_file.environment("mlflow", all_values({}) | value if value else
                                       {k: v for k, v in all_values({}).items() if k != "CONVSCOPE_MLFLOW_AUTH"})
        argv = with_env_flags(build_parser(), ["serve", "mlflow"], env)
        assert expected in argv, (value, argv)


@pytest.mark.parametrize("name", sorted(PROJECT_IMAGE_SERVICES))
def test_commands_are_convscope_commands_this_cli_accepts(name: str, compose: dict) -> None:
    """The commands the stack runs (and the stack tests run) parse with this very CLI,
    with the service's own environment supplying the flags."""
    env = compose_file.environment(name, all_values({}))
    for argv in (compose_file.command(name, all_values({})),
                 *([compose_file.healthcheck(name, all_values({}))] if name not in ONE_SHOT else [])):
        assert argv[0] == "convscope", argv
        parser = build_parser()
        args = parser.parse_args(with_env_flags(parser, argv[1:], env))
        assert callable(args.handler), argv


def test_project_image_is_one_build_of_this_repository(compose: dict) -> None:
    images = {compose["services"][name]["image"] for name in PROJECT_IMAGE_SERVICES}
    assert len(images) == 1, "server and workers share one image, so their versions match"
    for name in PROJECT_IMAGE_SERVICES:
        assert compose["services"][name]["build"]["context"] == "."
        assert compose["services"][name].get("init") is True, f"{name}: init reaps children and forwards signals"


def test_dockerfile_is_cuda_pytorch_non_root_with_the_project_installed() -> None:
    text = (REPO / "Dockerfile").read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.M)
    assert base and re.match(r"pytorch/pytorch:\d+\.\d+\.\d+-cuda[\d.]+-cudnn\d+-runtime$", base.group(1)), base
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"
    assert re.search(r'pip install (\$\{PIP_FLAGS\} )?"\.\[postgres\]"', text), "install the project with its PostgreSQL driver"
    for package in ("train", "tracking", "search"):
        assert f"COPY {package} ./{package}" in text


def test_the_compose_v1_variant_drops_only_what_v1_and_a_gpu_less_engine_refuse() -> None:
    compose = compose_file.load()
    variant = compose_file.v1_variant(compose, gpus=False)
    assert "name" in compose and "name" not in variant
    assert "deploy" in compose["services"]["worker"] and "deploy" not in variant["services"]["worker"]
    for name, service in compose["services"].items():
        kept = {key: value for key, value in service.items() if key != "deploy"}
        assert {key: value for key, value in variant["services"][name].items()} == kept, name
    assert {key: value for key, value in variant.items() if key != "services"} == \
        {key: value for key, value in compose.items() if key not in ("services", "name")}
    with_gpus = compose_file.v1_variant(compose, gpus=True)
    assert with_gpus["services"]["worker"]["deploy"] == compose["services"]["worker"]["deploy"]
