"""Real Kafka and FerretDB on 127.0.0.1 without Docker (see infra/README.md).

Apache Kafka comes from Maven Central as jars (resolved by Maven) and runs as a
single-node KRaft broker+controller; FerretDB v1 is built from the Go module proxy through
the project's own Go module and serves the MongoDB wire protocol over SQLite. Both are
cached under ``~/.cache/switchboard`` and started as detached processes with pid files,
so ``up`` is idempotent, ``down`` stops them, and a stale pid file (a crashed or
rebooted server) is detected and replaced.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from switchboard_devkit.paths import cache_dir, repo_root

KAFKA_HEAP = "512m"


class ProvisionError(RuntimeError):
    """A local server could not be provisioned or started; the message says why."""


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def _require(tool: str, why: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ProvisionError(f"`{tool}` is not installed: {why}")
    return path


def _run(cmd: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=1800
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
        raise ProvisionError(f"`{' '.join(cmd)}` failed (exit {result.returncode}):\n{tail}")


@dataclass
class LocalServer:
    """A detached server process with a pid file and a log file."""

    name: str
    host: str
    port: int
    state: Path = field(init=False)
    #: A string that must appear in the process's command line (guards against pid reuse).
    marker: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self.state = cache_dir() / "run" / f"{self.name}-{self.port}"

    @property
    def pidfile(self) -> Path:
        return self.state / "server.pid"

    @property
    def logfile(self) -> Path:
        return self.state / "server.out"

    def pid(self) -> int | None:
        """The pid of our running server, or None (a stale pid file is removed)."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            cmdline = ""
        if self.marker and self.marker in cmdline:
            return pid
        self.pidfile.unlink(missing_ok=True)
        return None

    def running(self) -> bool:
        return self.pid() is not None

    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Provision binaries and data before the first start."""

    def wait_ready(self, process: subprocess.Popen[bytes], deadline: float) -> None:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ProvisionError(
                    f"{self.name} exited with status {process.returncode} during start-up; "
                    f"see {self.logfile}:\n{self._log_tail()}"
                )
            if port_open(self.host, self.port):
                return
            time.sleep(0.2)
        raise ProvisionError(
            f"{self.name} did not open {self.host}:{self.port}; see {self.logfile}"
        )

    def start(self, timeout: float = 90.0) -> bool:
        """Start the server unless ours is already running; return True if started now."""
        if self.running():
            return False
        if port_open(self.host, self.port):
            raise ProvisionError(
                f"{self.host}:{self.port} is in use by another process, not by Switchboard's "
                f"{self.name}. Stop it, or point the project at it with the environment "
                "(KAFKA_BOOTSTRAP_SERVERS / MONGODB_URL), or choose another port "
                "(SWITCHBOARD_KAFKA_PORT / SWITCHBOARD_MONGO_PORT)."
            )
        self.state.mkdir(parents=True, exist_ok=True)
        self.prepare()
        with self.logfile.open("ab") as log:
            process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives the shell that ran `make infra-up`
                cwd=self.state,
            )
        self.pidfile.write_text(str(process.pid))
        try:
            self.wait_ready(process, time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise
        return True

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop our server (SIGTERM, then SIGKILL); return True if one was running."""
        pid = self.pid()
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            if _is_zombie(pid):
                break
            time.sleep(0.1)
        if Path(f"/proc/{pid}").exists() and not _is_zombie(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        self.pidfile.unlink(missing_ok=True)
        return True

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except (OSError, IndexError):
        return False


# --------------------------------------------------------------------------- Kafka


def kafka_version() -> str:
    text = (repo_root() / "infra" / "kafka" / "pom.xml").read_text()
    start = text.index("<kafka.version>") + len("<kafka.version>")
    return text[start : text.index("</kafka.version>", start)].strip()


def kafka_classpath() -> Path:
    """Resolve the broker's jars from Maven Central once; cached by the pom's content."""
    pom = repo_root() / "infra" / "kafka" / "pom.xml"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:12]
    lib = cache_dir() / "kafka" / f"{kafka_version()}-{digest}" / "lib"
    if (lib / ".complete").exists():
        return lib
    mvn = _require("mvn", "Maven resolves the Kafka broker's jars from Maven Central")
    _require("java", "the Kafka broker runs on Java 17+")
    tmp = lib.with_name("lib.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    _run(
        [
            mvn,
            "-B",
            "-q",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={tmp}",
        ]
    )
    shutil.rmtree(lib, ignore_errors=True)
    tmp.rename(lib)
    (lib / ".complete").write_text("ok\n")
    return lib


LOG4J2 = """status = warn
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.filePattern = ${sys:kafka.logs.dir}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 2
rootLogger.level = WARN
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""


@dataclass
class LocalKafka(LocalServer):
    """Single-node KRaft Kafka (broker + controller) on 127.0.0.1."""

    controller_port: int = 19093
    _log_offset: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.marker = f"switchboard-kafka-{self.port}"

    @property
    def data(self) -> Path:
        return self.state / "data"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def properties(self) -> str:
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@{self.host}:{self.controller_port}",
                f"listeners=PLAINTEXT://{self.host}:{self.port},"
                f"CONTROLLER://{self.host}:{self.controller_port}",
                f"advertised.listeners=PLAINTEXT://{self.host}:{self.port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                f"log.dirs={self.data}",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=10",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "transaction.state.log.num.partitions=4",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                # Topics are created explicitly with the contract's partition counts.
                "auto.create.topics.enable=false",
                "num.partitions=3",
                "num.network.threads=2",
                "num.io.threads=4",
                "log.retention.hours=24",
                "log.segment.bytes=67108864",
                "",
            ]
        )

    def prepare(self) -> None:
        lib = kafka_classpath()
        server_log = self.state / "server.log"
        self._log_offset = server_log.stat().st_size if server_log.exists() else 0
        (self.state / "server.properties").write_text(self.properties())
        (self.state / "log4j2.properties").write_text(LOG4J2)
        if not (self.data / "meta.properties").exists():
            self.data.mkdir(parents=True, exist_ok=True)
            java = _require("java", "the Kafka broker runs on Java 17+")
            cluster_id = (
                subprocess.run(
                    [java, "-cp", f"{lib}/*", "kafka.tools.StorageTool", "random-uuid"],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            _run(
                [
                    java,
                    "-cp",
                    f"{lib}/*",
                    f"-Dlog4j2.configurationFile={self.state / 'log4j2.properties'}",
                    f"-Dkafka.logs.dir={self.state}",
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cluster_id,
                    "-c",
                    str(self.state / "server.properties"),
                ]
            )

    def command(self) -> list[str]:
        return [
            _require("java", "the Kafka broker runs on Java 17+"),
            f"-Xms{KAFKA_HEAP}",
            f"-Xmx{KAFKA_HEAP}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.state / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.state}",
            f"-Dswitchboard.marker={self.marker}",
            "-cp",
            f"{kafka_classpath()}/*",
            "kafka.Kafka",
            str(self.state / "server.properties"),
        ]

    def wait_ready(self, process: subprocess.Popen[bytes], deadline: float) -> None:
        super().wait_ready(process, deadline)
        # The port opens before the broker has registered with the controller; wait for
        # the log line that says it serves requests.
        server_log = self.state / "server.log"
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ProvisionError(f"kafka exited during start-up; see {server_log}")
            with contextlib.suppress(OSError), server_log.open("rb") as log:
                size = log.seek(0, os.SEEK_END)
                log.seek(self._log_offset if size >= self._log_offset else 0)
                if b"Kafka Server started" in log.read():
                    return
            time.sleep(0.2)
        raise ProvisionError(f"kafka did not finish starting; see {server_log}")


# --------------------------------------------------------------------------- FerretDB


def ferretdb_version() -> str:
    for line in (repo_root() / "infra" / "ferretdb" / "go.mod").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[-2].endswith("FerretDB/FerretDB"):
            return parts[-1]
        if len(parts) >= 3 and parts[0] == "require" and parts[1].endswith("FerretDB/FerretDB"):
            return parts[2]
    return "unknown"


def ferretdb_binary() -> Path:
    """Build the project's FerretDB command once; cached by the Go module's content.

    The FerretDB module source is copied from the Go module cache, the exact-text patches
    of ``infra/ferretdb/patches.toml`` are applied to the copy, and the command is built
    against it (``-modfile`` with a ``replace``), so the committed ``go.mod`` stays plain.
    """
    module = repo_root() / "infra" / "ferretdb"
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "main.go", "patches.toml"):
        digest.update((module / name).read_bytes())
    home = cache_dir() / "ferretdb" / digest.hexdigest()[:12]
    binary = home / "switchboard-ferretdb"
    if binary.exists():
        return binary
    go = _require("go", "FerretDB is built from the Go module proxy")
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false"}
    source = _patched_ferretdb_source(go, module, home, env)
    modfile = home / "go.mod"
    modfile.write_text(
        (module / "go.mod").read_text() + f"\nreplace github.com/FerretDB/FerretDB => {source}\n"
    )
    shutil.copyfile(module / "go.sum", home / "go.sum")
    partial = binary.with_name(binary.name + ".partial")
    _run(
        [go, "build", "-mod=mod", f"-modfile={modfile}", "-trimpath", "-o", str(partial), "."],
        cwd=module,
        env=env,
    )
    partial.rename(binary)
    return binary


def _patched_ferretdb_source(go: str, module: Path, home: Path, env: dict[str, str]) -> Path:
    import json
    import tomllib

    version = ferretdb_version()
    result = subprocess.run(
        [go, "mod", "download", "-json", f"github.com/FerretDB/FerretDB@{version}"],
        cwd=module,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if result.returncode != 0:
        raise ProvisionError(f"cannot download FerretDB {version}: {result.stderr[-2000:]}")
    original = Path(json.loads(result.stdout)["Dir"])
    source = home / f"FerretDB-{version}"
    shutil.rmtree(source, ignore_errors=True)
    shutil.copytree(original, source)
    for path in source.rglob("*"):  # the module cache is read-only
        path.chmod(path.stat().st_mode | 0o200)
    patches = tomllib.loads((module / "patches.toml").read_text())
    for patch in patches.get("patch", []):
        target = source / patch["file"]
        text = target.read_text()
        if text.count(patch["old"]) != 1:
            raise ProvisionError(
                f"FerretDB patch no longer applies to {patch['file']} "
                f"(expected the text once): {patch['old']!r}"
            )
        target.write_text(text.replace(patch["old"], patch["new"]))
    return source


@dataclass
class LocalFerretDB(LocalServer):
    """FerretDB v1 over SQLite on 127.0.0.1, speaking the MongoDB wire protocol."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.marker = "switchboard-ferretdb"

    @property
    def data(self) -> Path:
        return self.state / "data"

    @property
    def url(self) -> str:
        return f"mongodb://{self.host}:{self.port}/"

    def prepare(self) -> None:
        ferretdb_binary()
        self.data.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        return [
            str(ferretdb_binary()),
            "-listen-addr",
            f"{self.host}:{self.port}",
            "-sqlite-dir",
            str(self.data),
        ]

    def pid(self) -> int | None:
        pid = super().pid()
        if pid is None:
            return None
        # The marker is the binary name; make sure it is ours on this port.
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return None
        if f"{self.host}:{self.port}" not in cmdline:
            self.pidfile.unlink(missing_ok=True)
            return None
        return pid


def local_kafka() -> LocalKafka:
    return LocalKafka(
        name="kafka",
        host="127.0.0.1",
        port=int(os.environ.get("SWITCHBOARD_KAFKA_PORT", "9092")),
        controller_port=int(os.environ.get("SWITCHBOARD_KAFKA_CONTROLLER_PORT", "19093")),
    )


def local_ferretdb() -> LocalFerretDB:
    return LocalFerretDB(
        name="ferretdb",
        host="127.0.0.1",
        port=int(os.environ.get("SWITCHBOARD_MONGO_PORT", "27017")),
    )
