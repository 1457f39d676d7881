"""qlog on request: ``Config.qlog`` gets each connection's trace when it ends (simnet)."""

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sansquic import Config, ConfigError, ConnectionTerminated
from sansquic._engine import EventLog
from sansquic.qlog import QlogDirectory
from sansquic.testing import LinkConditions, Pair, connected_pair

from .transfers import transfer


def _traced_pair(
    traces: list[dict[str, Any]], *, conditions: LinkConditions | None = None, **changes: Any
) -> Pair:
    config = Config(dev_mode=True, trust_dev_certificate=True, qlog=traces.append, **changes)
    return connected_pair(conditions, client_config=config, server_config=config)


def _transfer_and_close(pair: Pair, size: int = 20_000) -> None:
    transfer(pair, size, timeout=30)
    pair.client.close()
    assert pair.network.run_for(5.0) is None


def _events(document: dict[str, Any]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = document["traces"][0]["events"]
    return events


def test_each_side_gets_a_qlog_trace_when_the_connection_ends() -> None:
    traces: list[dict[str, Any]] = []
    pair = _traced_pair(traces)
    start = pair.network.now
    _transfer_and_close(pair)
    assert [t["traces"][0]["vantage_point"]["type"] for t in traces] == ["client", "server"]
    for document in traces:
        assert document["qlog_format"] == "JSON" and document["qlog_version"] == "0.3"
        assert document["summary"]["events_dropped"] == 0
        names = {event["name"] for event in _events(document)}
        assert {"transport:packet_sent", "transport:packet_received"} <= names
        # Stamped with the time the core was given (ms), not the wall clock.
        times = [event["time"] for event in _events(document)]
        assert times == sorted(times)
        assert times[0] >= 0 and times[-1] <= pair.network.now * 1000
        assert times[-1] > start * 1000
        json.dumps(document)  # JSON-ready as it is
    client_odcid = traces[0]["traces"][0]["common_fields"]["ODCID"]
    assert traces[1]["traces"][0]["common_fields"]["ODCID"] == client_odcid


def test_no_trace_is_kept_without_qlog() -> None:
    pair = connected_pair()
    assert pair.client._engine.take_qlog() is None  # type: ignore[union-attr]


def test_the_event_cap_bounds_a_long_trace() -> None:
    traces: list[dict[str, Any]] = []
    pair = _traced_pair(traces, qlog_max_events=60)
    _transfer_and_close(pair, size=500_000)
    client = traces[0]
    events = _events(client)
    dropped = client["summary"]["events_dropped"]
    assert dropped > 500  # a 500 KB transfer logs thousands of events
    assert len(events) == 61  # 60 kept and the marker between the halves
    marker = events[30]
    assert marker["name"] == "sansquic:events_dropped" and marker["data"]["count"] == dropped
    # The start (the handshake) and the end (the close) are both kept.
    assert events[0]["time"] <= 1.0
    assert any(
        frame.get("frame_type") == "connection_close"
        for event in events[31:]
        for frame in event["data"].get("frames", [])
    )


def test_keep_alive_pings_show_in_the_peers_trace() -> None:
    traces: list[dict[str, Any]] = []
    config = Config(dev_mode=True, trust_dev_certificate=True, idle_timeout=2.0, qlog=traces.append)
    pair = connected_pair(client_config=config.replace(keep_alive=0.5), server_config=config)
    pair.network.run_for(10.0)
    pair.client.close()
    pair.network.run_for(5.0)
    server = next(t for t in traces if t["traces"][0]["vantage_point"]["type"] == "server")
    pings = [
        event
        for event in _events(server)
        if event["name"] == "transport:packet_received"
        and any(frame["frame_type"] == "ping" for frame in event["data"]["frames"])
    ]
    assert 15 <= len(pings) <= 25, len(pings)


def test_a_failing_qlog_callable_is_logged_and_the_close_completes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(trace: dict[str, Any]) -> None:
        raise OSError("disk full")

    config = Config(dev_mode=True, trust_dev_certificate=True, qlog=broken)
    pair = connected_pair(client_config=config, server_config=config)
    with caplog.at_level(logging.ERROR, logger="sansquic"):
        pair.client.close()
        pair.network.run_for(5.0)
    assert "Config.qlog callable failed" in caplog.text
    events = []
    while (event := pair.server.next_event()) is not None:
        events.append(event)
    assert isinstance(events[-1], ConnectionTerminated)


def test_qlog_directory_writes_one_valid_json_file_per_side(tmp_path: Path) -> None:
    target = tmp_path / "traces"  # made on demand
    config = Config(dev_mode=True, trust_dev_certificate=True, qlog=QlogDirectory(target))
    pair = connected_pair(client_config=config, server_config=config)
    _transfer_and_close(pair)
    files = sorted(target.iterdir())
    assert [f.name.rsplit("-", 1)[1] for f in files] == ["client.qlog", "server.qlog"]
    for path in files:
        document = json.loads(path.read_text())
        assert document["qlog_version"] == "0.3"
        assert any(e["name"] == "transport:packet_sent" for e in _events(document))


def test_qlog_directory_never_overwrites(tmp_path: Path) -> None:
    sink = QlogDirectory(tmp_path)
    trace = {"traces": [{"common_fields": {"ODCID": "ab"}, "vantage_point": {"type": "client"}}]}
    paths = [sink(trace) for _ in range(3)]
    assert [p.name for p in paths] == ["ab-client.qlog", "ab-client-1.qlog", "ab-client-2.qlog"]


@pytest.mark.parametrize(
    "changes", [{"qlog": "traces/"}, {"qlog": 3}, {"qlog_max_events": 0}, {"qlog_max_events": 1.5}]
)
def test_invalid_qlog_settings_are_config_errors(changes: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Config(**changes)


@given(st.integers(1, 40), st.integers(0, 120))
def test_event_log_keeps_the_first_and_latest_halves(cap: int, count: int) -> None:
    log = EventLog(cap)
    for i in range(count):
        log.append({"time": float(i), "i": i})
    kept = [event for event in log if "i" in event]
    assert log.dropped == max(0, count - cap)
    assert len(kept) == min(count, cap)
    head = cap - cap // 2
    expected = list(range(min(count, head))) + list(range(max(head, count - cap // 2), count))
    assert [event["i"] for event in kept] == expected
    markers = [event for event in log if "i" not in event]
    assert len(markers) == (1 if log.dropped else 0)


def test_qh3_traces_too() -> None:
    pytest.importorskip("qh3")
    traces: list[dict[str, Any]] = []
    pair = _traced_pair(traces, engine="qh3")
    _transfer_and_close(pair)
    assert len(traces) == 2
    for document in traces:
        names = {event["name"] for event in _events(document)}
        assert {"transport:packet_sent", "transport:packet_received"} <= names
