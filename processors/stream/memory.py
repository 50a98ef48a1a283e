"""In-memory stand-ins for the stages' table, producer and view: for fast tests of a stage and for the
in-process state benchmark. They keep what a broker would (every changelog and topic record, in order)
so tests can read it back."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, field

from processors.sinks.redis_view import AccountView


def _done() -> Awaitable[object]:
    fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    fut.set_result(None)
    return fut


@dataclass
class MemoryTable:
    data: dict[bytes, bytes] = field(default_factory=dict)
    changelog: list[tuple[int, bytes, bytes | None]] = field(default_factory=list)  # (partition, key, value)

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def items(self) -> Iterable[tuple[bytes, bytes]]:
        return list(self.data.items())

    async def write(self, partition: int, key: bytes, value: bytes | None) -> Awaitable[object]:
        if value is None:
            self.data.pop(key, None)
        else:
            self.data[key] = value
        self.changelog.append((partition, key, value))
        return _done()


@dataclass
class Sent:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]
    partition: int | None


@dataclass
class MemoryProducer:
    sent: list[Sent] = field(default_factory=list)

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> Awaitable[object]:
        self.sent.append(Sent(topic, key, value, dict(headers or []), partition))
        return _done()

    def on(self, topic: str) -> list[Sent]:
        return [s for s in self.sent if s.topic == topic]


@dataclass
class MemoryView:
    """Records what was written; `down` makes it fail as an unreachable Redis does."""

    writes: list[tuple[list[AccountView], list[str], list[str]]] = field(default_factory=list)
    down: bool = False

    async def write(
        self, accounts: Sequence[AccountView], rejected: Iterable[str] = (), latest: Sequence[str] = ()
    ) -> None:
        if self.down:
            raise ConnectionError("Redis is down")
        self.writes.append((list(accounts), list(rejected), list(latest)))
