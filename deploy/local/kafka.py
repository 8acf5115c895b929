"""A single-node KRaft Kafka broker from the jars on Maven Central.

The jars are resolved once by Maven (``deploy/kafka/pom.xml``) into ``.cache/kafka-<version>/``;
the broker's data, configuration and log live in the state directory.
"""

from __future__ import annotations

import base64
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KAFKA_VERSION = "3.9.1"
POM = ROOT / "deploy" / "kafka" / "pom.xml"
LOG4J = ROOT / "deploy" / "kafka" / "log4j.properties"


def jars_dir(cache: Path) -> Path:
    return cache / f"kafka-{KAFKA_VERSION}" / "libs"


def ensure_jars(cache: Path) -> Path:
    """Resolve the broker jars from Maven Central unless they are cached already."""
    libs = jars_dir(cache)
    marker = libs / ".complete"
    if marker.exists():
        return libs
    libs.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "mvn",
            "-B",
            "-q",
            "-f",
            str(POM),
            f"-Dmaven.repo.local={cache / 'm2'}",
            f"-Dkafka.version={KAFKA_VERSION}",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={libs}",
        ],
        check=True,
    )
    if not any(libs.glob(f"kafka_2.13-{KAFKA_VERSION}.jar")):
        raise RuntimeError(f"Maven did not produce the Kafka jars in {libs}")
    marker.write_text(KAFKA_VERSION)
    return libs


# How the broker behaves, wherever it runs; deploy/compose.yaml sets the same (a test compares)
BROKER_SETTINGS = {
    "num.partitions": "1",
    "auto.create.topics.enable": "false",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "10",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "10",
    "group.initial.rebalance.delay.ms": "0",
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": "5000",
    "log.retention.hours": "168",
    "log.segment.bytes": str(64 * 1024 * 1024),
}


@dataclass(frozen=True)
class SaslListener:
    """A second listener where users log in with PLAIN or SCRAM-SHA-256/512: SASL_PLAINTEXT,
    or SASL_SSL when ``tls`` names a PEM file with the broker's key and certificate chain."""

    port: int
    users: dict[str, str]  # user name -> password
    tls: Path | None = None

    @property
    def protocol(self) -> str:
        return "SASL_SSL" if self.tls is not None else "SASL_PLAINTEXT"

    def settings(self) -> dict[str, str]:
        plain_users = " ".join(f'user_{name}="{pw}"' for name, pw in self.users.items())
        prefix = f"listener.name.{self.protocol.lower()}"
        tls = (
            {f"{prefix}.ssl.keystore.type": "PEM", f"{prefix}.ssl.keystore.location": str(self.tls)}
            if self.tls is not None
            else {}
        )
        return {
            "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
            f"{prefix}.plain.sasl.jaas.config": (
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};"
            ),
            **{
                f"{prefix}.{mechanism}.sasl.jaas.config": (
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;"
                )
                for mechanism in ("scram-sha-256", "scram-sha-512")
            },
            **tls,
        }

    def format_args(self) -> list[str]:
        """``StorageTool format`` arguments that store the SCRAM credentials in the cluster."""
        return [
            arg
            for name, pw in self.users.items()
            for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512")
            for arg in ("--add-scram", f"{mechanism}=[name={name},password={pw}]")
        ]


@dataclass(frozen=True)
class KafkaNode:
    state_dir: Path
    port: int
    controller_port: int
    host: str = "127.0.0.1"
    sasl: SaslListener | None = None  # clients may also log in over SASL on a second port

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.state_dir / "kafka" / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "kafka" / "data"

    def write_config(self) -> None:
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        listeners = [f"PLAINTEXT://{self.host}:{self.port}"]
        protocols = ["CONTROLLER:PLAINTEXT", "PLAINTEXT:PLAINTEXT"]
        if self.sasl is not None:
            listeners.append(f"{self.sasl.protocol}://{self.host}:{self.sasl.port}")
            protocols.append(f"{self.sasl.protocol}:{self.sasl.protocol}")
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{self.host}:{self.controller_port}",
            "listeners": ",".join([*listeners, f"CONTROLLER://{self.host}:{self.controller_port}"]),
            "advertised.listeners": ",".join(listeners),
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": ",".join(protocols),
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data_dir),
            **(self.sasl.settings() if self.sasl is not None else {}),
            **BROKER_SETTINGS,
        }
        self.config_file.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))

    def format_storage(self, libs: Path) -> None:
        """Format the KRaft log directory once (kept across restarts)."""
        if (self.data_dir / "meta.properties").exists():
            return
        cluster_id = "-"
        while cluster_id.startswith("-"):  # as Kafka's own Uuid: "-x" would read as an option
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        subprocess.run(
            [
                "java",
                "-cp",
                f"{libs}/*",
                f"-Dlog4j.configuration=file:{LOG4J}",
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(self.config_file),
                *(self.sasl.format_args() if self.sasl is not None else []),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def argv(self, libs: Path, heap: str = "768m") -> list[str]:
        return [
            "java",
            f"-Xms{heap}",
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{LOG4J}",
            "-cp",
            f"{libs}/*",
            "kafka.Kafka",
            str(self.config_file),
        ]


def wait_for_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f}s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
