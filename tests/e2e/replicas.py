"""Replicas of one service as separate processes, the way `make up` runs them, sharing a
consumer group, a set of topics and a database of their own."""

from __future__ import annotations

import uuid

from deploy.local.kafka import free_port
from deploy.local.processes import Managed
from deploy.local.stack import LocalStack
from shared.settings import TopicSettings


class Replicas:
    def __init__(
        self,
        stack: LocalStack,
        service: str,
        topics: TopicSettings,
        env: dict[str, str] | None = None,
    ) -> None:
        self.stack, self.service = stack, service
        self.prefix = f"UPKEEP_{service.upper()}_"
        self.tag = uuid.uuid4().hex[:6]
        self.database = f"e2e_{self.tag}"
        self.group = f"{service}-e2e-{self.tag}"  # the replicas' consumer group
        self.env = {f"UPKEEP_TOPIC_{k.upper()}": v for k, v in topics.model_dump().items()}
        self.env |= {
            self.prefix + "CONSUMER_GROUP": self.group,
            self.prefix + "BATCH_TIMEOUT_MS": "50",
            "UPKEEP_MONGO_DATABASE": self.database,
            **(env or {}),
        }
        self.started: list[Managed] = []
        self.urls: dict[str, str] = {}

    def start(self, replica: str, ready_timeout: float = 60) -> Managed:
        """Start (or restart) a replica; its port and instance id stay the same across restarts."""
        port = self.urls.get(replica, "").rsplit(":", 1)[-1] or str(free_port())
        self.urls[replica] = f"http://127.0.0.1:{port}"
        proc = self.stack.start_service(
            self.service,
            name=f"{self.service}-{self.tag}-{replica}",
            env={
                **self.env,
                self.prefix + "HTTP_PORT": port,
                self.prefix + "INSTANCE_ID": f"{self.tag}-{replica}",
            },
        )
        self.started.append(proc)
        self.stack.wait_ready(self.urls[replica], timeout=ready_timeout, proc=proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.started:
            proc.stop(timeout=20)
