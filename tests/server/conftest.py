"""Fixtures of the HTTP server's test suite: real `tpo serve` processes on free ports.

`server` is the session's main server (small search defaults, 8 KV slots); tests that
need other settings (tiny capacity, a server they may SIGTERM) start their own with
`start_server`. Each server's stderr goes to a log file under target/server-tests/, and
the tail of every log is attached to a failing test's report.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import openai
import pytest

ROOT = Path(__file__).resolve().parents[2]
# TPO_BIN runs the suite against another build (e.g. an older one, to see a test fail).
TPO = Path(os.environ.get("TPO_BIN", ROOT / "target" / "release" / "tpo"))
LOG_DIR = ROOT / "target" / "server-tests"
API_KEY = "test-key"
MODEL = "smollm2-135m-instruct"
# Loading the policy and both reward models takes a few seconds on a small machine.
STARTUP_TIMEOUT_S = float(os.environ.get("TPO_TEST_STARTUP_TIMEOUT", "180"))

# The main server: small searches so they finish in seconds on two CPU cores.
MAIN_ARGS = [
    "--kv-slots", "8",
    "--max-seq-len", "1024",
    "--body-limit", "262144",
    "--search-width", "2",
    "--search-depth", "1",
    "--search-max-new-tokens", "8",
    "--default-max-tokens", "16",
]

_LISTENING = re.compile(r"tpo serve: listening on (http://\S+)")
_servers: list["Server"] = []
# Figures tests report (bad-input count, overload counts), shown at the end of the run.
REPORT: list[str] = []


def known_flags(args: list[str]) -> list[str]:
    """`args` less the flags another build (TPO_BIN) does not know, so a test can still run
    against it and show what it does without them; the default build gets `args` as is."""
    if "TPO_BIN" not in os.environ:
        return args
    help_text = subprocess.run([str(TPO), "serve", "--help"], capture_output=True,
                               text=True).stdout
    out, skip = [], False
    for i, a in enumerate(args):
        if skip:
            skip = False
            continue
        if a.startswith("--") and a not in help_text:
            takes_value = i + 1 < len(args) and not args[i + 1].startswith("--")
            skip = takes_value
            continue
        out.append(a)
    return out


class Server:
    """One `tpo serve` process."""

    def __init__(self, name: str, args: list[str], api_key: str | None = API_KEY):
        if not TPO.exists():
            pytest.fail(f"{TPO} is missing: build it first (make build)")
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = LOG_DIR / f"{name}.log"
        self._log = open(self.log_path, "wb")
        key_args = ["--api-key", api_key] if api_key else []
        cmd = [str(TPO), "serve", "--port", "0", *key_args, *known_flags(args)]
        self._log.write(("$ " + " ".join(cmd) + "\n").encode())
        self._log.flush()
        env = dict(os.environ)
        env.pop("TPO_API_KEY", None)
        env.setdefault("RUST_LOG", "info")
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=self._log, stderr=self._log, env=env
        )
        _servers.append(self)
        self.startup_health: list[tuple[int, object]] = []
        self.url = self._wait_ready()

    def _wait_ready(self) -> str:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        url = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server {self.name} exited with {self.proc.returncode} while starting:\n"
                    + self.log_tail()
                )
            if url is None:
                m = _LISTENING.search(self.log_path.read_text(errors="replace"))
                if m:
                    url = m.group(1).replace("//0.0.0.0:", "//127.0.0.1:")
            if url is not None:
                try:
                    health = httpx.get(url + "/health", timeout=2)
                    if health.status_code == 200:
                        return url
                    # What /health said while the models loaded (test_health checks it).
                    self.startup_health.append((health.status_code, health.json()))
                except (httpx.HTTPError, ValueError):
                    pass
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"server {self.name} not ready after {STARTUP_TIMEOUT_S} s:\n" + self.log_tail())

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def terminate(self, timeout: float = 40.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit in time; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    # Helpers on the raw HTTP API.
    def headers(self, key: str = API_KEY) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def metrics_text(self) -> str:
        r = httpx.get(self.url + "/metrics", timeout=10)
        r.raise_for_status()
        return r.text

    def metrics(self) -> dict[tuple[str, frozenset], float]:
        return parse_metrics(self.metrics_text())

    def client(self, **kw) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=API_KEY, max_retries=0, **kw)


def parse_metrics(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample, by (name, labels)."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def metric_sum(samples: dict, name: str, **labels) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def start_server(name: str, args: list[str], api_key: str | None = API_KEY) -> Server:
    return Server(name, args, api_key=api_key)


@pytest.fixture(scope="session")
def server() -> Server:
    s = start_server("main", MAIN_ARGS)
    yield s
    s.terminate()


@pytest.fixture(scope="session")
def base_url(server: Server) -> str:
    return server.url


@pytest.fixture(scope="session")
def client(server: Server) -> openai.OpenAI:
    return server.client(timeout=120)


@pytest.fixture(scope="session")
def http(server: Server):
    with httpx.Client(base_url=server.url, headers=server.headers(), timeout=120) as c:
        yield c


def pytest_sessionfinish(session, exitstatus):
    for s in _servers:
        try:
            s.kill()
        except Exception:
            pass


def pytest_terminal_summary(terminalreporter):
    if REPORT:
        terminalreporter.section("tpo serve figures")
        for line in REPORT:
            terminalreporter.write_line(line)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for s in _servers:
            rep.sections.append((f"server {s.name} log (tail, {s.log_path})", s.log_tail(15)))
