"""The gevent driver for gripcore (`gripcore serve --adapter gevent`; `pip install gripcore[gevent]`).

`run(config)` serves until SIGINT/SIGTERM; `Server` embeds the proxy in a gevent program (for
example next to a WSGI application on gevent's WSGIServer). No monkey-patching is required.
"""

from ._server import Server, run

__all__ = ["Server", "run"]
