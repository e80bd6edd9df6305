"""The whole system as separate processes on real servers (end-to-end tests, faults, bench).

``Stack`` starts every service under ``services/`` with its own free ports, a topic
prefix and a database unique to the stack, and the development secrets of
``SWITCHBOARD_ENV=test`` given explicitly, so several stacks can run side by side on one
Kafka and one MongoDB-wire server.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from switchboard_common.contract.topics import TopicNames
from switchboard_common.topics import create_topics, delete_topics
from switchboard_devkit.running.inprocess import free_port
from switchboard_devkit.running.processes import ServiceProcess, ServiceSpec, discover_services
from switchboard_devkit.testing.kafka_probe import unique

#: Webhook secrets the end-to-end tests sign with, the router API tokens they present,
#: the secret agent tokens are signed with and the web chat's signing keys (visitors'
#: identity and their resume tokens) (never used outside tests).
TEST_SECRETS = {
    "META_APP_SECRET": "e2e-meta-app-secret",
    "META_VERIFY_TOKEN": "e2e-meta-verify-token",
    "X_CONSUMER_SECRET": "e2e-x-consumer-secret",
    "TELEGRAM_SECRET_TOKEN": "e2e-telegram-secret-token",
    "ROUTER_READ_TOKEN": "e2e-router-read-token",
    "ROUTER_ADMIN_TOKEN": "e2e-router-admin-token",
    "ROUTER_AGENT_TOKEN_SECRET": "e2e-router-agent-token-secret",
    "WEBCHAT_IDENTITY_SECRET": "e2e-webchat-identity-secret",
    "WEBCHAT_TOKEN_SECRET": "e2e-webchat-token-secret",
}
SUPPORT_DOMAIN = "support.example.com"


@dataclass
class Stack:
    """Every service as a process, wired to one topic prefix and one database."""

    kafka_bootstrap: str
    mongodb_url: str
    extra_env: dict[str, str] = field(default_factory=dict)
    partitions: int = 3
    #: Run a service from another module, e.g. {"router": "bench.probed_router"}.
    modules: dict[str, str] = field(default_factory=dict)
    topics: TopicNames = field(init=False)
    database: str = field(init=False)
    env: dict[str, str] = field(init=False)
    services: dict[str, ServiceProcess] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.topics = TopicNames(f"{unique('e')}.")
        self.database = unique("e_")
        self.env = {
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "MONGODB_URL": self.mongodb_url,
            "MONGODB_DATABASE": self.database,
            "SWITCHBOARD_TOPIC_PREFIX": self.topics.prefix,
            "SWITCHBOARD_ENV": "test",
            "SWITCHBOARD_LOG_FORMAT": "json",
            "SUPPORT_EMAIL_DOMAINS": SUPPORT_DOMAIN,
            "INGEST_EMAIL_SMTP_PORT": str(free_port()),
            # All the stack's mail comes from 127.0.0.1, standing for every sending server.
            "INGEST_EMAIL_MESSAGES_PER_IP_PER_MINUTE": "100000",
            "PYTHONUNBUFFERED": "1",
            **TEST_SECRETS,
        }
        for spec in discover_services():
            self.env[spec.http_port_env] = str(free_port())
        self.env.update(self.extra_env)
        if "WEBCHAT_HTTP_PORT" in self.env:
            # The stack's widget runs on the web chat's own demo page: its origin (what
            # `url("webchat")` answers) is the one a test's socket presents.
            port = self.env["WEBCHAT_HTTP_PORT"]
            self.env.setdefault("WEBCHAT_ALLOWED_ORIGINS", f"http://127.0.0.1:{port}")

    def spec(self, name: str) -> ServiceSpec:
        for spec in discover_services():
            if spec.name == name:
                return replace(spec, module=self.modules.get(name, spec.module))
        raise KeyError(f"no service {name!r} under services/")

    def start(self, *names: str, ready_timeout: float = 90.0) -> None:
        """Start the named services (all when none given) and wait until ready."""
        asyncio.run(
            create_topics(
                self.kafka_bootstrap, prefix=self.topics.prefix, partitions=self.partitions
            )
        )
        wanted = names or tuple(s.name for s in discover_services())
        started = []
        for name in wanted:
            process = ServiceProcess(self.spec(name), dict(self.env), output=None)
            process.start()
            self.services[name] = process
            started.append(process)
        for process in started:
            process.wait_ready(timeout=ready_timeout)

    def add_replica(self, name: str) -> str:
        """Start one more process of a service (its own HTTP port; same topics, groups
        and database) and wait until ready. Returns its name here, e.g. ``router#2``."""
        spec = self.spec(name)
        number = 1 + sum(1 for key in self.services if key.split("#")[0] == name)
        key = f"{name}#{number}"
        process = ServiceProcess(
            spec, {**self.env, spec.http_port_env: str(free_port())}, output=None
        )
        process.start()
        self.services[key] = process
        process.wait_ready(timeout=90)
        return key

    def pause(self, name: str) -> None:
        """SIGSTOP: the process is frozen mid-whatever (a stalled VM, a long GC pause)."""
        self.services[name].signal(signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.services[name].signal(signal.SIGCONT)

    def restart(self, name: str, *, kill: bool = False) -> None:
        """Stop (SIGKILL with ``kill``) and start one service again; wait until ready."""
        process = self.services[name]
        if kill:
            process.kill()
        else:
            process.stop()
        replacement = ServiceProcess(process.spec, dict(process.env), output=None)
        replacement.start()
        self.services[name] = replacement
        replacement.wait_ready(timeout=90)

    def url(self, name: str) -> str:
        return self.services[name].base_url

    def router_auth(self, *, admin: bool = False) -> dict[str, str]:
        """The ``Authorization`` header for the router's read API (or its admin API)."""
        token = self.env["ROUTER_ADMIN_TOKEN" if admin else "ROUTER_READ_TOKEN"]
        return {"Authorization": f"Bearer {token}"}

    @property
    def smtp_port(self) -> int:
        return int(self.env["INGEST_EMAIL_SMTP_PORT"])

    def stop(self) -> None:
        for process in reversed(list(self.services.values())):
            with contextlib.suppress(Exception):
                process.signal(signal.SIGCONT)  # a paused process cannot act on SIGTERM
                process.stop()

    def remove_data(self) -> None:
        """Delete this stack's topics and drop its database (after ``stop``)."""
        asyncio.run(self._remove_data())

    async def _remove_data(self) -> None:
        from pymongo import AsyncMongoClient

        await delete_topics(self.kafka_bootstrap, prefix=self.topics.prefix)
        client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(self.mongodb_url)
        try:
            await client.drop_database(self.database)
        finally:
            await client.close()

    def dump_logs(self) -> None:
        """Print each service's last output (called when a test fails)."""
        sys.stderr.write(self.logs_tail())

    def logs_tail(self, lines: int = 80) -> str:
        """Each service's last output, one section per service; those that ended first
        (a long dump gets cut, and why a service ended matters most)."""
        ordered = sorted(self.services.items(), key=lambda item: item[1].state == "running")
        return "".join(
            f"----- {name} ({process.state}) -----\n{process.tail(lines)}\n"
            for name, process in ordered
        )

    def ended(self) -> dict[str, str]:
        """Services whose process is no longer running, and how each ended."""
        return {n: p.state for n, p in self.services.items() if p.state != "running"}


@contextlib.contextmanager
def running_stack(
    kafka_bootstrap: str, mongodb_url: str, *names: str, **kw: object
) -> Iterator[Stack]:
    stack = Stack(kafka_bootstrap, mongodb_url, **kw)  # type: ignore[arg-type]
    try:
        stack.start(*names)
        yield stack
    except BaseException:
        stack.dump_logs()
        raise
    finally:
        stack.stop()
