"""/health while loading: the server binds first and answers 503 {"status": "loading"} until
every model is loaded, then 200 {"status": "ok"}."""

from __future__ import annotations

import httpx


def test_health_is_503_loading_until_the_models_are_loaded(server):
    # Loading the policy and two reward models takes seconds; the fixture polls /health
    # every 0.2 s from the moment the server prints its address.
    assert server.startup_health, "no /health answer was seen before the server was ready"
    for status, body in server.startup_health:
        assert status == 503, (status, body)
        assert body == {"status": "loading"}, body
    ready = httpx.get(server.url + "/health", timeout=5)
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok"}
