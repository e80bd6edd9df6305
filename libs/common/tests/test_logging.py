from __future__ import annotations

import io
import json
import logging

import pytest

from switchboard_common.logging import configure_logging, get_logger, redact_text

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("from ana.lopez+vip@example.co.uk today", "from [email] today"),
        ("call +34 600 111 222 now", "call [phone] now"),
        ("whatsapp:+34600111222", "whatsapp:[phone]"),
        ("US (555) 123-4567 or 555-123-4567", "US [phone] or [phone]"),
        ("offset 1234567 partition 3 at 2026-03-02T09:30:00Z", None),
    ],
)
def test_redact_text_masks_addresses_and_phone_numbers(text: str, expected: str | None) -> None:
    assert redact_text(text) == (expected if expected is not None else text)


def _capture(fmt: str = "json") -> io.StringIO:
    stream = io.StringIO()
    configure_logging(service="tests", level="DEBUG", fmt=fmt, stream=stream)  # type: ignore[arg-type]
    return stream


def test_json_logs_redact_personal_keys_and_values() -> None:
    stream = _capture()
    get_logger("t").info(
        "message from customer ana@example.com",
        conversation_id="c-1",
        sender="ana@example.com",
        text="my phone is +34 600 111 222",
        details={"display_name": "Ana López", "note": "reach me at +44 7700 900123"},
    )
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["event"] == "message from customer [email]"
    assert line["conversation_id"] == "c-1"
    assert line["sender"] == "[redacted]"
    assert line["text"] == "[redacted]"
    assert line["details"] == {"display_name": "[redacted]", "note": "reach me at [phone]"}
    assert line["service"] == "tests"
    assert line["level"] == "info"
    assert "ana@example.com" not in stream.getvalue()


def test_standard_library_loggers_share_the_format_and_redaction() -> None:
    stream = _capture()
    logging.getLogger("faststream.test").warning("delivery to bob@example.org failed")
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["event"] == "delivery to [email] failed"
    assert line["logger"] == "faststream.test"


def test_console_format_is_readable_text() -> None:
    stream = _capture("console")
    get_logger("t").info("hello", conversation_id="c-2")
    out = stream.getvalue()
    assert "hello" in out
    assert "conversation_id" in out
    with pytest.raises(json.JSONDecodeError):
        json.loads(out.strip().splitlines()[-1])


def test_library_extras_are_redacted_and_uvicorns_colour_copy_dropped() -> None:
    stream = _capture()
    logging.getLogger("uvicorn.error").warning(
        "Started server process [%d]",
        42,
        extra={
            "color_message": "Started server process [\x1b[36m%d\x1b[0m]",
            "client": "carol@example.com",
        },
    )
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["event"] == "Started server process [42]"
    assert "color_message" not in line
    assert line["client"] == "[email]"


def _fail_with_personal_data() -> None:
    raise ValueError("no customer for ana@example.com, tel. +34 600 111 222")


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_tracebacks_are_redacted_after_formatting(fmt: str) -> None:
    stream = _capture(fmt)
    try:
        _fail_with_personal_data()
    except ValueError:
        get_logger("t").exception("lookup failed", conversation_id="c-3")
        logging.getLogger("faststream.test").exception("handler crashed")
    out = stream.getvalue()
    assert "ValueError" in out
    assert "_fail_with_personal_data" in out  # the traceback is there, only masked
    assert "[email]" in out
    assert "[phone]" in out
    assert "ana@example.com" not in out
    assert "600 111 222" not in out
    if fmt == "json":
        lines = [json.loads(line) for line in out.strip().splitlines()]
        assert all("[email]" in line["exception"] for line in lines)
