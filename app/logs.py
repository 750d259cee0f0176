"""Logging for the service's processes: plain lines for a terminal, or one JSON object per line
(``MODELEDIT_LOG_FORMAT=json``, ``--log-format json``) for a log collector.

Each JSON line has ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``process`` (serve, api or
worker: the process name), ``message`` and, for an exception, ``exception`` (the traceback as
text). uvicorn's own loggers (startup, access lines) go through the same handler, so a collector
gets JSON from every line of every process.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record; the message is data (``json.dumps`` escapes it), so user
    text in a log line cannot forge another line."""

    def __init__(self, process: str = "") -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "process": self.process or record.processName,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not the stream it was
    when logging was configured: a process that swaps stderr (a test capturing it, a
    daemoniser) never has records written to a closed stream."""

    @property
    def stream(self):  # noqa: ANN201 - a text stream
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def configure_logging(level: str, log_format: str = "text", process: str = "") -> None:
    """Configure the root logger of this process (``process`` names it in JSON lines)."""
    handler = _StderrHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter(process))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    if log_format == "json":
        _quiet_transformers()


def _quiet_transformers() -> None:
    """transformers writes progress bars and has a handler of its own: in JSON mode its records
    go to the root handler and the bars are off (a bar is no JSON line)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # the supervisor (`serve`) runs without transformers loaded: fine
        return
    hf_logging.disable_progress_bar()
    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()
