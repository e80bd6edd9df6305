"""Running Switchboard services as separate processes (``make run`` and end-to-end tests)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from switchboard_devkit.paths import repo_root


@dataclass(frozen=True)
class ServiceSpec:
    """A service directory under ``services/`` and the module that runs it."""

    name: str
    module: str
    #: The environment variable holding its HTTP port, and the default from CONTRACT.md.
    http_port_env: str
    http_port: int


#: Ports from CONTRACT.md.
KNOWN_PORTS = {
    "ingest-email": ("INGEST_EMAIL_HTTP_PORT", 8001),
    "ingest-social": ("INGEST_SOCIAL_HTTP_PORT", 8002),
    "router": ("ROUTER_HTTP_PORT", 8003),
    "sla-monitor": ("SLA_MONITOR_HTTP_PORT", 8004),
    "webchat": ("WEBCHAT_HTTP_PORT", 8005),
}


def discover_services() -> list[ServiceSpec]:
    """Every service in ``services/`` that has a runnable ``__main__``."""
    specs = []
    for directory in sorted((repo_root() / "services").glob("*/pyproject.toml")):
        name = directory.parent.name
        module = "switchboard_" + name.replace("-", "_")
        if importlib.util.find_spec(module) is None:
            continue
        if importlib.util.find_spec(f"{module}.__main__") is None:
            continue
        env_name, port = KNOWN_PORTS.get(name, (f"{module.upper()}_HTTP_PORT", 0))
        specs.append(ServiceSpec(name, module, env_name, port))
    return specs


@dataclass
class ServiceProcess:
    """One service running as ``python -m <module>`` with its output prefixed."""

    spec: ServiceSpec
    env: dict[str, str]
    output: IO[str] | None = None
    process: subprocess.Popen[str] | None = field(default=None, init=False)
    lines: list[str] = field(default_factory=list, init=False)
    _pump: threading.Thread | None = field(default=None, init=False)

    @property
    def http_port(self) -> int:
        return int(self.env.get(self.spec.http_port_env, self.spec.http_port))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.spec.module],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            cwd=repo_root(),
        )
        self._pump = threading.Thread(target=self._forward, daemon=True)
        self._pump.start()

    def _forward(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if len(self.lines) > 5000:
                del self.lines[:1000]
            if self.output is not None:
                self.output.write(f"[{self.spec.name}] {line}")
                self.output.flush()

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until ``/readyz`` answers 200; raise with the service's output if not."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.spec.name} exited with {self.process.returncode}:\n{self.tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                response = httpx.get(f"{self.base_url}/readyz", timeout=2.0)
                if response.status_code == 200:
                    return
                last = response.text
            time.sleep(0.2)
        raise RuntimeError(f"{self.spec.name} not ready after {timeout}s ({last}):\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        return "".join(self.lines[-lines:])

    @property
    def state(self) -> str:
        """``running``, or how the process ended (``exited with 1``, ``killed by SIGKILL``)."""
        status = None if self.process is None else self.process.poll()
        if status is None:
            return "running" if self.process is not None else "not started"
        if status < 0:
            return f"killed by {signal.Signals(-status).name}"
        return f"exited with {status}"

    def signal(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, wait, then SIGKILL; return the exit status."""
        if self.process is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        if self._pump is not None:
            self._pump.join(2)
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


def service_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment ``make run`` gives every service (the caller's, plus defaults)."""
    env = dict(os.environ if base is None else base)
    env.setdefault("SWITCHBOARD_ENV", "dev")
    env.setdefault("SUPPORT_EMAIL_DOMAINS", "support.example.com")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def log_dir() -> Path:
    path = repo_root() / ".run"
    path.mkdir(exist_ok=True)
    return path


def outbox_dir() -> Path:
    """Where ``make run``'s mail sink keeps the mail Switchboard sends (``<n>.eml``)."""
    return log_dir() / "outbox"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float | None:
    """A process's peak resident memory so far (``VmHWM``), in MB; None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None
