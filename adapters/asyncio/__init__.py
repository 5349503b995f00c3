"""The asyncio driver for gripcore (`gripcore serve --adapter asyncio`, the default).

`run(config)` serves until SIGINT/SIGTERM; `Server` embeds the proxy in a running event loop.
uvloop is used when installed (`pip install gripcore[uvloop]`).
"""

from ._server import Server, run

__all__ = ["Server", "run"]
