"""Chaos: well-behaved clients (the official `openai` client: plain, streamed, TPO
searches; `/v1/score`) run while bad ones stall their readers, hang up mid-stream and
mid-search, trickle headers and bodies, send malformed requests, and engine faults are
injected. Loopback only, bounded in time (CHAOS_SECONDS, 40 by default; `make soak` runs it
for minutes), stops by itself.

Asserted: every well-behaved request ends with 200, 429 or 408 inside its deadline (none
hangs, none is lost); no 5xx except the requests that carried an injected fault; after the
bad clients leave, /metrics shows no permit, KV slot or request still held and the server
serves at full capacity again; /health turns 503 when the scheduler thread dies.
Reported: requests by kind and status, lost, the time to recover, the server's peak memory.
"""

from __future__ import annotations

import collections
import json
import os
import random
import socket
import threading
import time

import httpx
import openai

from conftest import API_KEY, MODEL, REPORT, metric_sum, start_server

SECONDS = float(os.environ.get("CHAOS_SECONDS", "40"))
REQUEST_TIMEOUT = 30.0
CAPACITY = 8
# A well-behaved request must end within the server's deadline plus this much.
SLACK = 10.0


def raw(body: bytes | dict, path="/v1/chat/completions") -> bytes:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
            ).encode() + data


class Chaos:
    def __init__(self, server):
        self.server = server
        self.host, port = server.url.split("//")[1].split(":")
        self.port = int(port)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.results: list[tuple[str, int | str, float]] = []
        self.started = 0
        self.bad = collections.Counter()

    def record(self, kind, status, elapsed):
        with self.lock:
            self.results.append((kind, status, elapsed))

    def sock(self, rcvbuf: int | None = None) -> socket.socket:
        s = socket.socket()
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(10)
        s.connect((self.host, self.port))
        return s

    # Well-behaved clients.
    def good(self, kind: str, seed: int):
        client = openai.OpenAI(base_url=self.server.url + "/v1", api_key=API_KEY,
                               max_retries=0, timeout=REQUEST_TIMEOUT + SLACK)
        rng = random.Random(seed)
        while not self.stop.is_set():
            with self.lock:
                self.started += 1
            t = time.monotonic()
            status: int | str
            try:
                q = [{"role": "user", "content": rng.choice(["Hi", "Name a fruit.", "What is 2+2?"])}]
                if kind == "plain":
                    client.chat.completions.create(model=MODEL, messages=q, max_tokens=8)
                elif kind == "stream":
                    chunks = client.chat.completions.create(model=MODEL, messages=q,
                                                            max_tokens=8, stream=True)
                    for c in chunks:
                        if getattr(c, "error", None):
                            raise RuntimeError(c.error)
                elif kind == "search":
                    r = client.chat.completions.create(model=MODEL + ":tpo", messages=q,
                                                       max_tokens=8)
                    assert r.choices[0].message.content is not None
                else:
                    r = httpx.post(self.server.url + "/v1/score", timeout=REQUEST_TIMEOUT + SLACK,
                                   headers={"Authorization": f"Bearer {API_KEY}"},
                                   json={"items": [{"prompt": "Hi", "response": "Hello!"}] * 4})
                    if r.status_code != 200:
                        raise httpx.HTTPStatusError("score", request=r.request, response=r)
                status = 200
            except openai.APIStatusError as e:
                status = e.status_code
            except httpx.HTTPStatusError as e:
                status = e.response.status_code
            except Exception as e:  # a hang, a reset or a broken stream: a failure
                status = f"{type(e).__name__}: {e}"[:200]
            self.record(kind, status, time.monotonic() - t)
            time.sleep(rng.uniform(0, 0.3))

    # Bad clients.
    def stall_reader(self):
        body = {"model": MODEL, "messages": [{"role": "user", "content": "A long story."}],
                "max_tokens": 400, "temperature": 2.0, "n": 2, "stream": True,
                "logprobs": True, "top_logprobs": 20}
        while not self.stop.is_set():
            try:
                s = self.sock(rcvbuf=1024)
                s.sendall(raw(body))
                self.bad["stalled readers"] += 1
                self.stop.wait(8)
                s.close()
            except OSError:
                pass

    def hang_up(self, search: bool):
        body = {"model": MODEL + (":tpo" if search else ""),
                "messages": [{"role": "user", "content": "Tell me about rivers."}],
                "max_tokens": 40 if not search else 8, "stream": True}
        while not self.stop.is_set():
            try:
                s = self.sock()
                s.sendall(raw(body))
                s.recv(random.randint(100, 3000))
                self.bad["mid-search hang-ups" if search else "mid-stream hang-ups"] += 1
                s.close()
            except OSError:
                pass
            self.stop.wait(0.5)

    def trickle(self, body: bool):
        while not self.stop.is_set():
            try:
                s = self.sock()
                if body:
                    s.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                              f"Authorization: Bearer {API_KEY}\r\nContent-Type: application/json"
                              f"\r\nContent-Length: {1 << 20}\r\n\r\n{{".encode())
                else:
                    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\n")
                self.bad["body tricklers" if body else "header tricklers"] += 1
                for _ in range(20):
                    if self.stop.is_set():
                        break
                    s.send(b" " if body else b"X")
                    time.sleep(0.5)
                s.close()
            except OSError:
                pass

    def malformed(self):
        junk = [b"\x00\xff garbage\r\n\r\n", raw(b"{not json"), raw(b'{"model": 1}'),
                raw({"model": MODEL, "messages": [], "max_tokens": -1}),
                b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n\r\n",
                raw({"model": MODEL, "messages": [{"role": "user", "content": "x"}],
                     "stop": ["y" * 5000]})]
        while not self.stop.is_set():
            try:
                s = self.sock()
                s.sendall(random.choice(junk))
                s.recv(4096)
                self.bad["malformed requests"] += 1
                s.close()
            except OSError:
                pass
            self.stop.wait(0.2)

    def faults(self):
        """Requests that carry an injected (non-fatal) engine fault: each fails alone."""
        while not self.stop.is_set():
            r = httpx.post(self.server.url + "/v1/chat/completions", timeout=60,
                           headers={"Authorization": f"Bearer {API_KEY}",
                                    "x-tpo-inject-fault": random.choice(["nan-logits:2", "step-error:2"])},
                           json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}],
                                 "max_tokens": 8})
            self.bad[f"injected faults ({r.status_code})"] += 1
            self.stop.wait(2)


def peak_memory_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def held(server) -> dict:
    m = server.metrics()
    return {k: metric_sum(m, k) for k in ("tpo_admission_permits_used", "tpo_kv_slots_used",
                                           "tpo_requests_running", "tpo_running_sequences")}


def test_chaos():
    server = start_server("chaos", [
        "--kv-slots", "8", "--max-seq-len", "1024", "--max-concurrent-requests", str(CAPACITY),
        "--max-queue", "16", "--request-timeout", str(REQUEST_TIMEOUT),
        "--header-timeout", "2", "--body-timeout", "2", "--keep-alive-timeout", "2",
        "--write-timeout", "3", "--stream-buffer-bytes", str(256 << 10),
        "--search-width", "2", "--search-depth", "1", "--search-max-new-tokens", "8",
        "--default-max-tokens", "16", "--reward-model", "judge",
        "--enable-fault-injection"])
    try:
        chaos = Chaos(server)
        threads = [threading.Thread(target=chaos.good, args=(k, i), daemon=True)
                   for i, k in enumerate(["plain", "plain", "stream", "stream", "search", "score"])]
        bad = [chaos.stall_reader, chaos.malformed, chaos.faults,
               lambda: chaos.hang_up(False), lambda: chaos.hang_up(True),
               lambda: chaos.trickle(False), lambda: chaos.trickle(True)]
        threads += [threading.Thread(target=f, daemon=True) for f in bad]
        for t in threads:
            t.start()
        time.sleep(SECONDS)
        chaos.stop.set()
        for t in threads:
            t.join(timeout=REQUEST_TIMEOUT + 2 * SLACK)
        assert not any(t.is_alive() for t in threads), "a client thread hung"
        left = time.monotonic()

        # Every well-behaved request ended, with an allowed status, inside its deadline.
        by = collections.Counter((k, s if isinstance(s, int) else "error") for k, s, _ in chaos.results)
        lost = chaos.started - len(chaos.results)
        bad_status = [(k, s, e) for k, s, e in chaos.results if s not in (200, 429, 408)]
        slow = [(k, s, e) for k, s, e in chaos.results if e > REQUEST_TIMEOUT + SLACK]
        assert lost == 0
        assert not bad_status, bad_status[:10]
        assert not slow, slow[:10]
        assert by[("plain", 200)] > 0 and by[("stream", 200)] > 0 and by[("search", 200)] > 0 \
            and by[("score", 200)] > 0, by

        # Nothing stays held once the bad clients are gone, and capacity is back.
        recovered = False
        while time.monotonic() - left < 60:
            if all(v == 0 for v in held(server).values()):
                recovered = True
                break
            time.sleep(0.2)
        recovery = time.monotonic() - left
        assert recovered, f"still held after the bad clients left: {held(server)}"
        results = []
        full = [threading.Thread(target=lambda: results.append(httpx.post(
            server.url + "/v1/chat/completions", timeout=60, headers=server.headers(),
            json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}],
                  "max_tokens": 4}).status_code)) for _ in range(CAPACITY)]
        for t in full:
            t.start()
        for t in full:
            t.join()
        assert results == [200] * CAPACITY, results
        assert httpx.get(server.url + "/health", timeout=5).status_code == 200

        # /health follows a dead scheduler thread.
        r = httpx.post(server.url + "/v1/chat/completions", timeout=60,
                       headers={**server.headers(), "x-tpo-inject-fault": "panic-scheduler:1"},
                       json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}],
                             "max_tokens": 8})
        assert r.status_code == 503, r.text
        health = httpx.get(server.url + "/health", timeout=5)
        assert health.status_code == 503 and health.json()["status"] == "dead", health.text

        peak = peak_memory_mb(server.proc.pid)
        summary = ", ".join(f"{k} {s}: {n}" for (k, s), n in sorted(by.items(), key=str))
        REPORT.append(f"chaos ({SECONDS:.0f} s): well-behaved {len(chaos.results)} ({summary}); "
                      f"lost {lost}; bad clients: {dict(chaos.bad)}; recovered in "
                      f"{recovery:.1f} s; peak memory {peak:.0f} MB")
    finally:
        server.kill()
