"""Prometheus text exposition: counters, callback gauges, histograms, escaping, misuse."""

from __future__ import annotations

import pytest

from gripcore import LocalProtocolError
from gripcore._metrics import Registry
from gripcore._publishapi import handle_publish_request


def test_counter_gauge_histogram_render_exactly() -> None:
    registry = Registry(prefix="t_")
    hits = registry.counter("hits_total", "Hits.", ("path",))
    hits.inc(labels=("/a",))
    hits.inc(2.5, labels=('/q"x\\\n',))
    registry.counter("idle_total", "Never incremented.")
    registry.gauge("open", "Open things.", lambda: [((), 3)])
    registry.counter_from("read_total", "Read from elsewhere.", lambda: [(("x",), 7)], ("k",))
    lat = registry.histogram("lat_seconds", "Latency.", buckets=(0.1, 1.0))
    lat.observe(0.05)
    lat.observe(0.5)
    lat.observe(5.0)
    assert registry.render().decode() == (
        "# HELP t_hits_total Hits.\n"
        "# TYPE t_hits_total counter\n"
        't_hits_total{path="/a"} 1\n'
        't_hits_total{path="/q\\"x\\\\\\n"} 2.5\n'
        "# HELP t_idle_total Never incremented.\n"
        "# TYPE t_idle_total counter\n"
        "t_idle_total 0\n"
        "# HELP t_open Open things.\n"
        "# TYPE t_open gauge\n"
        "t_open 3\n"
        "# HELP t_read_total Read from elsewhere.\n"
        "# TYPE t_read_total counter\n"
        't_read_total{k="x"} 7\n'
        "# HELP t_lat_seconds Latency.\n"
        "# TYPE t_lat_seconds histogram\n"
        't_lat_seconds_bucket{le="0.1"} 1\n'
        't_lat_seconds_bucket{le="1"} 2\n'
        't_lat_seconds_bucket{le="+Inf"} 3\n'
        "t_lat_seconds_sum 5.55\n"
        "t_lat_seconds_count 3\n"
    )


@pytest.mark.parametrize("value", [float("inf"), float("-inf")])
def test_infinite_values(value: float) -> None:
    registry = Registry(prefix="")
    registry.gauge("g", "G.", lambda: [((), value)])
    assert registry.render().decode().endswith(f"g {'+Inf' if value > 0 else '-Inf'}\n")


def test_misuse_is_a_local_error() -> None:
    registry = Registry()
    counter = registry.counter("c_total", "C.", ("a",))
    with pytest.raises(LocalProtocolError):
        counter.inc(labels=())  # wrong label count
    with pytest.raises(LocalProtocolError):
        counter.inc(-1, labels=("x",))
    with pytest.raises(LocalProtocolError):
        registry.counter("c_total", "again")
    with pytest.raises(LocalProtocolError):
        Registry(prefix="").counter("9bad", "starts with a digit")
    with pytest.raises(LocalProtocolError):
        registry.histogram("h", "H.", buckets=(1.0, 0.5))


def test_publish_api_serves_metrics() -> None:
    response = handle_publish_request(b"GET", b"/metrics", [], b"", metrics=lambda: b"x 1\n")
    assert (response.status, response.body) == (200, b"x 1\n")
    assert response.headers == [(b"Content-Type", b"text/plain; version=0.0.4; charset=utf-8")]
    assert handle_publish_request(b"POST", b"/metrics", [], b"", metrics=lambda: b"").status == 405
    assert handle_publish_request(b"GET", b"/metrics", [], b"").status == 404  # not enabled
