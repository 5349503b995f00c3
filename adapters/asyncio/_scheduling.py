"""The node's requests on a running asyncio loop, shared by `gripcore serve`'s asyncio driver
and the embedded ASGI mode: a flush pass soon, and the broker's timer."""

from __future__ import annotations

import asyncio

from gripcore._node import ProxyNode

__all__ = ["LoopScheduling"]


class LoopScheduling:
    """Mixed into a driver that has a `node`; it sets `node.schedule_flush` and
    `node.set_broker_timer` to these methods."""

    node: ProxyNode
    _broker_timer: asyncio.TimerHandle | None = None

    def _schedule_flush(self) -> None:
        asyncio.get_running_loop().call_soon(self.node.flush_pass)

    def _set_broker_timer(self, deadline: float | None) -> None:
        if self._broker_timer is not None:
            self._broker_timer.cancel()
            self._broker_timer = None
        if deadline is not None:
            loop = asyncio.get_running_loop()
            self._broker_timer = loop.call_at(deadline, self._on_broker_timer)

    def _on_broker_timer(self) -> None:
        self._broker_timer = None
        self.node.handle_broker_timer()
