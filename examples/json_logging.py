"""One JSON object per log line, with the structured fields asgi_bgtasks
attaches to every record about a task (``task``, ``outcome``, ``attempt``,
``duration``; ``tasks`` on the one-line summary of a failed request's
dropped tasks). Standard library only: plug the same fields into
python-json-logger or structlog's ``ProcessorFormatter`` the same way.
"""

import json
import logging

TASK_FIELDS = ("task", "tasks", "outcome", "attempt", "duration")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry |= {f: getattr(record, f) for f in TASK_FIELDS if hasattr(record, f)}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def log_json() -> None:
    """Send the asgi_bgtasks logger's records to stderr as JSON lines."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logging.getLogger("asgi_bgtasks").addHandler(handler)
