"""``make run``: real Kafka and MongoDB-wire server plus every service, in the foreground.

Servers come from the environment, Docker or local provisioning (see ``infra``). Every
service in ``services/`` with a ``__main__`` runs as its own process with the caller's
environment (``SWITCHBOARD_ENV=dev`` unless set), its output prefixed with its name.
Once they are ready, Debian's Prometheus (when installed) scrapes them on 127.0.0.1:9090
with the shipped rules (see ``monitoring``). Unless ``OUTBOUND_SMTP_URL`` is set, a
local mail sink takes the replies and acknowledgements sent by email and keeps each as a
file in ``.run/outbox/`` (``make demo`` shows them). Ctrl-C (or SIGTERM) stops Prometheus, the
services, then the servers this command started. If a service exits on its own,
everything stops and the exit status says so.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time

from switchboard_devkit.running.processes import (
    ServiceProcess,
    discover_services,
    outbox_dir,
    service_environment,
)
from switchboard_devkit.servers.infra import ensure_infra
from switchboard_devkit.servers.local import ProvisionError
from switchboard_devkit.servers.monitoring import LocalPrometheus
from switchboard_devkit.servers.relay import LocalRelay


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchboard-run", description=__doc__)
    parser.add_argument("--only", nargs="*", help="run only these services")
    parser.add_argument("--no-prometheus", action="store_true", help="do not start Prometheus")
    args = parser.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    try:
        infra = ensure_infra(create_contract_topics=True)
    except ProvisionError as error:
        print(f"switchboard-run: {error}", file=sys.stderr)
        return 2
    print(f"infra: {infra.kafka_description}; {infra.mongodb_description}", flush=True)
    env = service_environment()
    env.update(infra.env())
    sink = mail_sink(env)
    specs = [s for s in discover_services() if not args.only or s.name in args.only]
    if not specs:
        print("no services found under services/", file=sys.stderr)
    processes = [ServiceProcess(spec, env, output=sys.stdout) for spec in specs]
    prometheus = LocalPrometheus({p.spec.name: [f"127.0.0.1:{p.http_port}"] for p in processes})
    status = 0
    try:
        for process in processes:
            process.start()
        for process in processes:
            process.wait_ready(timeout=90)
            print(f"ready: {process.spec.name} on {process.base_url}", flush=True)
        if not args.no_prometheus:
            print(prometheus.start(), flush=True)
        print("all services ready; Ctrl-C stops everything", flush=True)
        while not stop.is_set():
            for process in processes:
                assert process.process is not None
                if process.process.poll() is not None:
                    print(
                        f"{process.spec.name} exited with {process.process.returncode}; "
                        "stopping everything",
                        file=sys.stderr,
                    )
                    status = 1
                    stop.set()
            time.sleep(0.5)
    except RuntimeError as error:
        print(f"switchboard-run: {error}", file=sys.stderr)
        status = 1
    finally:
        prometheus.stop()
        for process in reversed(processes):
            process.stop()
        sink.close()
        infra.close()
        print("stopped", flush=True)
    return status


def mail_sink(env: dict[str, str]) -> contextlib.ExitStack:
    """Unless ``env`` names a relay, a local one that keeps what it gets in
    ``.run/outbox`` (closed with the returned stack)."""
    sink = contextlib.ExitStack()
    if not env.get("OUTBOUND_SMTP_URL"):
        relay = sink.enter_context(LocalRelay.started(outbox=outbox_dir()))
        env["OUTBOUND_SMTP_URL"] = f"{relay.url}?tls=none"  # the same host: no TLS needed
        print(
            f"mail sink: {relay.url} keeps the mail Switchboard sends in {outbox_dir()} "
            "(set OUTBOUND_SMTP_URL to use a real relay)",
            flush=True,
        )
    return sink


if __name__ == "__main__":
    raise SystemExit(main())
