"""A gevent WSGI application with gripcore in the same process.

One program, two listeners: the WSGI app (gevent's WSGIServer) serves its own pages and is the
GRIP origin; gripcore (the gevent adapter) is the proxy in front of it. Browsers talk to
gripcore; a request handler publishes with `proxy.publish_sse(...)`: no second process, no HTTP
hop for publishing.

    pip install 'gripcore[gevent]'
    python examples/gevent_wsgi.py            # then open http://127.0.0.1:7999/

Routes: everything at gripcore's port goes to the app (`* 127.0.0.1:8000,over_http`).
    GET  /         the page (passed through gripcore untouched)
    GET  /events   answered with a GRIP stream hold on channel "chat": gripcore keeps it open
    POST /say      form field `text`: published to "chat" from inside the handler
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from gevent.pywsgi import WSGIServer

from gripcore import Config
from gripcore.adapters.gevent import Server
from gripcore.origin import hold_stream

PAGE = """<!doctype html>
<meta charset="utf-8"><title>gripcore + gevent</title>
<h1>Chat</h1>
<form method="post" action="/say" onsubmit="say(event)">
  <input name="text" autofocus> <button>Say</button>
</form>
<ul id="log"></ul>
<script>
  const log = document.getElementById("log");
  new EventSource("/events").onmessage = (e) => {
    const li = document.createElement("li"); li.textContent = e.data; log.append(li);
  };
  function say(event) {
    event.preventDefault();
    fetch("/say", {method: "POST", body: new URLSearchParams(new FormData(event.target))});
    event.target.reset();
  }
</script>
"""

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def make_app(proxy: Server) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path, method = environ["PATH_INFO"], environ["REQUEST_METHOD"]
        if path == "/" and method == "GET":
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [PAGE.encode()]
        if path == "/events" and method == "GET":
            status, headers, body = hold_stream(
                "chat", headers=[("Content-Type", "text/event-stream")], keep_alive=":\n\n"
            )
            start_response(f"{status} OK", headers)
            return [body]
        if path == "/say" and method == "POST":
            size = int(environ.get("CONTENT_LENGTH") or 0)
            form = parse_qs(environ["wsgi.input"].read(min(size, 10_000)).decode())
            text = form.get("text", [""])[0].strip()
            if not text:
                start_response("400 Bad Request", [("Content-Type", "text/plain")])
                return [b"text is required\n"]
            proxy.publish_sse("chat", html.escape(text))  # delivered before this returns
            start_response("204 No Content", [])
            return []
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]

    return app


def start(
    host: str = "127.0.0.1", proxy_port: int = 7999, app_port: int = 8000, publish_port: int = 5561
) -> tuple[Server, WSGIServer]:
    """Start both listeners in the current gevent hub; returns (proxy, wsgi_server)."""
    wsgi = WSGIServer((host, app_port), None, log=None)
    wsgi.init_socket()  # bind first: with app_port=0 the route needs the port it got
    config = Config(
        listen=((host, proxy_port),),
        publish_listen=(host, publish_port),
        routes=(f"* {host}:{wsgi.server_port},over_http",),
    )
    proxy = Server(config)
    proxy.start()
    wsgi.application = make_app(proxy)
    wsgi.start()
    return proxy, wsgi


def main() -> None:
    proxy, wsgi = start()
    print(f"open http://127.0.0.1:{proxy.listen_addresses[0][1]}/  (Ctrl-C to stop)")
    try:
        wsgi.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        proxy.close()


if __name__ == "__main__":
    main()
