"""`streamscore api --workers N`: N uvicorn processes serving one host:port through SO_REUSEPORT.

Each worker is a fresh interpreter (nothing is forked after TensorFlow or XGBoost load) that binds a
socket of its own with SO_REUSEPORT; the kernel spreads new connections over the workers that listen.
The parent only supervises: it relays a stop to every worker and waits for them, and when a worker
ends on its own it stops the others and exits non-zero, so the API never runs at part capacity unseen.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

from infra.logging import configure_logging
from ingest_api.auth.tokens import dev_key_env
from ingest_api.settings import ApiSettings

log = logging.getLogger(__name__)

STARTUP_FAILURE = 3  # uvicorn's exit code when a server cannot start
WORKER_MAIN = "from ingest_api.workers import worker_main; worker_main()"
# How a worker that was asked to stop ends: uvicorn re-raises the signal once it has shut down.
STOPPED = frozenset({0, -signal.SIGTERM, -signal.SIGINT})
POLL_S = 0.2
_PR_SET_PDEATHSIG = 1


def serve(host: str, port: int, workers: int | None = None) -> int:
    """Serve the API; `workers` (default STREAMSCORE_API_WORKERS) of 1 is exactly `ingest_api.main.run`."""
    count = workers if workers is not None else ApiSettings().api_workers
    if count == 1:
        from ingest_api.main import run

        run(host=host, port=port)
        return 0
    return supervise(host, port, count)


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port that the other workers bind too; uvicorn makes it listen."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def worker_main() -> None:
    """One worker process (argv: host port): bind its socket, build the app, serve until stopped."""
    host, port = sys.argv[1], int(sys.argv[2])
    # The parent relays every stop as SIGTERM. A terminal's Ctrl-C reaches this process group too and
    # must not end a worker mid-import with a traceback; uvicorn handles SIGINT itself while serving.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import uvicorn

    from ingest_api.main import create_app, prepare_process, server_options

    settings = prepare_process()
    try:
        # Bound now, listening only once the app is ready: until then no connection is routed here.
        sock = reuseport_socket(host, port)
    except OSError as error:
        log.error("api worker cannot bind", extra={"host": host, "port": port, "error": str(error)})
        sys.exit(STARTUP_FAILURE)
    config = uvicorn.Config(create_app(settings), host=host, port=port, **server_options(settings))
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def supervise(host: str, port: int, count: int, command: Sequence[str] | None = None) -> int:
    """Run `count` workers (`command` + host, port) until a stop signal; 0 if all then stopped cleanly."""
    configure_logging("INFO", service="api")
    try:
        port = _free_port(host, port)
    except OSError as error:
        log.error("cannot serve the API on this address", extra={"host": host, "port": port,
                                                                  "error": str(error)})
        return STARTUP_FAILURE
    argv = [*(command or (sys.executable, "-c", WORKER_MAIN)), host, str(port)]
    # Dev mode generates a missing JWT key per process: generated once here, every worker accepts its tokens.
    env = {**os.environ, **dev_key_env(ApiSettings())}
    workers: list[subprocess.Popen[bytes]] = []
    stopping = False

    def stop(signum: int = 0, frame: FrameType | None = None) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            _terminate(worker)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for _ in range(count):
            if stopping:
                break
            workers.append(subprocess.Popen(argv, env=env, preexec_fn=_die_with_parent))
            if stopping:  # the signal came while it was being started
                _terminate(workers[-1])
        log.info("api workers started", extra={"pids": [w.pid for w in workers], "host": host, "port": port})
        failed: subprocess.Popen[bytes] | None = None
        while True:
            codes = [worker.poll() for worker in workers]
            if not stopping and any(code is not None for code in codes):
                failed = next(w for w, code in zip(workers, codes, strict=True) if code is not None)
                log.error("api worker exited on its own; stopping the others",
                          extra={"pid": failed.pid, "exit_code": failed.returncode})
                stop()
            if None not in codes:
                break
            time.sleep(POLL_S)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failed is not None:
        return failed.returncode if failed.returncode > 0 else 1
    exits = {str(w.pid): w.returncode for w in workers}
    clean = set(exits.values()) <= STOPPED
    (log.info if clean else log.error)("api workers stopped", extra={"exit_codes": exits, "clean": clean})
    return 0 if clean else 1


def _free_port(host: str, port: int) -> int:
    """The port (0: a free one), refused if something listens there: SO_REUSEPORT would share it."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        bound: int = probe.getsockname()[1]
        return bound


def _terminate(worker: subprocess.Popen[bytes]) -> None:
    # Always SIGTERM: a second SIGINT is uvicorn's force quit, which skips the lifespan's drain, and
    # a terminal's Ctrl-C already sends the workers one SIGINT of its own.
    with contextlib.suppress(ProcessLookupError):
        worker.send_signal(signal.SIGTERM)


def _die_with_parent() -> None:
    # Runs in the child before exec: a supervisor killed outright (SIGKILL) must not leave workers serving.
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
