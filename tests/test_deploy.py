"""The deployment files (Dockerfile, docker-compose.yml, deploy/) agree with the code.

No Docker engine or cluster runs here, so they are parsed and checked against what the code
accepts: every command is one ``creditgate`` parses, every variable one the settings know, the
probes are routes the app serves, one migrator runs before the servers, nothing runs as root.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.app import create_app
from gateway.cli import build_parser
from gateway.settings import Settings, check_names

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))


def manifests() -> list[dict[str, Any]]:
    docs = []
    for path in MANIFESTS:
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def pod_specs() -> dict[str, dict[str, Any]]:
    specs = {}
    for doc in manifests():
        if doc["kind"] in ("Deployment", "Job"):
            specs[doc["metadata"]["name"]] = doc["spec"]["template"]["spec"]
    return specs


def accepted(command: list[str]) -> None:
    """``command`` is a creditgate command line its own parser takes."""
    assert command[0] == "creditgate", command
    build_parser().parse_args(command[1:])


def option(command: list[str], name: str) -> str:
    """The value ``command`` gives its option ``name``."""
    assert name in command, (name, command)
    return command[command.index(name) + 1]


def app_paths() -> set[str]:
    app = create_app(Settings.load(redis_url="embedded"))
    return {getattr(route, "path", "") for route in app.routes}


def test_there_are_manifests_and_each_is_a_named_kubernetes_object() -> None:
    assert {p.name for p in MANIFESTS} >= {"config.yaml", "creditgate.yaml", "migrate-job.yaml"}
    for doc in manifests():
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"]


def test_every_container_runs_a_command_creditgate_accepts_as_non_root() -> None:
    specs = pod_specs()
    assert set(specs) == {"creditgate-gateway", "creditgate-sync", "creditgate-migrate"}
    for spec in specs.values():
        assert spec["securityContext"]["runAsNonRoot"] is True
        for container in spec["containers"]:
            accepted(container["command"])


def test_the_configured_variables_are_ones_the_settings_read() -> None:
    names: list[str] = []
    for doc in manifests():
        if doc["kind"] == "ConfigMap":
            names += doc["data"]
        if doc["kind"] == "Secret":
            names += doc["stringData"]
    for service in compose()["services"].values():
        names += service.get("environment", {})
    assert "CREDITGATE_REDIS_URL" in names and "CREDITGATE_DATABASE_URL" in names
    check_names(names)  # raises on a typo, naming the closest


def test_gateway_probes_are_routes_the_app_serves() -> None:
    gateway = pod_specs()["creditgate-gateway"]["containers"][0]
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"/readyz", "/healthz"} <= app_paths()
    port = gateway["ports"][0]["containerPort"]
    assert gateway["command"][gateway["command"].index("--port") + 1] == str(port)


def test_one_migrator_before_the_servers() -> None:
    job = pod_specs()["creditgate-migrate"]["containers"][0]
    assert job["command"] == ["creditgate", "db", "upgrade"]
    services = compose()["services"]
    assert services["migrate"]["command"] == ["creditgate", "db", "upgrade"]
    migrators = [
        name for name, s in services.items() if s.get("command", [])[1:3] == ["db", "upgrade"]
    ]
    assert migrators == ["migrate"]
    for name in ("gateway-1", "gateway-2", "sync"):
        after = services[name]["depends_on"]["migrate"]["condition"]
        assert after == "service_completed_successfully", name


def test_compose_commands_are_accepted_and_nginx_fronts_every_gateway() -> None:
    services = compose()["services"]
    for service in services.values():
        if "command" in service and service["command"][0] == "creditgate":
            accepted(service["command"])
    gateways = {name for name, s in services.items() if s.get("command", [])[1:2] == ["serve"]}
    assert gateways == {"gateway-1", "gateway-2"}
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    assert set(re.findall(r"server (gateway-\d+):8080", conf)) == gateways
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in services["nginx"]["volumes"]
    assert services["redis"]["command"][1:3] == ["--appendonly", "yes"]
    assert {"redis-data", "postgres-data"} <= set(compose()["volumes"])
    assert services["demo-backends"]["profiles"] == ["demo"]


@pytest.mark.parametrize("what", ["user", "healthcheck", "command"])
def test_the_image_runs_as_a_user_with_a_healthcheck(what: str) -> None:
    text = (ROOT / "Dockerfile").read_text()
    if what == "user":
        users = re.findall(r"^USER (\S+)$", text, flags=re.M)
        assert users and users[-1] not in ("root", "0")
    elif what == "healthcheck":
        assert re.search(r"^HEALTHCHECK .*\n.*/healthz", text, flags=re.M)
    else:
        command = re.findall(r"^CMD (\[.*\])$", text, flags=re.M)[-1]
        accepted(yaml.safe_load(command))
        assert shlex.join(yaml.safe_load(command)).startswith("creditgate serve")


def test_the_sync_worker_serves_its_metrics_on_a_declared_port() -> None:
    sync = pod_specs()["creditgate-sync"]["containers"][0]
    port = option(sync["command"], "--metrics-port")
    assert option(sync["command"], "--metrics-host") == "0.0.0.0"  # reachable from outside
    assert {"name": "metrics", "containerPort": int(port)} in sync["ports"]
    service = compose()["services"]["sync"]
    assert option(service["command"], "--metrics-host") == "0.0.0.0"
    port = option(service["command"], "--metrics-port")
    assert any(mapping.endswith(f":{port}") for mapping in service["ports"])


def test_the_gateway_workers_share_their_metrics_on_a_writable_volume() -> None:
    spec = pod_specs()["creditgate-gateway"]
    gateway = spec["containers"][0]
    assert int(option(gateway["command"], "--workers")) > 1
    assert gateway["securityContext"]["readOnlyRootFilesystem"] is True
    where = option(gateway["command"], "--metrics-dir")
    (mount,) = [m for m in gateway["volumeMounts"] if m["mountPath"] == where]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert "emptyDir" in volume
    assert "/metrics" in app_paths()
