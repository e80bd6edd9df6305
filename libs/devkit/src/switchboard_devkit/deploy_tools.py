"""Deployment-check tools built from the Go module proxy: ``helm`` and ``kubeconform``.

No Docker engine and no internet here, only package registries: both tools are Go
programs, so ``go install <module>@<version>`` builds them from the Go module proxy.
Each is built once into ``~/.cache/switchboard/tools/<name>-<version>/`` (about two
minutes for both on a cold cache) and reused afterwards; without a Go new enough on the
machine, the pinned toolchain from the Go module proxy builds them (``local.go_binary``).

Command line (``make deploy-tools``): ``python -m switchboard_devkit.deploy_tools`` builds both
and prints their paths.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from switchboard_devkit.paths import cache_dir
from switchboard_devkit.servers.local import ProvisionError, _run, go_binary


@dataclass(frozen=True)
class GoTool:
    """A command of a Go module, pinned to a version."""

    name: str
    package: str
    version: str
    #: The ``go`` line of the tool's go.mod (the oldest Go that builds it).
    go: str

    @property
    def home(self) -> Path:
        return cache_dir() / "tools" / f"{self.name}-{self.version}"

    @property
    def binary(self) -> Path:
        return self.home / "bin" / self.name

    def ensure(self) -> Path:
        """The tool's binary, built with ``go install`` on first use.

        Raises ``ProvisionError`` when Go is missing or the build fails (with its output).
        Safe to call concurrently from several processes: the binary is built into a
        private directory and renamed into place.
        """
        if self.binary.exists():
            return self.binary
        go = go_binary(self.go)
        partial = self.home.with_name(f"{self.home.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        (partial / "bin").mkdir(parents=True)
        env = {
            **os.environ,
            "GOBIN": str(partial / "bin"),
            "CGO_ENABLED": "0",
            "GOFLAGS": "-buildvcs=false",
            "GOTOOLCHAIN": "local",  # go_binary's Go is new enough
        }
        _run([go, "install", "-trimpath", f"{self.package}@{self.version}"], env=env)
        self.home.parent.mkdir(parents=True, exist_ok=True)
        try:
            partial.rename(self.home)
        except OSError:
            # Another process finished first: its binary is as good as ours.
            shutil.rmtree(partial, ignore_errors=True)
        if not self.binary.exists():
            raise ProvisionError(f"go install {self.package} produced no {self.name} binary")
        return self.binary


#: Helm 3 (``helm template`` renders the chart under ``deploy/k8s/``).
HELM = GoTool("helm", "helm.sh/helm/v3/cmd/helm", "v3.22.0", go="1.26")
#: kubeconform validates rendered manifests against the Kubernetes JSON schemas.
KUBECONFORM = GoTool(
    "kubeconform", "github.com/yannh/kubeconform/cmd/kubeconform", "v0.8.0", go="1.26"
)

TOOLS = (HELM, KUBECONFORM)

#: Kubernetes versions the chart is validated against (the oldest and a recent one).
KUBERNETES_VERSIONS = ("1.30.0", "1.35.0")


def kubernetes_schemas(version: str) -> tuple[str, str]:
    """kubeconform's ``-schema-location`` template for the given Kubernetes version.

    Returns ``(schema_location, source)``. The schemas are those of the PyPI package
    ``kubernetes-validate`` (a dev dependency): OpenAPI-derived JSON Schemas of every
    built-in kind per Kubernetes minor version. They reference a shared
    ``_definitions.json`` through ``$id`` URLs on kubernetes.io, which kubeconform would
    fetch; the copy made here (once per package version, under the cache) drops the
    ``$id`` and makes the references relative to the file, so validation is offline.
    """
    import importlib.metadata
    import importlib.resources
    import json

    package_version = importlib.metadata.version("kubernetes-validate")
    source = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
    wanted = f"v{version}-local-strict"
    origin = Path(str(source)) / wanted
    if not origin.is_dir():
        available = sorted(p.name for p in Path(str(source)).iterdir() if p.is_dir())
        raise ProvisionError(
            f"kubernetes-validate {package_version} has no schemas for Kubernetes {version} "
            f"(it has: {', '.join(available)})"
        )
    root = cache_dir() / "tools" / f"kubernetes-schemas-{package_version}"
    target = root / wanted
    if not (target / ".complete").exists():
        partial = root / f"{wanted}.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        for path in origin.glob("*.json"):
            schema = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(schema, dict):
                schema.pop("$id", None)
            text = json.dumps(schema).replace('"/api/_definitions.json#', '"_definitions.json#')
            (partial / path.name).write_text(text, encoding="utf-8")
        (partial / ".complete").write_text("ok\n")
        shutil.rmtree(target, ignore_errors=True)
        try:
            partial.rename(target)
        except OSError:
            shutil.rmtree(partial, ignore_errors=True)
    location = str(root / "{{ .NormalizedKubernetesVersion }}-local{{ .StrictSuffix }}")
    return (
        f"{location}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
        f"kubernetes-validate {package_version}",
    )


def main() -> int:
    try:
        for tool in TOOLS:
            print(f"{tool.name} {tool.version}: {tool.ensure()}")
        for version in KUBERNETES_VERSIONS:
            location, source = kubernetes_schemas(version)
            print(f"Kubernetes {version} schemas ({source}): {location}")
    except ProvisionError as error:
        print(f"switchboard-tools: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
