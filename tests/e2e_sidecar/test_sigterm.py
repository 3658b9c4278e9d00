# SPDX-License-Identifier: Apache-2.0
"""SIGTERM stops the sidecar cleanly within a second, whatever its clients
and its poll interval are doing."""

import signal
import socket

import pytest

from sidecar_harness import LOCALHOST, now, raw_request, status_of


@pytest.mark.parametrize("slow", [False, True], ids=["defaults", "long-intervals"])
def test_sigterm_exits_0_within_1s(world, measure, slow):
    extra = ("--http-timeout", "10s") if slow else ()
    kw = {"poll_interval": "5s", "stall_after": "30s"} if slow else {}
    sc = world.sidecar(*extra, **kw)
    assert status_of(raw_request(sc.port, b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")) == 200

    # Clients that would hold a careless shutdown: an idle kept-alive
    # connection, a half-sent request, and a never-used connection.
    idle = socket.create_connection((LOCALHOST, sc.port))
    idle.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
    assert idle.recv(4096).startswith(b"HTTP/1.1 200")
    half = socket.create_connection((LOCALHOST, sc.port))
    half.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    silent = socket.create_connection((LOCALHOST, sc.admin_port))
    try:
        t0 = now()
        sc.signal(signal.SIGTERM)
        rc = sc.wait(5)
        took = now() - t0
    finally:
        for s in (idle, half, silent):
            s.close()
    measure("exit after SIGTERM", took * 1e3, "ms")
    assert rc == 0, sc.log_text()
    assert took < 1.0, took
    assert sc.logged("stopping", signal="Terminated"), sc.log_text()
    lines = [l.get("msg") for l in sc.lines()]
    assert lines[-1] == "stopped", lines
    # The ports are free again.
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((LOCALHOST, sc.port))
    s.close()


def test_sigint_too(world):
    sc = world.sidecar()
    sc.signal(signal.SIGINT)
    assert sc.wait(5) == 0
    assert sc.logged("stopped")


def test_other_signals_are_logged_and_ignored(world):
    """kill -HUP (or USR1, USR2, ALRM) does not kill a daemon: each is
    logged and ignored, and the sidecar goes on answering probes."""
    world.app()
    sc = world.sidecar()
    sc.wait_livez(200, timeout=10)
    for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM):
        sc.signal(sig)
        name = sig.name[3:]
        sc.wait_log("signal ignored", timeout=5, signal=name)
        assert sc.alive(), "%s killed the sidecar: %s" % (sig.name, sc.log_text())
        assert sc.livez().status == 200
    assert sc.stop() == 0
