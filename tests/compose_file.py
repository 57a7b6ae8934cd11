"""docker-compose.yml as data: parsing, Compose's variable interpolation, and what a service runs.

The stack tests run each service's own ``command`` and ``healthcheck`` from the file,
so the commands are shared with Docker rather than copied. Only the environment is
adapted to this host (loopback ports, fresh databases, temporary folders), and
``host_specific`` lists exactly the variables that must be adapted: a value naming
another service's host (``@postgres:``, ``//mlflow:``) or a path inside a container.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yml"
REMOTE_OVERLAY = REPO / "docker-compose.remote.yml"
CONTAINER_PATHS = ("/var/lib/convscope", "/etc/convscope", "/datasets")

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, ${NAME:+alt}; $NAME; $$ is a literal $
_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


class MissingVariable(KeyError):
    """A ``${NAME:?message}`` whose variable is unset (or empty): Compose refuses to start."""


def load(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    with open(path) as handle:
        return yaml.safe_load(handle)


def example_env() -> dict[str, str]:
    """The variables of .env.example, as a user's .env would set them."""
    return dict(re.findall(r"^([A-Z0-9_]+)=(.*)$", (REPO / ".env.example").read_text(), re.M))


def variables(path: Path = COMPOSE_FILE) -> set[str]:
    """Every variable the file interpolates."""
    return {m.group("braced") or m.group("bare") for m in _VARIABLE.finditer(path.read_text())
            if not m.group("escaped")}


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's interpolation of one value (recursively through lists and mappings)."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("braced") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        current = env.get(name)
        unset_or_empty = current is None or (op is not None and op.startswith(":") and current == "")
        if op in (":-", "-"):
            return arg if unset_or_empty else str(current)
        if op in (":?", "?"):
            if unset_or_empty:
                raise MissingVariable(f"{name}: {arg}")
            return str(current)
        if op in (":+", "+"):
            return "" if unset_or_empty else arg
        return "" if current is None else str(current)

    return _VARIABLE.sub(replace, value)


def service(name: str, env: Mapping[str, str], compose: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One service of the file with ``env`` interpolated into it."""
    return interpolate((compose or load())["services"][name], env)


def command(name: str, env: Mapping[str, str]) -> list[str]:
    cmd = service(name, env)["command"]
    assert isinstance(cmd, list), f"{name}: write command as a list, so no shell parses it"
    return [str(part) for part in cmd]


def healthcheck(name: str, env: Mapping[str, str]) -> list[str]:
    test = service(name, env)["healthcheck"]["test"]
    assert test[0] == "CMD", f"{name}: the healthcheck runs a command directly (CMD), not through a shell"
    return [str(part) for part in test[1:]]


def environment(name: str, env: Mapping[str, str]) -> dict[str, str]:
    values = service(name, env).get("environment") or {}
    assert isinstance(values, dict), f"{name}: write environment as a mapping"
    return {key: str(value) for key, value in values.items()}


def host_specific(values: Mapping[str, str], services: set[str]) -> set[str]:
    """The variables whose value only makes sense inside the stack: another service's
    host name in a URL, or a path inside a container."""
    hosts = "|".join(re.escape(s) for s in services)
    network = re.compile(rf"(@|//)({hosts}):")
    return {key for key, value in values.items()
            if network.search(value) or value.startswith(CONTAINER_PATHS)}


V1_UNSUPPORTED_TOP_LEVEL = ("name",)  # Compose v1 (docker-compose 1.29) rejects it; -p names the project


def v1_variant(compose: Mapping[str, Any], *, gpus: bool) -> dict[str, Any]:
    """The file as Compose v1 reads it, generated from the real one (never kept by hand): without the
    top-level keys v1 rejects and, when the engine has no GPU (``gpus`` False), without the services'
    GPU reservations (an engine without NVIDIA's runtime refuses to create such a container). Every
    other key — commands, healthchecks, volumes, ports, environment, dependencies — is the file's own."""
    variant = {key: value for key, value in compose.items() if key not in V1_UNSUPPORTED_TOP_LEVEL}
    services = {}
    for name, definition in compose["services"].items():
        definition = dict(definition)
        reservations = definition.get("deploy", {}).get("resources", {}).get("reservations", {})
        if not gpus and reservations.get("devices"):
            definition.pop("deploy")
        services[name] = definition
    variant["services"] = services
    return variant
