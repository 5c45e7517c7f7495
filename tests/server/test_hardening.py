"""Production hardening: no client can freeze the server, a dead thread is never reported
healthy, edge values behave as documented, and the server tells the world only what it
should. Each test names the failure it guards against (docs/serving.md, "Limits")."""

from __future__ import annotations

import json
import random
import re
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import API_KEY, MODEL, ROOT, metric_sum, start_server

HI = [{"role": "user", "content": "Hi"}]
RANDOM = {"model": MODEL, "messages": [{"role": "user", "content": "Write a long story."}],
          "temperature": 2.0, "seed": 5}


def chat(url, body, key=API_KEY, timeout=60, headers=None):
    h = {"Authorization": f"Bearer {key}", **(headers or {})}
    return httpx.post(url + "/v1/chat/completions", json=body, headers=h, timeout=timeout)


def wait_until(pred, timeout, step=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def raw_request(body: dict, path="/v1/chat/completions", key=API_KEY) -> bytes:
    data = json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode() + data


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """Whether the server closes `sock` (EOF or reset) within `timeout`, reading whatever
    it sends first."""
    sock.settimeout(timeout)
    end = time.monotonic() + timeout
    try:
        while time.monotonic() < end:
            chunk = sock.recv(65536)
            if not chunk:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
    return False


@pytest.fixture(scope="module")
def hard(tmp_path_factory):
    """A server with short connection limits, a key from a file and a 2 MiB body limit."""
    key_file = tmp_path_factory.mktemp("key") / "api-key"
    key_file.write_text(API_KEY + "\n")
    s = start_server("hardening", [
        "--api-key-file", str(key_file),
        "--kv-slots", "8", "--max-seq-len", "1024", "--max-concurrent-requests", "4",
        "--body-limit", str(2 << 20), "--search-width", "2", "--search-depth", "1",
        "--search-max-new-tokens", "8", "--default-max-tokens", "16",
        "--max-connections", "48", "--header-timeout", "2", "--body-timeout", "2",
        "--keep-alive-timeout", "1", "--write-timeout", "3",
        "--stream-buffer-bytes", str(256 << 10),
    ], api_key=None)
    yield s
    s.terminate()


def permits_used(server) -> float:
    return metric_sum(server.metrics(), "tpo_admission_permits_used")


# A.1 — a streaming client that stops reading holds nothing for long.
def test_a_stream_whose_client_stops_reading_frees_its_permits(hard):
    # About 7 MB of events (top_logprobs inflates each token's chunk), more than the
    # kernel's socket buffers and hyper's together hold, so the server's writes block.
    body = {**RANDOM, "n": 4, "max_tokens": 900, "stream": True, "logprobs": True,
            "top_logprobs": 20}
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    host, port = hard.url.split("//")[1].split(":")
    sock.connect((host, int(port)))
    sock.sendall(raw_request(body))
    try:
        running = lambda: metric_sum(hard.metrics(), "tpo_requests_running")  # noqa: E731
        assert wait_until(lambda: running() == 1, 20), "the stream never started"
        # It never reads: the server must give its permits back on its own.
        freed = wait_until(lambda: running() == 0, 90, step=0.25)
        assert freed, "a stalled stream is still admitted, holding its permits"
        assert permits_used(hard) == 0
        r = chat(hard.url, {"model": MODEL, "messages": HI, "max_tokens": 4, "n": 4})
        assert r.status_code == 200, r.text
        m = hard.metrics()
        assert metric_sum(m, "tpo_kv_slots_used") == 0
    finally:
        sock.close()


# A.2 — slow-loris headers, slow bodies, idle keep-alive and too many connections.
def test_slow_headers_are_closed_while_normal_requests_are_served(hard):
    host, port = hard.url.split("//")[1].split(":")
    slow = []
    for _ in range(30):
        s = socket.create_connection((host, int(port)))
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHo")
        slow.append(s)
    stop = threading.Event()

    def trickle():
        while not stop.is_set():
            for s in slow:
                try:
                    s.send(b"s")
                except OSError:
                    pass
            time.sleep(0.5)

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    try:
        started = time.monotonic()
        r = httpx.get(hard.url + "/health", timeout=5)
        assert r.status_code == 200
        assert time.monotonic() - started < 1.0, "a normal request waited behind slow-loris"
        r = chat(hard.url, {"model": MODEL, "messages": HI, "max_tokens": 2})
        assert r.status_code == 200, r.text
        assert time.monotonic() - started < 5.0
        time.sleep(2.5)  # the header timeout is 2 s
        stop.set()
        closed = sum(closed_by_server(s, 3.0) for s in slow)
        assert closed == len(slow), f"only {closed} of {len(slow)} slow-loris sockets were closed"
    finally:
        stop.set()
        for s in slow:
            s.close()


def test_a_slow_body_gets_408_within_the_body_deadline(hard):
    host, port = hard.url.split("//")[1].split(":")
    s = socket.create_connection((host, int(port)))
    try:
        s.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                   f"Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {1 << 20}\r\n\r\n{{").encode())
        started = time.monotonic()
        s.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        assert data.startswith(b"HTTP/1.1 408"), data[:200]
        assert time.monotonic() - started < 6
        assert closed_by_server(s, 5.0)
    finally:
        s.close()


def test_an_idle_keep_alive_connection_is_closed(hard):
    host, port = hard.url.split("//")[1].split(":")
    s = socket.create_connection((host, int(port)))
    try:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(5)
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        assert closed_by_server(s, 4.0), "an idle keep-alive connection stayed open"
    finally:
        s.close()


def test_connections_beyond_the_limit_get_503_and_the_server_recovers(hard):
    host, port = hard.url.split("//")[1].split(":")
    held = []
    try:
        # Fill the limit with connections that keep sending a header slowly.
        for _ in range(48):
            s = socket.create_connection((host, int(port)))
            s.sendall(b"GET /health HTTP/1.1\r\n")
            held.append(s)
        time.sleep(0.3)
        extra = socket.create_connection((host, int(port)))
        extra.settimeout(5)
        answer = extra.recv(4096)
        extra.close()
        assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
        assert b"too_many_connections" in answer
    finally:
        for s in held:
            s.close()
    assert wait_until(lambda: httpx.get(hard.url + "/health", timeout=2).status_code == 200, 10)
    assert metric_sum(hard.metrics(), "tpo_connections_refused_total") >= 1


# A.5 — /v1/score is admitted by its size.
def test_a_large_score_request_takes_permits_by_its_size(hard):
    # 64 items cost 64 permits, capped at the server's 4 (one each, not one in all); long
    # enough to score (seconds) that the gauge is seen while they run.
    items = [{"prompt": f"Question {i}?", "response": "An answer. " * 10} for i in range(64)]
    result = {}

    def score():
        result["r"] = httpx.post(hard.url + "/v1/score", json={"items": items},
                                 headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120)

    t = threading.Thread(target=score)
    t.start()
    try:
        assert wait_until(lambda: permits_used(hard) > 0, 20), "the score request never ran"
        assert permits_used(hard) == 4, "64 items should take every permit, not one"
    finally:
        t.join()
    assert result["r"].status_code == 200, result["r"].text


# A.6 — a search that cannot fit is refused before any work.
def test_a_search_whose_critique_prompt_cannot_fit_is_refused_at_once(hard):
    before = metric_sum(hard.metrics(), "tpo_generated_tokens_total")
    for stream in (False, True):
        started = time.monotonic()
        r = chat(hard.url, {"model": MODEL + ":tpo", "messages": HI, "max_tokens": 600,
                            "stream": stream})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["param"] == "max_tokens"
        assert "critique" in err["message"] and "at most" in err["message"], err
        assert time.monotonic() - started < 5
        fits = int(re.search(r"at most max_tokens = (\d+)", err["message"]).group(1))
        assert 0 < fits < 600
    assert metric_sum(hard.metrics(), "tpo_generated_tokens_total") == before


# A.7 — big prompts are tokenized off the async workers; references are bounded.
def test_big_prompts_do_not_stall_health(hard):
    # 8 prompts of about 1.8 MB of varied words: BPE on many distinct words is slow, so
    # tokenizing them on the two async workers would stall every other request.
    rng = random.Random(1)
    big = " ".join("".join(rng.choice("abcdefghijklmnopqrstuvwxyz")
                           for _ in range(rng.randint(2, 9))) for _ in range(300_000))
    done = []

    def send():
        r = chat(hard.url, {"model": MODEL, "messages": [{"role": "user", "content": big}],
                            "max_tokens": 2}, timeout=120)
        done.append(r.status_code)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    worst = 0.0
    while any(t.is_alive() for t in threads):
        started = time.monotonic()
        assert httpx.get(hard.url + "/health", timeout=30).status_code == 200
        worst = max(worst, time.monotonic() - started)
        time.sleep(0.02)
    for t in threads:
        t.join()
    assert done == [400] * 8, done  # longer than the context
    assert worst < 1.0, f"/health took {worst:.2f} s while prompts were tokenized"


def test_a_reference_longer_than_the_context_is_refused(hard):
    r = chat(hard.url, {"model": MODEL + ":bon", "messages": HI,
                        "tpo": {"reward_model": "similarity", "reference": "word " * 5000}})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "tpo.reference"
    # A similarity reward without a reference cannot score anything: refused up front,
    # not a 500 after the first round.
    r = chat(hard.url, {"model": MODEL + ":bon", "messages": HI,
                        "tpo": {"reward_model": "similarity"}})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "tpo.reference"


# A.8 — edge values.
def test_a_tiny_temperature_is_greedy(hard):
    base = {"model": MODEL, "messages": [{"role": "user", "content": "Name a color."}],
            "max_tokens": 12, "seed": 3}
    greedy = chat(hard.url, {**base, "temperature": 0})
    tiny = chat(hard.url, {**base, "temperature": 1e-39})
    assert greedy.status_code == tiny.status_code == 200, tiny.text
    assert tiny.json()["choices"][0]["message"]["content"] == \
        greedy.json()["choices"][0]["message"]["content"]


def test_long_stop_strings_are_refused(hard):
    r = chat(hard.url, {"model": MODEL, "messages": HI, "max_tokens": 4,
                        "stop": ["x" * 2000]})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "stop"


def test_the_request_timeout_is_one_deadline_for_queueing_and_running():
    s = start_server("deadline", ["--kv-slots", "4", "--max-seq-len", "1024",
                                  "--max-concurrent-requests", "1", "--request-timeout", "3"])
    try:
        first = threading.Thread(target=chat, args=(s.url, {**RANDOM, "max_tokens": 900}))
        first.start()
        assert wait_until(lambda: metric_sum(s.metrics(), "tpo_requests_running") == 1, 10)
        started = time.monotonic()
        r = chat(s.url, {**RANDOM, "max_tokens": 900, "seed": 6})
        elapsed = time.monotonic() - started
        first.join()
        assert r.status_code == 408, r.text
        assert elapsed < 3 + 1.0, f"waited and ran {elapsed:.1f} s under a 3 s timeout"
    finally:
        s.terminate()


# A.3 — a dead scheduler thread fails requests at once and /health says so.
def test_a_scheduler_panic_fails_in_flight_requests_and_turns_health_503():
    s = start_server("fault", ["--kv-slots", "4", "--max-seq-len", "512",
                               "--enable-fault-injection"])
    try:
        long_body = {**RANDOM, "max_tokens": 400, "stream": True}
        with httpx.Client(base_url=s.url, headers=s.headers(), timeout=60) as http:
            with http.stream("POST", "/v1/chat/completions", json=long_body) as stream:
                assert stream.status_code == 200
                started = time.monotonic()
                r = chat(s.url, {**RANDOM, "max_tokens": 50},
                         headers={"x-tpo-inject-fault": "panic-scheduler:3"})
                assert r.status_code == 503, r.text
                assert "scheduler thread died" in r.json()["error"]["message"]
                events = [line for line in stream.iter_lines() if line.startswith("data: ")]
                assert time.monotonic() - started < 10
        assert any("scheduler thread died" in e for e in events), events[-3:]
        health = httpx.get(s.url + "/health", timeout=5)
        assert health.status_code == 503
        assert health.json()["status"] == "dead"
        assert "injected scheduler panic" in health.json()["reason"]
        later = chat(s.url, {"model": MODEL, "messages": HI, "max_tokens": 2})
        assert later.status_code == 503
        assert "panicked" in s.log_path.read_text()
    finally:
        s.kill()


# A.9 — names, keys, warnings and the metrics port.
def test_what_the_server_tells_the_world(hard):
    open_server = start_server("open", [
        "--host", "0.0.0.0", "--metrics-port", "0", "--kv-slots", "2", "--max-seq-len", "256",
        "--search-width", "2", "--search-max-new-tokens", "8",
        "--reward-model", str(ROOT / "models" / "smollm2-judge"),
    ], api_key=None)
    try:
        log = re.sub(r"\x1b\[[0-9;]*m", "", open_server.log_path.read_text())
        assert "WITHOUT an API key" in log
        models = httpx.get(open_server.url + "/v1/models", timeout=10).json()
        assert models["data"][0]["reward_models"] == ["smollm2-judge"]
        r = chat(open_server.url, {"model": MODEL + ":bon", "messages": HI, "max_tokens": 4,
                                   "tpo": {"reward_model": "nope"}})
        assert r.status_code == 400 and "smollm2-judge" in r.text
        assert str(ROOT) not in r.text and "/models/" not in r.text
        # /metrics is on its own port only.
        assert httpx.get(open_server.url + "/metrics", timeout=10).status_code == 404
        port = re.search(r"metrics on their own port.*?local=\S*?:(\d+)", log).group(1)
        m = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert m.status_code == 200 and "tpo_requests_total" in m.text
    finally:
        open_server.terminate()
    # The key read from a file is the key.
    assert chat(hard.url, {"model": MODEL, "messages": HI, "max_tokens": 2},
                key="wrong").status_code == 401
