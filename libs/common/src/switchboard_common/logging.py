"""Logging, configured once per process: structlog over the standard library.

JSON lines when stderr is not a terminal (containers, CI), readable console output on a
TTY. Libraries that log through ``logging`` (FastStream, aiokafka, uvicorn) come out in
the same format. Personal data is redacted by a processor: values under personal keys
(sender, email, phone, text, subject, ...) are replaced, and email addresses and phone
numbers are masked wherever they appear in a string, tracebacks included (masked once
they are formatted: an exception's message often holds personal data). Bind ids instead
of formatting them into messages: ``log.info("assigned", conversation_id=cid)``.
"""

from __future__ import annotations

import io
import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, ExcInfo, Processor, WrappedLogger

EMAIL_RE = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
# E.164 with a plus, or a number written with separators like (555) 123-4567.
PHONE_RE = re.compile(
    r"(?<![\w+])\+\d[\d ()./-]{5,18}\d(?!\w)|(?<!\w)\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}(?!\w)"
)
REDACTED = "[redacted]"

#: Keys whose values are personal data whatever they look like.
PERSONAL_KEYS = frozenset(
    {
        "sender",
        "sender_value",
        "display_name",
        "email",
        "email_address",
        "phone",
        "phone_number",
        "address",
        "addresses",
        "recipient",
        "recipients",
        "mail_from",
        "rcpt_to",
        "from_",
        "to",
        "cc",
        "subject",
        "text",
        "full_text",
        "body",
        "identity",
        "identities",
        "wa_id",
        "username",
        "first_name",
        "last_name",
        "name",
    }
)


def redact_text(value: str) -> str:
    """Mask email addresses and phone numbers in free text."""
    return PHONE_RE.sub("[phone]", EMAIL_RE.sub("[email]", value))


def _redact(value: Any, depth: int = 0) -> Any:
    if depth > 5:
        return value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if str(k).lower() in PERSONAL_KEYS else _redact(v, depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact(v, depth + 1) for v in value]
    return value


def redact_personal_data(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """structlog processor: the safety net that keeps personal data out of logs."""
    for key in list(event_dict):
        if key.lower() in PERSONAL_KEYS:
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _redact(event_dict[key])
    return event_dict


def _drop_color_message(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # uvicorn duplicates its message with ANSI colours for its own formatter.
    event_dict.pop("color_message", None)
    return event_dict


def configure_logging(
    *,
    service: str,
    level: str = "INFO",
    fmt: Literal["auto", "json", "console"] = "auto",
    stream: Any = None,
) -> None:
    """Configure structlog and the standard library once, at process start.

    Idempotent: calling it again replaces the configuration (tests use that).
    """
    stream = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not getattr(stream, "isatty", bool)())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_color_message,
        redact_personal_data,
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(
            colors=getattr(stream, "isatty", bool)(), exception_formatter=_redacted_traceback
        )
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        # Extras first, so the shared processors (redaction included) see them too.
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Tracebacks become text only here, after the redaction step above: mask them
            # again (exception messages carry addresses and phone numbers too).
            *((structlog.processors.format_exc_info, _redact_exception) if use_json else ()),
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # FastStream installs its own stderr handler; route it through ours instead.
    for own in ("faststream",):
        library_logger = logging.getLogger(own)
        library_logger.handlers[:] = []
        library_logger.propagate = True
    # Chatty libraries: keep their warnings, not their per-request info.
    for noisy in ("aiokafka", "kafka", "pymongo", "uvicorn.access", "mail.log"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)


def _redact_exception(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    exception = event_dict.get("exception")
    if isinstance(exception, str):
        event_dict["exception"] = redact_text(exception)
    return event_dict


def _redacted_traceback(sio: TextIO, exc_info: ExcInfo) -> None:
    """The console renderer's traceback, plain (no locals) and masked like any text."""
    text = io.StringIO()
    structlog.dev.plain_traceback(text, exc_info)
    sio.write(redact_text(text.getvalue()))


def get_logger(name: str | None = None, **initial: Any) -> structlog.stdlib.BoundLogger:
    """A structlog logger; bind context with keyword arguments."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger.bind(**initial) if initial else logger


def bind(**context: Any) -> None:
    """Bind context (ids, never personal data) to every log line of this task."""
    structlog.contextvars.bind_contextvars(**context)


def redacted_mapping(values: MutableMapping[str, Any]) -> dict[str, Any]:
    """A copy of ``values`` with personal data redacted (for error reports)."""
    redacted: dict[str, Any] = _redact(dict(values))
    return redacted
