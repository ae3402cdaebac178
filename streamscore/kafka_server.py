"""Apache Kafka (KRaft, combined broker+controller nodes) from Maven jars, on free loopback ports."""

from __future__ import annotations

import asyncio
import base64
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamscore.embedded import free_port, port_open, spawn, stop_process
from streamscore.kafka_classpath import resolve_classpath
from streamscore.kafka_tls import make_broker_tls

LOG4J2 = """\
status = error
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.log.name = kafka.log
logger.log.level = WARN
logger.storage.name = org.apache.kafka.storage
logger.storage.level = WARN
logger.change.name = state.change.logger
logger.change.level = WARN
"""

# Fast start and fast tests on a small machine: no rebalance delay, few internal partitions, a killed
# broker fenced after 6 s, leaders moved back to restarted brokers within seconds, few threads.
TUNING = {
    "group.initial.rebalance.delay.ms": "0",
    "offsets.topic.num.partitions": "10",
    "transaction.state.log.num.partitions": "10",
    "broker.heartbeat.interval.ms": "1000",
    "broker.session.timeout.ms": "6000",
    "leader.imbalance.check.interval.seconds": "5",
    "num.network.threads": "2",
    "num.io.threads": "4",
    "num.recovery.threads.per.data.dir": "2",
    "background.threads": "4",
    "auto.create.topics.enable": "false",
}


def _cluster_id() -> str:
    """A KRaft cluster id as Kafka's Uuid.randomUuid makes it (base64url, no leading '-'), without a JVM."""
    while True:
        text = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _tail(path: Path, lines: int = 20) -> str:
    """A log's first ERROR lines (the cause; what follows is mostly shutdown) and its last lines."""
    if not path.is_file():
        return "(no log)"
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    errors = [line for line in text[:-lines] if "] ERROR " in line or "] FATAL " in line][:3]
    return "\n".join([*errors, *(["..."] if errors else []), *text[-lines:]])


@dataclass
class KafkaNode:
    """One combined broker+controller: its id, ports, files and process."""

    node_id: int
    home: Path
    client_port: int = field(default_factory=free_port)
    internal_port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> Path:
        return self.home / f"node-{self.node_id}.properties"

    @property
    def data(self) -> Path:
        return self.home / f"data-{self.node_id}"

    @property
    def log_path(self) -> Path:
        return self.home / f"node-{self.node_id}.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class KafkaCluster:
    """N KRaft nodes (1 or 3) in a temp dir; optionally a SASL_SSL (SCRAM-SHA-512) client listener.

    Replication and controller traffic stay PLAINTEXT on loopback. Transactions work on any node count.
    """

    nodes: int = 1
    secure: bool = False
    home: Path | None = None
    heap: str = "512m"
    username: str = "streamscore"
    password: str = field(default_factory=lambda: secrets.token_hex(12))
    members: list[KafkaNode] = field(default_factory=list)
    cafile: Path | None = None
    _owns_home: bool = False
    _classpath: str = ""

    def __post_init__(self) -> None:
        if self.nodes not in (1, 3):
            raise ValueError(f"nodes must be 1 or 3, not {self.nodes}")
        if self.home is None:
            self.home, self._owns_home = Path(tempfile.mkdtemp(prefix="streamscore-kafka-")), True
        self.members = [KafkaNode(node_id, self.home) for node_id in range(1, self.nodes + 1)]

    @property
    def bootstrap(self) -> str:
        """Every node's client listener, comma-separated."""
        return ",".join(node.address for node in self.members)

    @property
    def security_protocol(self) -> str:
        """The client listener's protocol."""
        return "SASL_SSL" if self.secure else "PLAINTEXT"

    def client_options(self) -> dict[str, Any]:
        """aiokafka keyword arguments for the client listener (bootstrap, TLS and SASL when secure)."""
        options: dict[str, Any] = {"bootstrap_servers": self.bootstrap}
        if self.secure:
            from aiokafka.helpers import create_ssl_context

            options.update(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                           sasl_plain_username=self.username, sasl_plain_password=self.password,
                           ssl_context=create_ssl_context(cafile=str(self.cafile)))
        return options

    def _properties(self, node: KafkaNode, keystore: Path | None) -> str:
        replicas = str(self.nodes)
        min_isr = str(min(2, self.nodes))
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.members)
        settings = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "INTERNAL",
            "listeners": f"CLIENT://127.0.0.1:{node.client_port},INTERNAL://127.0.0.1:{node.internal_port},"
                         f"CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"CLIENT://127.0.0.1:{node.client_port},"
                                    f"INTERNAL://127.0.0.1:{node.internal_port}",
            "listener.security.protocol.map": f"CLIENT:{self.security_protocol},INTERNAL:PLAINTEXT,"
                                              "CONTROLLER:PLAINTEXT",
            "log.dirs": str(node.data),
            "default.replication.factor": replicas,
            "min.insync.replicas": min_isr,
            "offsets.topic.replication.factor": replicas,
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min_isr,
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": min_isr,
            **TUNING,
        }
        if self.secure and keystore is not None:
            settings.update({
                "sasl.enabled.mechanisms": "SCRAM-SHA-512",
                "listener.name.client.scram-sha-512.sasl.jaas.config":
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                "listener.name.client.ssl.keystore.type": "PKCS12",
                "listener.name.client.ssl.keystore.location": str(keystore),
                "listener.name.client.ssl.keystore.password": self.password,
                "listener.name.client.ssl.key.password": self.password,
            })
        return "".join(f"{key}={value}\n" for key, value in settings.items())

    def _java(self, main: str, *args: str) -> list[str]:
        return ["java", f"-Xmx{self.heap}", "-Xms64m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={self.home}/log4j2.properties",
                "-cp", self._classpath, main, *args]

    def start(self, timeout_s: float = 90.0) -> KafkaCluster:
        """Write the configs, format every node's log dir, start all nodes and wait until they serve.

        On any failure every node is stopped (and a temp dir removed) before the error propagates.
        """
        try:
            self._format()
            for node in self.members:
                self._spawn(node)
            self.wait_ready(timeout_s=timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _format(self) -> None:
        """Configs, TLS material and one formatted log dir per node (SCRAM user added when secure)."""
        assert self.home is not None
        self._classpath = resolve_classpath()
        (self.home / "log4j2.properties").write_text(LOG4J2, encoding="utf-8")
        keystore = None
        if self.secure:
            tls = make_broker_tls(self.home / "tls", self.password)
            self.cafile, keystore = tls.cafile, tls.keystore
        cluster_id = _cluster_id()
        scram = (["--add-scram", f"SCRAM-SHA-512=[name={self.username},password={self.password}]"]
                 if self.secure else [])
        for node in self.members:
            node.config.write_text(self._properties(node, keystore), encoding="utf-8")

        def format_node(node: KafkaNode) -> subprocess.CompletedProcess[str]:
            argv = self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(node.config),
                              "--ignore-formatted", *scram)
            return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)

        with ThreadPoolExecutor(len(self.members)) as pool:  # one JVM each: format side by side
            formatted = list(pool.map(format_node, self.members))
        for node, result in zip(self.members, formatted, strict=True):
            if result.returncode != 0:
                raise RuntimeError(f"formatting Kafka node {node.node_id} failed:\n"
                                   f"{(result.stdout + result.stderr).strip()[-2000:]}")

    def _spawn(self, node: KafkaNode) -> None:
        with node.log_path.open("ab") as log:
            node.process = spawn(self._java("kafka.Kafka", str(node.config)), log=log,
                                 death_signal=signal.SIGKILL)

    def _node(self, node_id: int) -> KafkaNode:
        for node in self.members:
            if node.node_id == node_id:
                return node
        raise ValueError(f"no Kafka node {node_id} (nodes are 1..{self.nodes})")

    def wait_ready(self, node_ids: list[int] | None = None, timeout_s: float = 90.0) -> None:
        """Block until each given running node (default: all running) answers a metadata request that lists
        every running node as a live broker; raise with the log's last lines if a node exits or time runs out.
        """
        nodes = [self._node(i) for i in node_ids] if node_ids else [n for n in self.members if n.running]
        deadline = time.monotonic() + timeout_s
        for node in nodes:
            while True:
                if not node.running:
                    raise RuntimeError(f"Kafka node {node.node_id} exited; last lines of {node.log_path}:\n"
                                       f"{_tail(node.log_path)}")
                expected = {n.node_id for n in self.members if n.running}
                if expected <= self._live_brokers(node):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"Kafka node {node.node_id} not ready after {timeout_s:.0f}s; last "
                                       f"lines of {node.log_path}:\n{_tail(node.log_path)}")
                time.sleep(0.25)

    def _live_brokers(self, node: KafkaNode) -> set[int]:
        """Broker ids in the metadata this node serves (empty when it does not answer yet)."""
        if not port_open("127.0.0.1", node.client_port):
            return set()  # not listening yet: spare aiokafka's connection-error log lines
        options = {**self.client_options(), "bootstrap_servers": node.address}

        async def probe() -> set[int]:
            from aiokafka.client import AIOKafkaClient

            client = AIOKafkaClient(request_timeout_ms=3000, **options)
            try:
                await asyncio.wait_for(client.bootstrap(), 5)
                return {broker.nodeId for broker in client.cluster.brokers()}
            except Exception:
                return set()
            finally:
                await client.close()

        with ThreadPoolExecutor(1) as pool:  # its own loop: callers may be inside a running one
            return pool.submit(asyncio.run, probe()).result()

    def kill(self, node_id: int) -> None:
        """SIGKILL one node (its data dir and ports stay for restart)."""
        node = self._node(node_id)
        stop_process(node.process, sig=signal.SIGKILL)
        node.process = None

    def stop_node(self, node_id: int, timeout_s: float = 60.0) -> None:
        """Controlled shutdown of one node (SIGTERM: leaders move away first)."""
        node = self._node(node_id)
        stop_process(node.process, timeout=timeout_s)
        node.process = None

    def restart(self, node_id: int, timeout_s: float = 90.0) -> None:
        """Start a stopped or killed node again on the same data dir and ports, and wait until it serves."""
        node = self._node(node_id)
        if node.running:
            self.stop_node(node_id)
        self._spawn(node)
        self.wait_ready([node_id], timeout_s=timeout_s)

    def stop(self) -> None:
        """Stop every node at once and remove the temp dir it made (SIGKILL then: its data is discarded).

        Nodes of a kept home get SIGTERM side by side: one after another, the last ones would wait for a
        controller quorum that is gone.
        """
        sig = signal.SIGKILL if self._owns_home else signal.SIGTERM
        with ThreadPoolExecutor(len(self.members)) as pool:
            list(pool.map(lambda node: stop_process(node.process, sig=sig, timeout=30), self.members))
        for node in self.members:
            node.process = None
        if self._owns_home and self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)
