"""SIGTERM drains: the in-flight request completes with 200, new requests are refused,
/health says draining, and the process exits 0."""

from __future__ import annotations

import signal
import threading
import time

import httpx

from conftest import API_KEY, MODEL, metric_sum, start_server

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def test_sigterm_drains_in_flight_requests():
    s = start_server("drain", ["--kv-slots", "4", "--max-seq-len", "1024", "--shutdown-grace", "60"])
    try:
        # A request long enough to still run while we look (temperature 2: no early stop).
        slow = {"model": MODEL, "messages": [{"role": "user", "content": "Tell me a long story."}],
                "max_tokens": 100, "temperature": 2.0, "seed": 8}
        streamed = {**slow, "stream": True, "seed": 9}
        result = {}

        def run_plain():
            try:
                result["plain"] = httpx.post(s.url + "/v1/chat/completions", json=slow,
                                             headers=AUTH, timeout=120)
            except Exception as e:  # noqa: BLE001
                result["plain"] = e

        def run_stream():
            try:
                with httpx.stream("POST", s.url + "/v1/chat/completions", json=streamed,
                                  headers=AUTH, timeout=120) as r:
                    result["stream"] = (r.status_code, r.read().decode())
            except Exception as e:  # noqa: BLE001
                result["stream"] = e

        threads = [threading.Thread(target=run_plain), threading.Thread(target=run_stream)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while metric_sum(s.metrics(), "tpo_running_sequences") < 2:
            assert time.monotonic() < deadline, "the requests never started"
            time.sleep(0.05)
        s.proc.send_signal(signal.SIGTERM)
        # Draining: /health is 503, new API requests are refused (503, or the connection is).
        deadline = time.monotonic() + 5
        health = None
        while time.monotonic() < deadline:
            health = httpx.get(s.url + "/health", timeout=5)
            if health.status_code == 503:
                break
            time.sleep(0.02)
        assert health is not None and health.status_code == 503, health
        assert health.json() == {"status": "draining"}
        assert threads[0].is_alive(), "the in-flight request ended before the checks ran"
        try:
            r = httpx.post(s.url + "/v1/chat/completions", json={**slow, "max_tokens": 4},
                           headers=AUTH, timeout=10)
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "shutting_down"
            assert httpx.get(s.url + "/v1/models", headers=AUTH, timeout=5).status_code == 503
        except httpx.ConnectError:
            pass
        for t in threads:
            t.join(timeout=90)
        plain = result["plain"]
        assert isinstance(plain, httpx.Response), plain
        assert plain.status_code == 200, plain.text
        assert plain.json()["choices"][0]["message"]["content"]
        assert plain.json()["usage"]["completion_tokens"] > 0
        status, text = result["stream"]
        assert status == 200
        assert text.rstrip().endswith("data: [DONE]") and '"error"' not in text, text[-300:]
        assert s.proc.wait(timeout=30) == 0
        # Gone: nothing listens any more.
        try:
            httpx.get(s.url + "/health", timeout=2)
            raise AssertionError("still answering after exit")
        except httpx.ConnectError:
            pass
    finally:
        s.kill()
        print(f"\ndrain log tail:\n{s.log_tail(8)}")
