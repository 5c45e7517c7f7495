"""Overload on a server with tiny capacity: a burst far beyond it is answered, every
request, with 200 or 429 (+ Retry-After) in bounded time, and /metrics accounts for all."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from conftest import API_KEY, MODEL, REPORT, metric_sum, start_server

BURST = 60
REQUEST_TIMEOUT_S = 90.0


@pytest.fixture(scope="module")
def tiny():
    s = start_server("tiny", [
        "--max-concurrent-requests", "2", "--max-queue", "4", "--kv-slots", "4",
        "--max-seq-len", "512", "--request-timeout", "60",
        "--search-width", "2", "--search-depth", "1", "--search-max-new-tokens", "8",
    ])
    yield s
    s.terminate()


def body(i: int) -> dict:
    b = {"model": MODEL, "messages": [{"role": "user", "content": f"Count to {i % 7 + 2}."}],
         "max_tokens": 8, "seed": i}
    if i % 5 == 1:
        b["stream"] = True
    if i % 10 == 3:
        b["n"] = 2  # takes both permits
    return b


async def one(client: httpx.AsyncClient, i: int):
    t0 = time.monotonic()
    b = body(i)
    if b.get("stream"):
        async with client.stream("POST", "/v1/chat/completions", json=b) as r:
            text = (await r.aread()).decode()
            return i, r.status_code, dict(r.headers), text, time.monotonic() - t0
    r = await client.post("/v1/chat/completions", json=b)
    return i, r.status_code, dict(r.headers), r.text, time.monotonic() - t0


async def burst(url: str):
    limits = httpx.Limits(max_connections=BURST + 5, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S, limits=limits,
                                 headers={"Authorization": f"Bearer {API_KEY}"}) as client:
        tasks = [one(client, i) for i in range(BURST)]
        return await asyncio.gather(*tasks, return_exceptions=True)


def test_burst_is_answered_200_or_429(tiny):
    before = tiny.metrics()
    t0 = time.monotonic()
    results = asyncio.run(burst(tiny.url))
    wall = time.monotonic() - t0
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, f"{len(errors)} requests got no answer: {errors[:3]!r}"
    ok = [r for r in results if r[1] == 200]
    limited = [r for r in results if r[1] == 429]
    other = [r for r in results if r[1] not in (200, 429)]
    lost = BURST - len(ok) - len(limited) - len(other)
    REPORT.append(f"overload: sent {BURST}, 200: {len(ok)}, 429: {len(limited)}, other: {len(other)}, "
          f"lost: {lost}, wall {wall:.1f} s, slowest {max(r[4] for r in results):.1f} s")
    assert not other, [(r[0], r[1], r[3][:200]) for r in other]
    assert len(ok) + len(limited) == BURST
    # Capacity 2 + queue 4: most of a 60-request burst is refused, and some get through.
    assert len(limited) >= BURST // 2, len(limited)
    assert len(ok) >= 2, len(ok)
    for _, _, headers, text, _ in limited:
        assert headers.get("retry-after", "").isdigit(), headers
        import json

        err = json.loads(text)["error"]
        assert err["type"] == "rate_limit_error" and err["code"] == "overloaded"
    for i, _, _, text, _ in ok:
        if body(i).get("stream"):
            assert text.rstrip().endswith("data: [DONE]"), text[-200:]
            assert '"error"' not in text, text
        else:
            import json

            assert json.loads(text)["choices"][0]["message"]["content"] is not None
    # Every request counted once, by its status; every 429 counted as a rejection.
    deadline = time.monotonic() + 10
    while True:
        after = tiny.metrics()
        d = lambda name, **l: metric_sum(after, name, **l) - metric_sum(before, name, **l)  # noqa: E731
        got200 = d("tpo_requests_total", endpoint="chat", status="200")
        got429 = d("tpo_requests_total", endpoint="chat", status="429")
        if got200 == len(ok) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert got200 == len(ok), (got200, len(ok))
    assert got429 == len(limited), (got429, len(limited))
    assert d("tpo_requests_total") == BURST
    assert d("tpo_rejections_total", reason="overloaded") == len(limited)
    assert d("tpo_rejections_total") == len(limited)
    # Back to idle.
    assert metric_sum(after, "tpo_requests_running") == 0
    assert metric_sum(after, "tpo_queue_depth") == 0
    assert metric_sum(after, "tpo_kv_slots_used") == 0
    assert tiny.alive()
    # And it serves normally afterwards.
    r = httpx.post(tiny.url + "/v1/chat/completions", json=body(0), timeout=60,
                   headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 200, r.text


def test_openai_client_sees_rate_limit_error(tiny):
    """A 429 reaches the official client as RateLimitError."""
    import threading

    import openai

    client = tiny.client(timeout=60)
    slow = {"model": MODEL, "messages": [{"role": "user", "content": "Tell a story."}],
            "max_tokens": 40, "temperature": 2.0, "seed": 1}
    # Fill capacity (2 sequences) and the queue (4).
    threads = [threading.Thread(target=lambda: httpx.post(
        tiny.url + "/v1/chat/completions", json=slow, timeout=120,
        headers={"Authorization": f"Bearer {API_KEY}"})) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            m = tiny.metrics()
            if metric_sum(m, "tpo_requests_running") >= 2 and metric_sum(m, "tpo_queue_depth") >= 4:
                break
            time.sleep(0.05)
        with pytest.raises(openai.RateLimitError) as e:
            client.chat.completions.create(model=MODEL, messages=slow["messages"], max_tokens=4)
        assert e.value.response.headers.get("retry-after")
    finally:
        for t in threads:
            t.join(timeout=120)
