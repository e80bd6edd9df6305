"""Prometheus for ``make run``: Debian's ``prometheus`` scraping every local service.

The same jobs and rules as docker-compose and the Helm chart (job = service name, the
shipped ``deploy/prometheus/*.rules.yml``), on 127.0.0.1:9090 by default
(``SWITCHBOARD_PROMETHEUS_PORT``). Data and log live under ``.run/prometheus`` in the
checkout. When the binary is missing, ``make run`` goes on without it and says so.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from switchboard_devkit.paths import repo_root
from switchboard_devkit.servers.local import port_open


def rule_files() -> list[Path]:
    """The shipped alert and recording rules."""
    return sorted((repo_root() / "deploy" / "prometheus").glob("*.rules.yml"))


def prometheus_config(
    targets: Mapping[str, Sequence[str]], rules: Sequence[Path], *, interval: str = "5s"
) -> str:
    """A Prometheus configuration scraping ``targets`` (job name -> host:port list).

    The interval is shorter than production's 15 s so ``make demo`` shows metrics move.
    """
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(path) for path in rules],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": list(hosts)}]}
            for job, hosts in sorted(targets.items())
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)


@dataclass
class LocalPrometheus:
    """A Prometheus child process of ``make run`` (stopped with it)."""

    targets: Mapping[str, Sequence[str]]
    host: str = "127.0.0.1"
    port: int = field(
        default_factory=lambda: int(os.environ.get("SWITCHBOARD_PROMETHEUS_PORT", "9090"))
    )
    home: Path = field(default_factory=lambda: repo_root() / ".run" / "prometheus")
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> str:
        """Start Prometheus if possible; return a line saying what happened (never raises)."""
        binary = shutil.which("prometheus")
        if binary is None:
            return (
                "prometheus: not installed, metrics are not collected "
                "(apt-get install prometheus; each service still serves /metrics)"
            )
        if port_open(self.host, self.port):
            return (
                f"prometheus: {self.host}:{self.port} is in use, not starting one "
                "(set SWITCHBOARD_PROMETHEUS_PORT to use another port)"
            )
        self.home.mkdir(parents=True, exist_ok=True)
        config = self.home / "prometheus.yml"
        config.write_text(prometheus_config(self.targets, rule_files()))
        log = (self.home / "prometheus.log").open("ab")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.home / 'data'}",
                "--storage.tsdb.retention.time=2d",
                f"--web.listen-address={self.host}:{self.port}",
                "--web.enable-lifecycle",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                status = self.process.returncode
                return f"prometheus: exited with {status}; see {self.home}/prometheus.log"
            if port_open(self.host, self.port):
                return f"prometheus: {self.url} scraping {', '.join(sorted(self.targets))}"
            time.sleep(0.2)
        return f"prometheus: not answering on {self.url} yet; see {self.home}/prometheus.log"

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(5)
