"""Names the extension and the reference system share, in one place that imports nothing.

The extension (settings, CLI) reads them without the reference system's dependencies
installed; the server's modules (app/auth.py) import them from here too.
"""

__all__ = ["TOKEN_ENV"]

# The admin token, when given rather than generated (the system then writes none).
TOKEN_ENV = "CHAOSEMERGENCE_ADMIN_TOKEN"
