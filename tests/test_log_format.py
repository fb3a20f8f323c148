"""Log lines as SPIRE's (logrus) formatters write them, so log pipelines built for SPIRE parse pyspire's."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from pyspire.telemetry.logs import configure_logging, reopen_log_files, rfc3339

# Go's time.RFC3339Nano: seconds, an optional fraction without trailing zeros, Z or an offset.
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d*[1-9])?(Z|[+-]\d\d:\d\d)")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    pyspire_level = logging.getLogger("pyspire").level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("pyspire").setLevel(pyspire_level)


def _line(log_format: str, message: str, **fields: object) -> str:
    stream = io.StringIO()
    configure_logging("DEBUG", log_format, stream=stream)
    logging.getLogger("pyspire.agent.workload_api").info(message, extra=fields)
    return stream.getvalue().strip()


@pytest.mark.usefixtures("restore_logging")
def test_text_lines_quote_booleans_and_sort_fields_as_logrus_does() -> None:
    line = _line(
        "text", "PID attested to have selectors", pid=42, reattestable=True, selectors="unix:uid:0", zero=False
    )
    assert re.fullmatch(
        r'time="[^"]+" level=info msg="PID attested to have selectors" pid=42 reattestable=true '
        r"selectors=\"unix:uid:0\" subsystem_name=agent\.workload_api zero=false",
        line,
    ), line
    assert RFC3339.fullmatch(line.split('"')[1])


@pytest.mark.usefixtures("restore_logging")
def test_plain_values_are_unquoted_and_none_is_a_quoted_nil() -> None:
    line = _line("text", "Starting", address="127.0.0.1", path="/tmp/x.sock", absent=None)
    assert ' absent="<nil>" address=127.0.0.1 path=/tmp/x.sock ' in line + " "


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_keep_booleans_and_numbers_typed() -> None:
    document = json.loads(_line("json", "Renewing X509-SVID", spiffe_id="spiffe://x/y", ok=True, count=3))
    assert document["ok"] is True
    assert document["count"] == 3
    assert document["level"] == "info"
    assert document["subsystem_name"] == "agent.workload_api"
    assert RFC3339.fullmatch(document["time"])


@pytest.mark.usefixtures("restore_logging")
def test_warnings_are_level_warn_as_in_spire() -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", "text", stream=stream)
    logging.getLogger("pyspire.server").warning("careful")
    assert " level=warn " in stream.getvalue()


def test_rfc3339_reads_back_to_the_same_instant() -> None:
    for timestamp in (0.0, 1_700_000_000.5, 1_700_000_000.123456):
        text = rfc3339(timestamp)
        assert RFC3339.fullmatch(text), text
        assert abs(datetime.fromisoformat(text).timestamp() - timestamp) < 1e-6


@pytest.mark.usefixtures("restore_logging")
def test_reopen_switches_to_a_new_file_created_0640(tmp_path: Path) -> None:
    log = tmp_path / "daemon.log"
    configure_logging("INFO", "text", log)
    logging.getLogger("pyspire.server").info("before")
    log.rename(tmp_path / "daemon.log.1")
    assert reopen_log_files()
    logging.getLogger("pyspire.server").info("after")
    assert "after" in log.read_text()
    assert "after" not in (tmp_path / "daemon.log.1").read_text()
    assert log.stat().st_mode & 0o777 == 0o640


@pytest.mark.usefixtures("restore_logging")
def test_a_failed_reopen_keeps_the_old_file(tmp_path: Path) -> None:
    directory = tmp_path / "logs"
    directory.mkdir()
    log = directory / "daemon.log"
    configure_logging("INFO", "text", log)
    moved = tmp_path / "moved"
    directory.rename(moved)
    with pytest.raises(OSError, match="No such file"):
        reopen_log_files()
    logging.getLogger("pyspire.server").info("still here")
    assert "still here" in (moved / "daemon.log").read_text()


def _logged_here(log_format: str) -> tuple[str, int]:
    """A line logged with ``log_source_location``, and the line number it was logged from."""
    stream = io.StringIO()
    configure_logging("DEBUG", log_format, stream=stream, source_location=True)
    logger = logging.getLogger("pyspire.server")
    line_number = _logged_here.__code__.co_firstlineno + 6
    logger.info("Starting", extra={"port": 8081})
    return stream.getvalue().strip(), line_number


@pytest.mark.usefixtures("restore_logging")
def test_log_source_location_adds_logrus_s_caller_fields_after_the_message() -> None:
    line, number = _logged_here("text")
    assert re.fullmatch(
        rf'time="[^"]+" level=info msg=Starting func=test_log_format\._logged_here file="{re.escape(__file__)}:{number}" '
        r"port=8081 subsystem_name=server",
        line,
    ), line
    document = json.loads(_logged_here("json")[0])
    assert (document["func"], document["file"]) == ("test_log_format._logged_here", f"{__file__}:{number}")
    assert "func=" not in _line("text", "Starting")  # off unless asked for
