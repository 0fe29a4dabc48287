"""A node's tocsin run inside the harness process, beside the cluster's own processes.

For the faults that break one part of a running node while every process keeps running
(F16: the fan-out stuck; F17: the prober dead): only in-process can the harness reach
that part. The node's nats-server is still the cluster's child process.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from tocsin import app
from tocsin.cluster.local import LocalCluster
from tocsin.settings import Settings


@dataclass(slots=True)
class InProcessNode:
    cluster: LocalCluster
    name: str
    node: app.Node | None = None
    task: asyncio.Task[None] | None = field(default=None)

    async def start(self, timeout_s: float = 60.0) -> None:
        spec = self.cluster.spec(self.name)
        spec.data_dir.mkdir(parents=True, exist_ok=True)
        settings = Settings.from_env(self.cluster.node_env(spec), data_dir=spec.data_dir,
                                     listen=f"{spec.host}:{spec.http_port}")
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def started(node: app.Node) -> None:
            if not ready.done():
                ready.set_result(None)

        async def serve() -> None:
            async with app.open_node(settings) as node:
                self.node = node
                await app.run_node(node, started)

        self.task = asyncio.get_running_loop().create_task(serve(), name=f"inproc-{self.name}")
        async with asyncio.timeout(timeout_s):
            await asyncio.wait([self.task, ready], return_when=asyncio.FIRST_COMPLETED)
        if self.task.done():
            self.task.result()  # raises the reason it stopped
            raise RuntimeError(f"in-process {self.name} stopped during start")

    def task_named(self, prefix: str) -> asyncio.Task[object] | None:
        return next((t for t in asyncio.all_tasks() if t.get_name().startswith(prefix)), None)

    async def stop(self) -> None:
        if self.node is not None:
            self.node.server.should_exit = True
            if self.node.services.pipeline.follower.hold is not None:
                self.node.services.pipeline.follower.hold.set()
        if self.task is not None:
            try:
                async with asyncio.timeout(15):
                    await asyncio.shield(self.task)
            except (TimeoutError, Exception):
                self.task.cancel()
                with contextlib.suppress(BaseException):
                    await self.task
