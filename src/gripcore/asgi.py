"""Embedded mode: `GripMiddleware(app)` runs the GRIP proxy and the broker inside an ASGI
application's own process (docs/asgi.md). The driver lives in `gripcore.adapters.asgi`; this
module only names it, so that `from gripcore.asgi import GripMiddleware` reads as the feature.
"""

from __future__ import annotations

from gripcore.adapters.asgi import GripMiddleware, current_middleware

__all__ = ["GripMiddleware", "current_middleware"]
