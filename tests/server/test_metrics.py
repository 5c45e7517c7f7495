"""/metrics is valid Prometheus text with the tpo_ families, and its counters move with
the traffic."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from conftest import MODEL, metric_sum, parse_metrics

FAMILIES = {
    # name (as the parser reports it: counters without _total) -> type
    "tpo_requests": "counter",
    "tpo_rejections": "counter",
    "tpo_prompt_tokens": "counter",
    "tpo_generated_tokens": "counter",
    "tpo_searches": "counter",
    "tpo_search_steps": "counter",
    "tpo_search_candidates_dropped": "counter",
    "tpo_searches_all_dropped": "counter",
    "tpo_engine_decode_steps": "counter",
    "tpo_engine_prefill_tokens": "counter",
    "tpo_queue_depth": "gauge",
    "tpo_requests_running": "gauge",
    "tpo_running_sequences": "gauge",
    "tpo_kv_slots_used": "gauge",
    "tpo_kv_slots_free": "gauge",
    "tpo_kv_slots_cached": "gauge",
    "tpo_prefix_cache_hits": "counter",
    "tpo_prefix_cache_misses": "counter",
    "tpo_prefix_cache_reused_tokens": "counter",
    "tpo_prefix_cache_evictions": "counter",
    "tpo_time_to_first_token_seconds": "histogram",
    "tpo_inter_token_latency_seconds": "histogram",
    "tpo_request_duration_seconds": "histogram",
}


def test_metrics_parse_with_the_expected_families(server, http):
    # Traffic first, so the histograms have samples.
    r = http.post("/v1/chat/completions", json={
        "model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
    assert r.status_code == 200
    resp = httpx.get(server.url + "/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(resp.text)}
    missing = set(FAMILIES) - set(families)
    assert not missing, f"missing families: {sorted(missing)}"
    for name, kind in FAMILIES.items():
        assert families[name].type == kind, (name, families[name].type)
    # Every family of ours is tpo_-prefixed.
    assert all(n.startswith("tpo_") for n in families), sorted(families)
    rm = [n for n in families if "batch" in n]
    assert rm, "no reward-model batch-size family"
    m = parse_metrics(resp.text)
    assert metric_sum(m, "tpo_kv_slots_used") + metric_sum(m, "tpo_kv_slots_free") == 8
    assert metric_sum(m, "tpo_kv_slots_cached") <= metric_sum(m, "tpo_kv_slots_free")
    for endpoint in ("chat", "completions", "score"):
        assert ("tpo_requests_total", frozenset({("endpoint", endpoint), ("status", "200")})) in m
    for reason in ("invalid", "unauthorized", "not_found", "body_too_large", "overloaded",
                   "timeout", "draining", "internal"):
        assert ("tpo_rejections_total", frozenset({("reason", reason)})) in m, reason
    # Histograms are cumulative and end in +Inf = count.
    h = [s for s in families["tpo_request_duration_seconds"].samples if s.name.endswith("_bucket")
         and s.labels.get("endpoint") == "chat"]
    counts = [s.value for s in h]
    assert counts == sorted(counts) and h[-1].labels["le"] == "+Inf"
    count = metric_sum(m, "tpo_request_duration_seconds_count", endpoint="chat")
    assert counts[-1] == count and count >= 1


def test_counters_move(server, http):
    before = server.metrics()
    r = http.post("/v1/chat/completions", json={
        "model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5,
        "temperature": 0})
    assert r.status_code == 200
    usage = r.json()["usage"]
    bad = http.post("/v1/chat/completions", json={"model": MODEL, "messages": []})
    assert bad.status_code == 400
    nokey = httpx.get(server.url + "/v1/models")
    assert nokey.status_code == 401
    after = server.metrics()

    def d(name, **labels):
        return metric_sum(after, name, **labels) - metric_sum(before, name, **labels)

    assert d("tpo_requests_total", endpoint="chat", status="200") == 1
    assert d("tpo_requests_total", endpoint="chat", status="400") == 1
    assert d("tpo_rejections_total", reason="invalid") == 1
    assert d("tpo_rejections_total", reason="unauthorized") == 1
    assert d("tpo_generated_tokens_total") == usage["completion_tokens"]
    assert d("tpo_prompt_tokens_total") == usage["prompt_tokens"]
    assert d("tpo_engine_decode_steps_total") >= usage["completion_tokens"] - 1
    assert d("tpo_time_to_first_token_seconds_count") == 1
    assert d("tpo_request_duration_seconds_count", endpoint="chat") == 2


def test_search_metrics(server, http):
    before = server.metrics()
    r = http.post("/v1/chat/completions", json={
        "model": MODEL + ":bon", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
    assert r.status_code == 200, r.text
    after = server.metrics()
    d = lambda n, **l: metric_sum(after, n, **l) - metric_sum(before, n, **l)  # noqa: E731
    assert d("tpo_searches_total", strategy="bon") == 1
    assert d("tpo_searches_total") == 1
    # Dropped candidates by reason, as the response's summary counts them.
    tpo = r.json()["tpo"]
    assert d("tpo_search_candidates_dropped_total") == tpo["dropped"]
    for reason, count in tpo["dropped_by_reason"].items():
        assert d("tpo_search_candidates_dropped_total", reason=reason) == count
    assert d("tpo_searches_all_dropped_total") == int(tpo["all_dropped"])
    assert d("tpo_generated_tokens_total") == r.json()["usage"]["completion_tokens"]


def test_a_repeated_prompt_reuses_the_cached_prefix(server, http):
    body = {"model": MODEL, "max_tokens": 6, "temperature": 0,
            "messages": [{"role": "user", "content": "Name three rivers in Europe and one fact about each."}]}
    first = http.post("/v1/chat/completions", json=body)
    assert first.status_code == 200, first.text
    before = server.metrics()
    again = http.post("/v1/chat/completions", json=body)
    assert again.status_code == 200, again.text
    after = server.metrics()
    d = lambda n: metric_sum(after, n) - metric_sum(before, n)  # noqa: E731
    prompt_tokens = again.json()["usage"]["prompt_tokens"]
    assert d("tpo_prefix_cache_hits_total") == 1
    # Everything but the last prompt token came from the cache (its logits are needed).
    assert d("tpo_prefix_cache_reused_tokens_total") == prompt_tokens - 1
    assert d("tpo_engine_prefill_tokens_total") == 1
    assert again.json()["choices"][0]["message"]["content"] == first.json()["choices"][0]["message"]["content"]
