"""Real Kafka and FerretDB on 127.0.0.1 without Docker (see infra/README.md).

Apache Kafka comes from Maven Central as jars (resolved by Maven) and runs as a
single-node KRaft broker+controller; FerretDB v1 is built from the Go module proxy through
the project's own Go module and serves the MongoDB wire protocol over SQLite (with the
machine's Go when new enough, else a pinned Go toolchain from the Go module proxy). Both
are cached under ``~/.cache/switchboard`` and started as detached processes with pid files,
so ``up`` is idempotent, ``down`` stops them, and a stale pid file (a crashed or
rebooted server) is detected and replaced. Each step that takes a while prints one line
on stderr saying what it did, with sizes and times.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from switchboard_devkit.paths import cache_dir, repo_root

KAFKA_HEAP = "512m"
JAVA_WHY = "the Kafka broker runs on Java 17+"


class ProvisionError(RuntimeError):
    """A local server could not be provisioned or started; the message says why."""


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def _require(tool: str, why: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ProvisionError(
            f"`{tool}` is not installed: {why}. `make infra-up` (or `make run`, `make test`) "
            f"installs it, or: sudo apt-get install {package}"
        )
    return path


@contextlib.contextmanager
def _step(what: str) -> Iterator[list[str]]:
    """One progress line for a slow step: what it does, then the details the step adds
    (sizes) and the time it took; the first run would otherwise be silent for a minute."""
    print(f"switchboard: {what} ...", end=" ", file=sys.stderr, flush=True)
    started = time.monotonic()
    details: list[str] = []
    try:
        yield details
    except BaseException:
        print("failed", file=sys.stderr, flush=True)
        raise
    details.append(f"{time.monotonic() - started:.1f}s")
    print(", ".join(details), file=sys.stderr, flush=True)


def _megabytes(*paths: Path) -> str:
    size = sum(p.stat().st_size for path in paths for p in [path, *path.rglob("*")] if p.is_file())
    return f"{size / 1e6:.1f} MB"


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
        with _step(f"{self.name}: starting on {self.host}:{self.port}") as done:
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
            done.append(f"ready (pid {process.pid}, logs in {self.state})")
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
    mvn = _require("mvn", "Maven resolves the Kafka broker's jars from Maven Central", "maven")
    _require("java", JAVA_WHY, "openjdk-17-jre-headless")
    tmp = lib.with_name("lib.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    with _step(f"kafka: resolving Apache Kafka {kafka_version()}'s jars with Maven") as done:
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
        done.append(f"{len(list(tmp.glob('*.jar')))} jars, {_megabytes(tmp)}")
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
            java = _require("java", JAVA_WHY, "openjdk-17-jre-headless")
            with _step("kafka: formatting the KRaft storage (first start only)"):
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
            _require("java", JAVA_WHY, "openjdk-17-jre-headless"),
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


# --------------------------------------------------------------------------- Go

#: The Go toolchain used when the machine has none new enough (Debian 12 ships Go 1.19):
#: the Go module proxy serves each release as the module ``golang.org/toolchain`` (what
#: ``GOTOOLCHAIN=auto`` downloads); the archives' SHA-256 are pinned here.
GO_TOOLCHAIN = "1.26.11"
GO_TOOLCHAIN_SHA256 = {
    "linux-amd64": "e1edb778de0aa08c8e827f5a873b35a46afe680fb241482c531725b2355e470d",
    "linux-arm64": "51902dab7e130b07083119a36ce09e0cc50fdd9d0d64184c24bd302072ad8b70",
}


def _release(version: str) -> tuple[int, ...]:
    """``go1.24.3`` or ``1.24`` -> (1, 24, 3) / (1, 24, 0); release candidates count as older."""
    numbers = version.removeprefix("go").split("rc")[0].split("beta")[0].split(".")
    parts = tuple(int(n) for n in numbers if n.isdigit())
    return (*parts, 0, 0)[:3]


def go_binary(minimum: str) -> str:
    """A Go of at least ``minimum``: the machine's when new enough, else the pinned
    toolchain from the Go module proxy (downloaded and checked once, then cached)."""
    found = shutil.which("go")
    if found is not None:
        result = subprocess.run(
            [found, "env", "GOVERSION"], capture_output=True, text=True, check=False, timeout=60
        )
        if result.returncode == 0 and _release(result.stdout.strip()) >= _release(minimum):
            return found
    if _release(GO_TOOLCHAIN) < _release(minimum):
        raise ProvisionError(f"Go {minimum} is needed; install it from https://go.dev/dl/")
    return str(_go_toolchain())


def _go_toolchain() -> Path:
    home = cache_dir() / "go" / GO_TOOLCHAIN
    go = home / "bin" / "go"
    if go.exists():
        return go
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower(), platform.machine()
    )
    target = f"{sys.platform}-{arch}"
    expected = GO_TOOLCHAIN_SHA256.get(target)
    if expected is None:
        raise ProvisionError(
            f"no pinned Go toolchain for {target}: install Go from https://go.dev/dl/"
        )
    proxy = os.environ.get("GOPROXY", "").split(",")[0].split("|")[0]
    proxy = proxy if proxy.startswith("https://") else "https://proxy.golang.org"
    version = f"v0.0.1-go{GO_TOOLCHAIN}.{target}"
    url = f"{proxy.rstrip('/')}/golang.org/toolchain/@v/{version}.zip"
    archive = home.with_name(f"{home.name}.zip.partial-{os.getpid()}")
    partial = home.with_name(f"{home.name}.partial-{os.getpid()}")
    home.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _step(f"go: fetching Go {GO_TOOLCHAIN} from the Go module proxy") as done:
            digest = hashlib.sha256()
            with urllib.request.urlopen(url, timeout=60) as response, archive.open("wb") as out:  # noqa: S310 - an https URL
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != expected:
                raise ProvisionError(f"{url}: SHA-256 {digest.hexdigest()}, expected {expected}")
            prefix = f"golang.org/toolchain@{version}/"
            with zipfile.ZipFile(archive) as bundle:
                for entry in bundle.infolist():
                    if entry.is_dir() or not entry.filename.startswith(prefix):
                        continue
                    path = partial / entry.filename.removeprefix(prefix)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with bundle.open(entry) as source, path.open("wb") as copy:
                        shutil.copyfileobj(source, copy)
                    path.chmod((entry.external_attr >> 16) & 0o777 or 0o644)
            done.append(f"{archive.stat().st_size / 1e6:.1f} MB")
        try:
            partial.rename(home)
        except OSError:  # another process finished first
            shutil.rmtree(partial, ignore_errors=True)
    except OSError as error:
        raise ProvisionError(f"cannot fetch Go {GO_TOOLCHAIN} from {url}: {error}") from None
    finally:
        archive.unlink(missing_ok=True)
        shutil.rmtree(partial, ignore_errors=True)
    return go


# --------------------------------------------------------------------------- FerretDB


def _go_directive(gomod: Path) -> str:
    """The ``go`` line of a go.mod: the oldest Go that builds the module."""
    for line in gomod.read_text().splitlines():
        if line.startswith("go "):
            return line.split()[1]
    return "1.21"


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
    go = go_binary(_go_directive(module / "go.mod"))
    home.mkdir(parents=True, exist_ok=True)
    # The Go chosen is new enough: no toolchain switch (it would need the checksum database).
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false", "GOTOOLCHAIN": "local"}
    with _step(
        f"ferretdb: fetching FerretDB {ferretdb_version()} from the Go module proxy"
    ) as done:
        source = _patched_ferretdb_source(go, module, home, env)
        done.append(f"{_megabytes(source)} of source, patched")
    modfile = home / "go.mod"
    modfile.write_text(
        (module / "go.mod").read_text() + f"\nreplace github.com/FerretDB/FerretDB => {source}\n"
    )
    shutil.copyfile(module / "go.sum", home / "go.sum")
    partial = binary.with_name(binary.name + ".partial")
    with _step("ferretdb: building the server with Go (first run only)") as done:
        _run(
            [go, "build", "-mod=mod", f"-modfile={modfile}", "-trimpath", "-o", str(partial), "."],
            cwd=module,
            env=env,
        )
        done.append(f"{_megabytes(partial)} binary")
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
