"""Test servers' ports: each pytest-xdist worker has its own, none from the kernel's
ephemeral range, and a port someone holds is passed over."""

from __future__ import annotations

import itertools
import socket
from pathlib import Path

import pytest

from switchboard_devkit.running import inprocess
from switchboard_devkit.running.inprocess import free_port

pytestmark = pytest.mark.unit


def ports_of(worker: str, monkeypatch: pytest.MonkeyPatch, count: int = 50) -> set[int]:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
    return {free_port() for _ in range(count)}


def test_two_workers_never_share_a_port(monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = ports_of("gw0", monkeypatch), ports_of("gw1", monkeypatch)
    assert len(first) == len(second) == 50
    assert not first & second


def test_ports_are_below_the_ephemeral_range(monkeypatch: pytest.MonkeyPatch) -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for worker in ("", "gw0", "gw7"):
        assert all(port < low for port in ports_of(worker, monkeypatch))


def test_a_port_someone_holds_is_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw2")
    monkeypatch.setattr(inprocess, "_next_in_slice", itertools.count(0))
    held = free_port()
    monkeypatch.setattr(inprocess, "_next_in_slice", itertools.count(0))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", held))
        holder.listen()
        assert free_port() == held + 1
