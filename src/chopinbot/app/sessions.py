"""Visitor sessions in the server log: a short id per session, on every line about it."""

from __future__ import annotations

import logging
import uuid

LOGGER_NAME = "chopinbot.app"  # session lines; the app's modules log under its children (chopinbot.app.pool, ...)


def new_session_id() -> str:
    """A short random id for a visitor's session (it appears in every server log line about it)."""
    return uuid.uuid4().hex[:12]


class _SessionAdapter(logging.LoggerAdapter):
    def process(self, msg, kwargs):
        return f"[session {self.extra['session']}] {msg}", kwargs


def session_log(session_id: str) -> logging.LoggerAdapter:
    """A logger whose lines start with ``[session <id>]``."""
    return _SessionAdapter(logging.getLogger(LOGGER_NAME), {"session": session_id})


def configure_logging(level: int = logging.INFO) -> None:
    """Send the app's log lines to stderr (once), unless logging is already configured."""
    lg = logging.getLogger("chopinbot")
    if lg.level == logging.NOTSET:
        lg.setLevel(level)
    if not lg.handlers and not logging.getLogger().handlers:
        h = logging.StreamHandler()
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        lg.addHandler(h)
