"""The server through the official `openai` Python client: plain, streamed, n > 1,
seeded, log-probs, searches (extension object, model-id suffix, streamed), models, the
client's typed errors and the legacy completions API."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from conftest import API_KEY, MODEL

MESSAGES = [{"role": "user", "content": "Name three colours."}]
SEARCH_Q = [{"role": "user", "content": "Give me one tip for sleeping well."}]


def extra(obj, name):
    """An extension field the client's models keep as an extra."""
    value = getattr(obj, name, None)
    if value is None and obj.model_extra:
        value = obj.model_extra.get(name)
    return value


def chat(client, **kw):
    args = dict(model=MODEL, messages=MESSAGES, max_tokens=12, temperature=1.0, seed=11)
    args.update(kw)
    return client.chat.completions.create(**args)


def test_plain_chat(client):
    r = chat(client, temperature=0)
    assert r.object == "chat.completion"
    assert r.model == MODEL
    assert r.id.startswith("chatcmpl-")
    assert len(r.choices) == 1
    c = r.choices[0]
    assert c.index == 0
    assert c.message.role == "assistant"
    assert isinstance(c.message.content, str) and c.message.content.strip()
    assert c.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0
    assert 0 < r.usage.completion_tokens <= 12
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    if c.finish_reason == "length":
        assert r.usage.completion_tokens == 12


def test_greedy_is_deterministic(client):
    a = chat(client, temperature=0, seed=None)
    b = chat(client, temperature=0, seed=None)
    assert a.choices[0].message.content == b.choices[0].message.content


def test_streaming_joins_to_the_plain_text(client):
    plain = chat(client, seed=5)
    chunks = list(chat(client, seed=5, stream=True, stream_options={"include_usage": True}))
    assert chunks, "no chunks"
    content_chunks = [c for c in chunks if c.choices]
    assert content_chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in content_chunks)
    assert text == plain.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in content_chunks if c.choices[0].finish_reason]
    assert finishes == [plain.choices[0].finish_reason]
    assert all(c.object == "chat.completion.chunk" and c.model == MODEL for c in chunks)
    assert len({c.id for c in chunks}) == 1
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1 and chunks[-1].usage is not None and chunks[-1].choices == []
    assert usage[0].completion_tokens == plain.usage.completion_tokens
    assert usage[0].prompt_tokens == plain.usage.prompt_tokens


def test_a_stream_never_shows_text_past_a_stop_string(client):
    """The stop string is the middle of a word the greedy answer holds, so the token that
    completes it also carries text after it: none of that may be streamed."""
    full = chat(client, temperature=0, max_tokens=24).choices[0].message.content
    words = [w for w in full.split() if len(w) >= 4]
    assert words, full
    stop = words[0][1:3]
    plain = chat(client, temperature=0, max_tokens=24, stop=[stop])
    assert plain.choices[0].finish_reason == "stop"
    assert stop not in plain.choices[0].message.content
    chunks = list(chat(client, temperature=0, max_tokens=24, stop=[stop], stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content


def test_streaming_without_usage_sends_none(client):
    chunks = list(chat(client, seed=5, stream=True))
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)


def test_n_2(client):
    r = chat(client, n=2, seed=3, logprobs=True)
    assert sorted(c.index for c in r.choices) == [0, 1]
    for c in r.choices:
        assert c.message.content
        assert c.finish_reason in ("stop", "length")
    # Usage counts both samples' tokens (each token has one log-prob entry).
    assert r.usage.completion_tokens == sum(len(c.logprobs.content) for c in r.choices)
    # Two samples of the same request draw different random numbers.
    assert r.choices[0].message.content != r.choices[1].message.content


def test_n_2_streaming(client):
    plain = chat(client, n=2, seed=3)
    texts = {0: "", 1: ""}
    for c in chat(client, n=2, seed=3, stream=True):
        for ch in c.choices:
            texts[ch.index] += ch.delta.content or ""
    by_index = {c.index: c.message.content for c in plain.choices}
    assert texts == by_index


def test_seed_reproducible_alone_and_under_load(client):
    kw = dict(seed=1234, temperature=1.0, top_p=0.95, max_tokens=16)
    first = chat(client, **kw).choices[0].message.content
    again = chat(client, **kw).choices[0].message.content
    assert again == first
    other = chat(client, **{**kw, "seed": 4321}).choices[0].message.content
    assert other != first, "a different seed gave the same text"
    # Six at once (batched together in the engine), plus other seeds mixed in.
    def one(i):
        seed = 1234 if i % 2 == 0 else 1000 + i
        return seed, chat(client, **{**kw, "seed": seed}).choices[0].message.content

    with ThreadPoolExecutor(max_workers=9) as pool:
        results = list(pool.map(one, range(9)))
    same = [t for s, t in results if s == 1234]
    assert len(same) == 5
    assert all(t == first for t in same), same


def _check_logprobs(content, k):
    assert content, "no log-probs"
    for entry in content:
        assert entry.logprob <= 0.0, entry
        assert math.isfinite(entry.logprob)
        assert bytes(entry.bytes).decode("utf-8") == entry.token
        assert len(entry.top_logprobs) == k, f"want {k} top_logprobs, got {entry.top_logprobs}"
        tops = [t.logprob for t in entry.top_logprobs]
        assert all(t <= 0.0 for t in tops)
        assert tops == sorted(tops, reverse=True), "top_logprobs not in descending order"
        same = [t for t in entry.top_logprobs if t.token == entry.token]
        if same:
            assert any(abs(t.logprob - entry.logprob) < 1e-3 for t in same), entry
        else:
            # Not among the k most likely: no more likely than the k-th.
            assert entry.logprob <= tops[-1] + 1e-3, entry


def test_logprobs_top3_greedy(client):
    r = chat(client, temperature=0, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    _check_logprobs(content, 3)
    assert len(content) == r.usage.completion_tokens
    # Greedy picks the most likely token.
    for entry in content:
        assert abs(entry.logprob - entry.top_logprobs[0].logprob) < 1e-3, entry
    # The tokens spell the text.
    assert "".join(e.token for e in content) == r.choices[0].message.content


def test_logprobs_top3_sampled(client):
    r = chat(client, temperature=1.0, seed=9, logprobs=True, top_logprobs=3)
    _check_logprobs(r.choices[0].logprobs.content, 3)


def test_logprobs_without_top(client):
    r = chat(client, temperature=0, logprobs=True)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for entry in content:
        assert entry.logprob <= 0.0 and entry.top_logprobs == []
    # Asking for no log-probs gives none.
    assert chat(client, temperature=0).choices[0].logprobs is None


def test_logprobs_streaming_match(client):
    plain = chat(client, temperature=0, logprobs=True, top_logprobs=3)
    streamed = []
    for c in chat(client, temperature=0, logprobs=True, top_logprobs=3, stream=True):
        for ch in c.choices:
            if ch.logprobs and ch.logprobs.content:
                streamed.extend(ch.logprobs.content)
    want = plain.choices[0].logprobs.content
    assert [e.token for e in streamed] == [e.token for e in want]
    assert all(abs(a.logprob - b.logprob) < 1e-4 for a, b in zip(streamed, want))
    assert [len(e.top_logprobs) for e in streamed] == [3] * len(streamed)


def test_penalties_accepted(client):
    r = chat(client, temperature=0, presence_penalty=1.5, frequency_penalty=1.5, max_tokens=16)
    assert r.choices[0].message.content


def test_stop_string(client):
    plain = chat(client, temperature=0, max_tokens=16).choices[0].message.content
    words = plain.split()
    assert len(words) >= 2
    stop = words[1]
    r = chat(client, temperature=0, max_tokens=16, stop=[stop])
    assert stop not in r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"
    assert plain.startswith(r.choices[0].message.content)


def test_search_through_extension(client):
    r = client.chat.completions.create(
        model=MODEL,
        messages=SEARCH_Q,
        max_tokens=8,
        seed=3,
        extra_body={"tpo": {"strategy": "tpo", "width": 2, "depth": 1, "return_trace": True}},
    )
    assert len(r.choices) == 1 and r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"
    tpo = extra(r, "tpo")
    assert tpo is not None, "no tpo summary"
    assert tpo["strategy"] == "tpo" and tpo["steps"] == 1
    assert tpo["reward_model"] == "judge"
    # TPO's cost at N = 2, D = 1 (src/search/tpo.rs): 1 + 3D policy requests, N + D(N + 2)
    # sequences, N(D + 1) reward inputs less those dropped before scoring (a candidate the
    # degenerate guard dropped is scored only while the search has nothing kept).
    assert tpo["policy_calls"] == 4
    assert tpo["completions"] == 6
    trace = tpo["trace"]
    sent = [c for c in trace["candidates"] if c["score"] is not None or c["dropped"] == "unscored"]
    assert tpo["reward_scorings"] == len(sent)
    assert tpo["dropped"] == sum(1 for c in trace["candidates"] if c["dropped"] is not None)
    assert tpo["dropped_by_reason"] == trace["dropped"]
    assert tpo["all_dropped"] == trace["all_dropped"]
    assert math.isfinite(tpo["best_reward"])
    assert trace["final_answer"] == r.choices[0].message.content
    assert trace["totals"]["completions"] == tpo["completions"]
    # Usage counts every token the search generated and prefilled, not just the answer.
    assert r.usage.completion_tokens == trace["totals"]["tokens_generated"]
    assert r.usage.prompt_tokens == trace["totals"]["prompt_tokens"]
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.usage.completion_tokens > 8, "usage counts only the answer"


def test_search_through_model_suffix(client):
    r = client.chat.completions.create(model=MODEL + ":tpo", messages=SEARCH_Q)
    assert r.model == MODEL + ":tpo"
    assert r.choices[0].message.content
    tpo = extra(r, "tpo")
    assert tpo is not None
    # The server's defaults: --search-width 2 --search-depth 1.
    assert tpo["strategy"] == "tpo" and tpo["steps"] == 1
    assert tpo["policy_calls"] == 4 and tpo["completions"] == 6
    # Dropped candidates are not scored, except the guard's while nothing is kept.
    assert 4 - tpo["dropped"] <= tpo["reward_scorings"] <= 4
    assert math.isfinite(tpo["best_reward"])
    assert "trace" not in tpo
    # --search-max-new-tokens 8: six sequences of at most 8 tokens, all counted.
    assert 8 < r.usage.completion_tokens <= 6 * 8 and r.usage.prompt_tokens > 0


def test_best_of_n_and_darwin_suffixes(client):
    bon = client.chat.completions.create(model=MODEL + ":bon", messages=SEARCH_Q, max_tokens=8)
    t = extra(bon, "tpo")
    assert t["strategy"] == "bon" and t["completions"] == 2 and t["steps"] == 0
    darwin = client.chat.completions.create(
        model=MODEL,
        messages=SEARCH_Q,
        max_tokens=8,
        extra_body={"tpo": {"strategy": "darwin", "mutations": 2, "keep": 1, "iterations": 1,
                            "replace_every": 4}},
    )
    t = extra(darwin, "tpo")
    assert t["strategy"] == "darwin" and t["steps"] == 1
    assert darwin.choices[0].message.content is not None


def test_streaming_search(client):
    kw = dict(model=MODEL, messages=SEARCH_Q, max_tokens=8, seed=21,
              extra_body={"tpo": {"strategy": "tpo", "width": 2, "depth": 1}})
    plain = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(
        **kw, stream=True, stream_options={"include_usage": True}))
    kinds = []
    for c in chunks:
        if c.usage is not None:
            kinds.append("usage")
        elif not c.choices:
            p = extra(c, "tpo")
            assert p is not None and {"step", "depth", "best_reward", "kept", "dropped"} <= set(p)
            assert p["depth"] == 1
            # The step's candidates (what the viewer renders), and TPO's record after step 0.
            assert [c["step"] for c in p["candidates"]] == [p["step"]] * 2
            assert p["kept"] + p["dropped"] == 2
            for c in p["candidates"]:
                assert (c["score"] is not None) or (c["dropped"] is not None), c
            if p["step"] == 0:
                assert "tpo_step" not in p
            else:
                assert p["tpo_step"]["step"] == p["step"]
                assert isinstance(p["tpo_step"]["critique"], str)
            kinds.append("progress")
        else:
            kinds.append("answer")
    assert kinds[0] == "progress", kinds
    first_answer = kinds.index("answer")
    assert set(kinds[:first_answer]) == {"progress"}
    assert set(kinds[first_answer:-1]) == {"answer"} and kinds[-1] == "usage", kinds
    steps = [extra(c, "tpo")["step"] for c in chunks if not c.choices and c.usage is None]
    assert steps == sorted(steps) and steps[-1] == 1
    answer = [c for c in chunks if c.choices]
    text = "".join(c.choices[0].delta.content or "" for c in answer)
    assert text == plain.choices[0].message.content
    assert answer[-1].choices[0].finish_reason == "stop"
    summary = extra(answer[-1], "tpo")
    assert summary["strategy"] == "tpo" and summary["completions"] == 6
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_models(client):
    ids = [m.id for m in client.models.list()]
    assert ids == [MODEL, MODEL + ":tpo", MODEL + ":bon", MODEL + ":darwin"]
    m = client.models.list().data[0]
    assert m.object == "model" and m.owned_by
    assert "judge" in extra(m, "reward_models")


def test_typed_errors(server, client):
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, temperature=5)
    assert e.value.status_code == 400
    assert e.value.body["param"] == "temperature"
    assert e.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.NotFoundError) as e:
        chat(client, model="gpt-4o")
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        chat(client, model=MODEL + ":nope")
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.models.list()
    assert e.value.body["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        chat(bad)
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, extra_body={"tools": [{"type": "function", "function": {"name": "f"}}]})
    assert e.value.body["param"] == "tools"
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, response_format={"type": "json_object"})
    assert e.value.body["param"] == "response_format"
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, n=0)
    assert e.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, max_tokens=5000)
    assert e.value.body["param"] == "max_tokens"
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, extra_body={"tpo": {"strategy": "tpo", "width": 99}})
    assert e.value.body["param"] == "tpo.width"
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}])
    assert e.value.body["param"] == "messages[0].content[0].type"
    # The streaming call raises the same, before any chunk.
    with pytest.raises(openai.BadRequestError):
        chat(client, temperature=-1, stream=True)


def test_legacy_completions(client):
    kw = dict(model=MODEL, prompt="The capital of France is", max_tokens=8, seed=2, temperature=0.8)
    r = client.completions.create(**kw)
    assert r.object == "text_completion" and r.id.startswith("cmpl-")
    assert len(r.choices) == 1 and r.choices[0].text
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0
    assert 0 < r.usage.completion_tokens <= 8
    streamed = "".join(c.choices[0].text for c in client.completions.create(**kw, stream=True)
                       if c.choices)
    assert streamed == r.choices[0].text
    two = client.completions.create(**{**kw, "n": 2})
    assert sorted(c.index for c in two.choices) == [0, 1]
    with pytest.raises(openai.BadRequestError):
        client.completions.create(**kw, echo=True)
    with pytest.raises(openai.BadRequestError):
        client.completions.create(**{**kw, "model": MODEL + ":tpo"})


def test_score(http):
    r = http.post("/v1/score", json={"items": [
        {"prompt": "What is 2+2?", "response": "4"},
        {"prompt": "What is 2+2?", "response": "Bananas are yellow."},
    ]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["reward_model"] == "judge"
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert all(math.isfinite(d["score"]) and d["error"] is None for d in body["data"])
    r = http.post("/v1/score", json={"reward_model": "similarity", "items": [
        {"prompt": "q", "response": "the cat sat", "reference": "the cat sat"}]})
    assert r.status_code == 200, r.text
    assert r.json()["data"][0]["score"] > 0.9


def test_request_id_header(http):
    r = http.get("/v1/models")
    assert r.headers.get("x-request-id")
    r = http.get("/v1/models", headers={"x-request-id": "abc-123"})
    assert r.headers.get("x-request-id") == "abc-123"


def test_health_and_openapi(base_url):
    r = httpx.get(base_url + "/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    doc = httpx.get(base_url + "/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/score", "/v1/models"):
        assert path in doc["paths"], path


def test_the_viewer_page_is_served_without_the_key(base_url):
    # A static page (the searches it runs go through /v1 with the key typed into it).
    for path in ("/", "/ui"):
        r = httpx.get(base_url + path, timeout=10)
        assert r.status_code == 200, (path, r.status_code)
        assert r.headers["content-type"].startswith("text/html")
        assert 'data-mode="live"' in r.text and "/v1/chat/completions" in r.text
    assert httpx.get(base_url + "/uix", timeout=10).status_code == 404
