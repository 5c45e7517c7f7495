"""Hostile and malformed requests: every one a 4xx in OpenAI's error shape, the server
still alive afterwards, and a valid request still answered."""

from __future__ import annotations

import json

import httpx

from conftest import API_KEY, MODEL, REPORT

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
SCORE = "/v1/score"
GOOD_CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
GOOD_COMPLETION = {"model": MODEL, "prompt": "Hi", "max_tokens": 4}
GOOD_SCORE = {"items": [{"prompt": "q", "response": "a"}]}
AUTH = {"Authorization": f"Bearer {API_KEY}"}
JSON_CT = {"Content-Type": "application/json"}
BODY_LIMIT = 262144  # --body-limit of the main server (conftest.MAIN_ARGS)


class Case:
    """One request expected to fail with a 4xx."""

    def __init__(self, name, path=CHAT, body=None, raw=None, method="POST", headers=None,
                 status=None):
        self.name = name
        self.path = path
        self.method = method
        self.headers = {**AUTH, **JSON_CT, **(headers or {})}
        self.headers = {k: v for k, v in self.headers.items() if v is not None}
        if raw is not None:
            self.content = raw if isinstance(raw, bytes) else raw.encode()
        elif body is not None:
            self.content = json.dumps(body, allow_nan=True).encode()
        else:
            self.content = None
        self.status = status


def with_field(base, key, value):
    body = json.loads(json.dumps(base))
    body[key] = value
    return body


def chat_with(**fields):
    body = json.loads(json.dumps(GOOD_CHAT))
    body.update(fields)
    return body


# Wrong values per chat field (each one is invalid for its field, by type or range).
WRONG_TYPES = ["text", 1, -1, 1.5, True, [], {}, [1], {"a": 1}]
CHAT_FIELD_BAD = {
    "model": [1, 1.5, True, [], {}, None, [MODEL], "", "gpt-4o", MODEL + ":", MODEL + ":xyz",
              ":tpo", MODEL.upper(), "x" * 20000],
    "messages": ["hi", 1, {}, None, True, [], [1], ["hi"], [None], [[]], [{}],
                 [{"role": "user"}], [{"content": "x"}], [{"role": 1, "content": "x"}],
                 [{"role": "user", "content": 1}], [{"role": "user", "content": True}],
                 [{"role": "user", "content": {"text": "x"}}],
                 [{"role": "user", "content": "x", "extra": 1}],
                 [{"role": "user", "content": "x", "tool_calls": []}],
                 [{"role": "user", "content": "x", "name": 5}],
                 [{"role": "tool", "content": "x"}], [{"role": "function", "content": "x"}],
                 [{"role": "", "content": "x"}], [{"role": "USER", "content": "x"}],
                 [{"role": "robot", "content": "x"}], [{"role": "assistant", "content": None}],
                 [{"role": "user", "content": ["x"]}], [{"role": "user", "content": [1]}],
                 [{"role": "user", "content": [{"text": "x"}]}],
                 [{"role": "user", "content": [{"type": "text"}]}],
                 [{"role": "user", "content": [{"type": "text", "text": 1}]}],
                 [{"role": "user", "content": [{"type": "text", "text": "x", "more": 1}]}],
                 [{"role": "user", "content": [{"type": "image_url",
                                                "image_url": {"url": "http://x/a.png"}}]}],
                 [{"role": "user", "content": [{"type": "input_audio",
                                                "input_audio": {"data": "AAAA", "format": "wav"}}]}],
                 [{"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}],
                 [{"role": "user", "content": [{"type": 7, "text": "x"}]}],
                 [{"role": "user", "content": "word " * 6000}]],
    "temperature": ["1", True, [], {}, -0.01, 2.01, 1e30, -1e30, 100],
    "top_p": ["1", True, [], {}, 0, 0.0, -0.1, 1.01, 1e30],
    "max_tokens": ["8", True, 1.5, -1, 0, 2**32, 10**30, [], {}, 1024, 10**6],
    "max_completion_tokens": ["8", True, 1.5, -1, 0, 2**32, [], 5000],
    "n": ["1", True, 1.5, -1, 0, 9, 2**40, [], {}],
    "seed": ["1", True, 1.5, -1, -(2**63), 2**63, 2**64, [], {}],
    "stop": [1, True, {}, [1], [None], "", [""], ["a", "b", "c", "d", "e"], [[]], [["a"]]],
    "stream": ["true", 1, 0, [], {}, "yes"],
    "stream_options": ["x", 1, [], {"bogus": 1}, {"include_usage": "yes"},
                       {"include_usage": True}],
    "logprobs": ["true", 1, [], {}],
    "top_logprobs": ["3", -1, 1.5, [], 3],
    "presence_penalty": ["0", True, -2.01, 2.01, 1e30, [], {}],
    "frequency_penalty": ["0", True, -2.01, 2.01, -1e30, [], {}],
    "user": [1, True, [], {}, 1.5],
    "tpo": ["tpo", 1, True, [], [{"strategy": "tpo"}],
            {"strategy": 1}, {"strategy": "bogus"}, {"strategy": ""}, {"strategy": "TPO "},
            {"nope": 1}, {"strategy": "tpo", "nope": 1},
            {"strategy": "tpo", "width": 0}, {"strategy": "tpo", "width": 9},
            {"strategy": "tpo", "width": -1}, {"strategy": "tpo", "width": "2"},
            {"strategy": "tpo", "width": 2**32}, {"strategy": "tpo", "depth": -1},
            {"strategy": "tpo", "depth": "1"}, {"strategy": "tpo", "depth": 1.5},
            {"strategy": "tpo", "depth": 2**32 - 1}, {"strategy": "darwin", "iterations": 2**32 - 1},
            {"width": 2}, {"depth": 1}, {"reward_model": "judge"}, {"return_trace": True},
            {"strategy": "none", "width": 2},
            {"strategy": "bon", "width": 100},
            {"strategy": "darwin", "mutations": 0}, {"strategy": "darwin", "mutations": 9},
            {"strategy": "darwin", "mutations": 2, "keep": 3},
            {"strategy": "darwin", "keep": 0}, {"strategy": "darwin", "iterations": 0},
            {"strategy": "darwin", "replace_every": 0},
            {"strategy": "tpo", "reward_model": "nope"}, {"strategy": "tpo", "reward_model": 1},
            {"strategy": "tpo", "reference": 1}, {"strategy": "tpo", "return_trace": "yes"}],
}

# Fields OpenAI has and this server refuses by name, with plausible values.
UNSUPPORTED = {
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "functions": [{"name": "f"}],
    "function_call": "auto",
    "response_format": {"type": "json_object"},
    "logit_bias": {"50256": -100},
    "audio": {"voice": "alloy", "format": "wav"},
    "modalities": ["text", "audio"],
    "prediction": {"type": "content", "content": "x"},
    "service_tier": "auto",
    "store": True,
    "metadata": {"a": "b"},
    "reasoning_effort": "low",
    "web_search_options": {},
    "best_of": 2,
    "echo": True,
    "suffix": "x",
}
UNKNOWN_FIELDS = ["foo", "Model", "temperatur", "", " model", "max_token", "tpo_options",
                  "__proto__", "constructor", "x" * 1000]

SEARCH_FORBIDDEN = [  # fields a search does not take
    {"n": 2}, {"logprobs": True}, {"top_logprobs": 2, "logprobs": True}, {"stop": ["x"]},
    {"presence_penalty": 1.0}, {"frequency_penalty": 0.5},
    {"messages": [{"role": "system", "content": "be nice"}, {"role": "user", "content": "q"}]},
    {"messages": [{"role": "assistant", "content": "q"}]},
    {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
    {"max_tokens": 1024}, {"temperature": 3}, {"top_p": 1.5}, {"seed": -5},
]

BAD_JSON = [
    "", " ", "{", "}", "[", "{\"model\":", "{\"model\": \"x\"", "{'model': 'x'}", "{model: 1}",
    "null", "true", "1", "\"str\"", "[]", "[{}]", "{\"a\":1,}", "{,}", "{\"a\" 1}",
    "{\"a\":1} {\"b\":2}", "{\"a\":1}garbage", "/* c */ {}", "{\"a\": 01}", "{\"a\": .5}",
    "{\"a\": +1}", "{\"a\": 0x10}", "{\"a\": \"\\x41\"}", "{\"a\": \"\\u12\"}",
    "{\"a\": \"tab\there\"}", "{\"a\": undefined}", "\ufeff{}",
    '{"model": "m", "messages": [], "temperature": NaN}',
    '{"model": "m", "messages": [], "temperature": Infinity}',
    '{"model": "m", "messages": [], "temperature": -Infinity}',
    '{"model": "m", "messages": [], "temperature": nan}',
    '{"model": "m", "messages": [], "temperature": 1e400}',
    '{"model": "m", "messages": [], "max_tokens": 1e400}',
    '{"model": "m", "messages": [], "seed": 99999999999999999999999999999}',
    '{"model": "' + MODEL + '", "messages": [{"role": "user", "content": "\\ud800"}]}',
    '{"model": "' + MODEL + '", "messages": [{"role": "user", "content": "\\udc00x"}]}',
]


def hand_cases():
    cases = []
    for i, raw in enumerate(BAD_JSON):
        cases.append(Case(f"bad json {i}: {raw[:30]!r}", raw=raw))
    # JSON values that parse, then get refused.
    cases.append(Case("temperature 1e39 (f32 overflow)", raw=json.dumps(GOOD_CHAT)[:-1] + ', "temperature": 1e39}'))
    # Invalid UTF-8, in several places.
    good = json.dumps(GOOD_CHAT).encode()
    for i, junk in enumerate([b"\xff", b"\xc3\x28", b"\xe2\x82", b"\xf0\x28\x8c\xbc", b"\xc0\xaf",
                              b"\xed\xa0\x80", b"\x80\x80", b"\xfe\xfe\xff\xff"]):
        content = good.replace(b'"Hi"', b'"H' + junk + b'i"')
        cases.append(Case(f"invalid utf-8 {i} in content", raw=content))
        cases.append(Case(f"invalid utf-8 {i} before body", raw=junk + good))
    cases.append(Case("NUL byte raw", raw=b'{"model": "x\x00"}'))
    cases.append(Case("UTF-16 body", raw=json.dumps(GOOD_CHAT).encode("utf-16")))
    # Deeply nested JSON, as the body and inside a field.
    cases.append(Case("deep arrays", raw="[" * 100000 + "]" * 100000))
    cases.append(Case("deep objects", raw='{"a":' * 50000 + "1" + "}" * 50000))
    cases.append(Case("deep unclosed", raw="[" * 200000))
    deep_field = json.dumps(GOOD_CHAT)[:-1] + ', "user": ' + "[" * 5000 + "]" * 5000 + "}"
    cases.append(Case("deep field", raw=deep_field))
    deep_content = json.dumps(chat_with(messages=[{"role": "user", "content": "x"}]))
    deep_content = deep_content.replace('"x"', "[" * 3000 + "]" * 3000)
    cases.append(Case("deep content", raw=deep_content))
    # Oversized bodies (over --body-limit), declared and chunked.
    big = json.dumps(chat_with(messages=[{"role": "user", "content": "a" * (BODY_LIMIT + 10)}]))
    cases.append(Case("body over the limit", raw=big))
    cases.append(Case("body far over the limit", raw=b" " * (4 * BODY_LIMIT)))
    cases.append(Case("body over the limit, completions", path=COMPLETIONS, raw=big))
    cases.append(Case("body over the limit, score", path=SCORE, raw=big))
    # Many messages / many stops / huge strings within the limit.
    many = [{"role": "user", "content": "hi"}] * 3000
    cases.append(Case("3000 messages (over the context)", body=chat_with(messages=many)))
    # Content type.
    body = json.dumps(GOOD_CHAT)
    for ct in [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
               "application/jsonx", "json", "application/xml", "", "*/*", "application/json-seq",
               "text/json"]:
        cases.append(Case(f"content-type {ct!r}", raw=body, headers={"Content-Type": ct}))
    cases.append(Case("form body", raw="model=x&messages=y",
                      headers={"Content-Type": "application/x-www-form-urlencoded"}))
    # Auth.
    for name, value in [("no key", None), ("wrong key", "Bearer nope"), ("bare scheme", "Bearer"),
                        ("no scheme", API_KEY), ("basic", "Basic dGVzdDprZXk="),
                        ("key with suffix", f"Bearer {API_KEY}x"), ("key prefix", "Bearer test"),
                        ("double space", f"Bearer  {API_KEY}"), ("lowercase key", f"Bearer {API_KEY.upper()}"),
                        ("huge key", "Bearer " + "k" * 6000)]:
        for path in (CHAT, COMPLETIONS, SCORE):
            cases.append(Case(f"auth {name} {path}", path=path, raw=body,
                              headers={"Authorization": value}))
        cases.append(Case(f"auth {name} models", path="/v1/models", method="GET",
                          headers={"Authorization": value}))
    # Methods and paths.
    for method in ["GET", "PUT", "DELETE", "PATCH"]:
        for path in (CHAT, COMPLETIONS, SCORE):
            cases.append(Case(f"{method} {path}", path=path, method=method,
                              raw=body if method != "GET" else None))
    for method in ["POST", "PUT", "DELETE"]:
        cases.append(Case(f"{method} /v1/models", path="/v1/models", method=method, raw=body))
        cases.append(Case(f"{method} /health", path="/health", method=method, raw=body))
        cases.append(Case(f"{method} /metrics", path="/metrics", method=method, raw=body))
    for path in ["/v1/chat/completion", "/v1/chat", "/v1", "/v2/chat/completions",
                 "/v1/embeddings", "/v1/models/" + MODEL, "/v1/files", "/../etc/passwd",
                 "/v1/chat/completions/", "/%2e%2e/", "/v1/moderations", "/" + "a" * 4000]:
        cases.append(Case(f"path {path[:40]}", path=path, raw=body))
    # Legacy completions.
    for field, values in {
        "prompt": [None, 1, [], ["a", "b"], [1, 2, 3], [[1, 2]], "", {}, True],
        "model": [MODEL + ":tpo", MODEL + ":bon", "nope", 1, None],
        "max_tokens": [0, -1, 10**6, "4"], "n": [0, 9], "temperature": [-1, 3],
        "top_p": [0, 2], "seed": [-1, "x"], "stop": [[""], ["a"] * 5],
        "stream_options": [{"include_usage": True}],
        "logprobs": [1, 5], "echo": [True], "suffix": ["x"], "best_of": [2],
        "logit_bias": [{}], "tools": [[]], "response_format": [{"type": "text"}],
        "messages": [[{"role": "user", "content": "x"}]], "tpo": [{"strategy": "tpo"}],
    }.items():
        for v in values:
            cases.append(Case(f"completions {field}={str(v)[:30]}", path=COMPLETIONS,
                              body=with_field(GOOD_COMPLETION, field, v)))
    cases.append(Case("completions no prompt", path=COMPLETIONS, body={"model": MODEL}))
    cases.append(Case("completions no model", path=COMPLETIONS, body={"prompt": "x"}))
    cases.append(Case("completions prompt too long", path=COMPLETIONS,
                      body=with_field(GOOD_COMPLETION, "prompt", "word " * 6000)))
    # Score.
    for name, b in [
        ("no items", {}), ("items empty", {"items": []}), ("items null", {"items": None}),
        ("items str", {"items": "x"}), ("items 257", {"items": [{"prompt": "q", "response": "a"}] * 257}),
        ("item no response", {"items": [{"prompt": "q"}]}), ("item no prompt", {"items": [{"response": "a"}]}),
        ("item extra", {"items": [{"prompt": "q", "response": "a", "x": 1}]}),
        ("item int", {"items": [1]}), ("item prompt int", {"items": [{"prompt": 1, "response": "a"}]}),
        ("reward model nope", {**GOOD_SCORE, "reward_model": "nope"}),
        ("reward model int", {**GOOD_SCORE, "reward_model": 1}),
        ("unknown field", {**GOOD_SCORE, "model": MODEL}),
    ]:
        cases.append(Case(f"score {name}", path=SCORE, body=b))
    # Chat requests missing required fields.
    cases.append(Case("chat no model", body={"messages": GOOD_CHAT["messages"]}))
    cases.append(Case("chat no messages", body={"model": MODEL}))
    cases.append(Case("chat empty object", body={}))
    cases.append(Case("both max_tokens fields", body=chat_with(max_completion_tokens=4)))
    cases.append(Case("max_tokens over the context left",
                      body=chat_with(max_tokens=1020, messages=[{"role": "user", "content": "hello " * 50}])))
    return cases


def generated_cases():
    cases = []
    for field, values in CHAT_FIELD_BAD.items():
        for v in values:
            cases.append(Case(f"chat {field}={json.dumps(v)[:40]}", body=chat_with(**{field: v})))
    for field, v in UNSUPPORTED.items():
        cases.append(Case(f"unsupported {field}", body=chat_with(**{field: v})))
    for field in UNKNOWN_FIELDS:
        cases.append(Case(f"unknown field {field[:20]!r}", body=chat_with(**{field: 1})))
    # Every wrong type for every optional scalar field of the extension object.
    for key in ["width", "depth", "mutations", "replace_every", "keep", "iterations"]:
        for v in ["2", -1, 1.5, True, [], {}, 2**33]:
            cases.append(Case(f"tpo.{key}={v!r}", body=chat_with(tpo={"strategy": "tpo", key: v})))
    for key in ["strategy", "reward_model", "reference", "return_trace"]:
        for v in [1, [], {}] + ([1.5] if key != "return_trace" else ["x"]):
            cases.append(Case(f"tpo.{key}={v!r}", body=chat_with(tpo={"strategy": "tpo", key: v}
                                                               if key != "strategy" else {key: v})))
    for i, f in enumerate(SEARCH_FORBIDDEN):
        cases.append(Case(f"search with {list(f)}", body={**chat_with(model=MODEL + ":tpo"), **f}))
        cases.append(Case(f"search ext with {list(f)}",
                          body={**chat_with(tpo={"strategy": "bon"}), **f}))
    return cases


def all_cases():
    return hand_cases() + generated_cases()


def check_error_shape(case, r):
    assert 400 <= r.status_code < 500, f"{case.name}: status {r.status_code}: {r.text[:300]}"
    if case.status is not None:
        assert r.status_code == case.status, f"{case.name}: {r.status_code}"
    assert r.headers.get("content-type", "").startswith("application/json"), \
        f"{case.name}: content-type {r.headers.get('content-type')!r}: {r.text[:200]}"
    body = r.json()
    assert set(body) == {"error"}, f"{case.name}: {body}"
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, f"{case.name}: {err}"
    assert isinstance(err["message"], str) and err["message"], case.name
    assert isinstance(err["type"], str) and err["type"], case.name
    assert err["param"] is None or isinstance(err["param"], str), case.name
    assert err["code"] is None or isinstance(err["code"], str), case.name
    if r.status_code == 401:
        assert err["type"] == "authentication_error"
    elif r.status_code == 400:
        assert err["type"] == "invalid_request_error"


def test_bad_input_corpus(server):
    cases = all_cases()
    assert len(cases) >= 200, len(cases)
    statuses: dict[int, int] = {}
    failures = []
    # One connection per request: a refused request whose body the server never read can
    # break the next request on a kept-alive connection (test_refused_body_keeps_alive).
    no_reuse = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=server.url, timeout=30, limits=no_reuse) as http:
        for case in cases:
            try:
                r = http.request(case.method, case.path, content=case.content, headers=case.headers)
                check_error_shape(case, r)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            except AssertionError as e:
                failures.append(str(e))
            except httpx.HTTPError as e:
                failures.append(f"{case.name}: transport error {e!r}")
            assert server.alive(), f"the server died on {case.name}:\n{server.log_tail()}"
    line = f"bad-input corpus: {len(cases)} requests, statuses {dict(sorted(statuses.items()))}"
    print(line)
    REPORT.append(line)
    assert not failures, f"{len(failures)} of {len(cases)} failed:\n" + "\n".join(failures[:40])
    # Still alive and still serving.
    assert server.alive()
    with httpx.Client(base_url=server.url, timeout=60, headers=AUTH) as http:
        r = http.post(CHAT, json=GOOD_CHAT)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"]
        r = http.post(COMPLETIONS, json=GOOD_COMPLETION)
        assert r.status_code == 200, r.text
        assert httpx.get(server.url + "/health").status_code == 200


def test_statuses_of_specific_cases(server):
    """The status classes the official clients map to their exceptions."""
    body = json.dumps(GOOD_CHAT)
    expect = [
        (Case("wrong key", raw=body, headers={"Authorization": "Bearer nope"}), 401),
        (Case("unknown model", body=chat_with(model="nope")), 404),
        (Case("unknown path", path="/v1/nope", raw=body), 404),
        (Case("GET chat", method="GET"), 405),
        (Case("text/plain", raw=body, headers={"Content-Type": "text/plain"}), 415),
        (Case("too large", raw=b" " * (BODY_LIMIT + 1)), 413),
        (Case("bad json", raw="{"), 400),
        (Case("tools", body=chat_with(tools=[])), 400),
        (Case("depth 65", body=chat_with(tpo={"strategy": "tpo", "depth": 65})), 400),
        (Case("iterations 65", body=chat_with(tpo={"strategy": "darwin", "iterations": 65})), 400),
    ]
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for case, status in expect:
            r = http.request(case.method, case.path, content=case.content, headers=case.headers)
            assert r.status_code == status, f"{case.name}: {r.status_code} {r.text[:200]}"
            check_error_shape(case, r)
            if case.name.startswith(("depth", "iterations")):
                assert r.json()["error"]["param"] == "tpo." + case.name.split()[0]


ROUNDS = 600


def test_refused_body_keeps_alive(server):
    """A request refused before its body is read (wrong key, unknown path, wrong method)
    must leave the kept-alive connection usable, or close it saying so
    (`Connection: close`); the client's next request on it must not fail."""
    bodies = [json.dumps(GOOD_CHAT).encode(),
              json.dumps(chat_with(messages=[{"role": "user", "content": "x" * 50_000}])).encode()]
    refusals = [
        ("POST", CHAT, {"Authorization": "Bearer nope"}),
        ("POST", "/v1/nope", AUTH),
        ("PUT", CHAT, AUTH),
    ]
    failures = 0
    closes = 0
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for i in range(ROUNDS):
            method, path, headers = refusals[i % len(refusals)]
            body = bodies[(i // len(refusals)) % len(bodies)]
            try:
                r = http.request(method, path, content=body, headers={**JSON_CT, **headers})
                assert 400 <= r.status_code < 500
                closes += r.headers.get("connection", "").lower() == "close"
                assert http.get("/health").status_code == 200
            except httpx.TransportError:
                failures += 1
    assert failures == 0, (f"{failures} of {ROUNDS} requests after a refused request failed on "
                           f"the reused connection ({closes} responses said Connection: close)")
