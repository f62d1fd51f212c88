"""Test: the one metav1.Time parser and formatter (timestamps), used by the status, the adapters and the twin."""

from __future__ import annotations

import datetime
import time

import pytest

from infertune import timestamps

UTC = datetime.UTC


def test_text_is_what_the_api_server_writes() -> None:
    cest = datetime.timezone(datetime.timedelta(hours=2))
    assert timestamps.text(datetime.datetime(2026, 3, 1, 14, 5, 9, 999_000, tzinfo=cest)) == "2026-03-01T12:05:09Z"


@pytest.mark.parametrize(("stamp", "expected"), [
    ("2026-01-01T00:00:00Z", datetime.datetime(2026, 1, 1, tzinfo=UTC)),
    ("2026-01-01T02:00:00+02:00", datetime.datetime(2026, 1, 1, tzinfo=UTC)),
    ("2026-01-01T00:00:00.250000Z", datetime.datetime(2026, 1, 1, 0, 0, 0, 250_000, tzinfo=UTC)),  # MicroTime
])
def test_parse_reads_every_offset_form(stamp: str, expected: datetime.datetime) -> None:
    assert timestamps.parse(stamp) == expected


def test_seconds_round_trips_text() -> None:
    now = datetime.datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)
    assert timestamps.seconds(timestamps.text(now)) == now.timestamp() == 1_767_225_630.0


@pytest.mark.parametrize("absent", [None, ""])
def test_no_stamp_is_no_time(absent: str | None) -> None:
    assert timestamps.seconds(absent) is None


def test_a_stamp_without_an_offset_is_utc_wherever_the_operator_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/Los_Angeles")
    time.tzset()
    try:
        assert timestamps.seconds("2026-01-01T00:00:00") == timestamps.seconds("2026-01-01T00:00:00Z")
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize("bad", ["yesterday", "2026-13-01T00:00:00Z", "12:00"])
def test_a_bad_stamp_is_a_value_error_naming_it(bad: str) -> None:
    with pytest.raises(ValueError, match=f"not an RFC 3339 timestamp: {bad!r}"):
        timestamps.parse(bad)
