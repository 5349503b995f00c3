"""The ASGI driver for gripcore: embedded mode (`GripMiddleware`), a GRIP proxy and broker
inside an ASGI application's own process. Public as `gripcore.asgi`."""

from ._middleware import GripMiddleware, current_middleware

__all__ = ["GripMiddleware", "current_middleware"]
