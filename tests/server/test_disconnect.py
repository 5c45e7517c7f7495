"""A client that hangs up frees what its request held: KV slots (tpo_kv_slots_used back to
0), running sequences and admission permits, mid-stream and mid-search."""

from __future__ import annotations

import socket
import time

import httpx

from conftest import API_KEY, MODEL, metric_sum

LONG = {"model": MODEL, "messages": [{"role": "user", "content": "Write a long story about a dragon."}],
        "max_tokens": 900, "temperature": 2.0, "seed": 5}


def gauges(server):
    m = server.metrics()
    return {k: metric_sum(m, k) for k in ("tpo_kv_slots_used", "tpo_running_sequences",
                                           "tpo_requests_running", "tpo_queue_depth")}


def wait_for(server, pred, timeout=20.0):
    deadline = time.monotonic() + timeout
    g = gauges(server)
    while not pred(g):
        if time.monotonic() > deadline:
            return g, False
        time.sleep(0.05)
        g = gauges(server)
    return g, True


def idle(g):
    return all(v == 0 for v in g.values())


def assert_idle_first(server):
    g, ok = wait_for(server, idle, timeout=30)
    assert ok, f"the server is not idle before the test: {g}"


def test_disconnect_mid_stream_frees_slots(server):
    assert_idle_first(server)
    body = {**LONG, "n": 3, "stream": True}
    with httpx.Client(base_url=server.url, timeout=60, headers=server.headers()) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            got = 0
            for line in lines:
                if line.startswith("data: ") and '"content"' in line:
                    got += 1
                if got >= 10:
                    break
            g = gauges(server)
            assert g["tpo_kv_slots_used"] >= 3, g
            assert g["tpo_requests_running"] == 1, g
        # Leaving the block closes the connection mid-stream.
    g, ok = wait_for(server, idle, timeout=10)
    assert ok, f"slots not freed after the client hung up: {g}"


def test_disconnect_mid_search_stream_frees_slots(server):
    assert_idle_first(server)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Explain tides in detail."}],
            "max_tokens": 250, "temperature": 2.0, "seed": 3, "stream": True,
            "tpo": {"strategy": "tpo", "width": 4, "depth": 3}}
    with httpx.Client(base_url=server.url, timeout=60, headers=server.headers()) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            g, ok = wait_for(server, lambda g: g["tpo_kv_slots_used"] >= 4, timeout=20)
            assert ok, f"the search never held its 4 slots: {g}"
            time.sleep(0.5)
    g, ok = wait_for(server, idle, timeout=10)
    assert ok, f"slots not freed after the client hung up mid-search: {g}"


def test_disconnect_mid_search_not_streamed_frees_slots(server):
    """A plain (non-streamed) search whose client goes away: the server notices the closed
    connection and cancels the search."""
    assert_idle_first(server)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Explain tides in detail."}],
            "max_tokens": 250, "temperature": 2.0, "seed": 4,
            "tpo": {"strategy": "tpo", "width": 4, "depth": 3}}
    with httpx.Client(base_url=server.url, headers=server.headers()) as http:
        try:
            http.post("/v1/chat/completions", json=body, timeout=httpx.Timeout(60, read=3))
            raise AssertionError("the search finished within 3 s; make it longer")
        except httpx.ReadTimeout:
            pass
    g, ok = wait_for(server, idle, timeout=10)
    assert ok, f"slots not freed after a non-streamed search's client hung up: {g}"


def test_half_sent_body_then_close(server):
    """A client that sends headers and half a body, then vanishes, holds nothing."""
    assert_idle_first(server)
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=5)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Authorization: Bearer " + API_KEY.encode() + b"\r\nContent-Length: 1000\r\n\r\n{\"model\":")
    time.sleep(0.3)
    s.close()
    g, ok = wait_for(server, idle, timeout=5)
    assert ok, g
    assert server.alive()
    r = httpx.get(server.url + "/health", timeout=5)
    assert r.status_code == 200
