// The search viewer in a real browser (headless Chromium driven by playwright-core):
//  1. the live page of a running `tpo serve` (embedded SmolLM2 policy and judge) runs a real
//     TPO search typed into its form and shows every step, its candidates and rewards, the
//     critique and suggestions, the chart and the final answer, which must equal the answer
//     the same seeded search gives through the API;
//  2. `tpo trace view` of that search's trace, opened from disk with the network cut off,
//     shows the same steps, candidates, rewards and answer.
// Screenshots go to docs/ (SCREENSHOTS=dir to change). Run by `make ui-test`.
//
// Environment: TPO (binary, default target/release/tpo), CHROMIUM (default /usr/bin/chromium).

import { chromium } from "playwright-core";
import { spawn, execFileSync } from "node:child_process";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const TPO = process.env.TPO || path.join(root, "target/release/tpo");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SHOTS = process.env.SCREENSHOTS || path.join(root, "docs");
const KEY = "ui-test-key";
const QUESTION = "How do I wrap a present neatly?";
const SEARCH = { strategy: "tpo", width: 3, depth: 2, max_tokens: 64, temperature: 0.7, seed: 7 };
const SEARCH_TIMEOUT_MS = 15 * 60 * 1000;

const work = fs.mkdtempSync(path.join(os.tmpdir(), "tpo-ui-"));
let server = null;
let browser = null;

function log(...args) {
  console.log("[ui-test]", ...args);
}

// `tpo serve` on a free port; resolves with its base URL once /health says ok.
async function startServer() {
  const out = fs.openSync(path.join(work, "serve.log"), "w");
  server = spawn(TPO, ["serve", "--port", "0", "--api-key", KEY, "--reward-model", "judge"], {
    stdio: ["ignore", out, "pipe"],
  });
  let stderr = "";
  const url = await new Promise((resolve, reject) => {
    server.stderr.on("data", (d) => {
      stderr += d;
      fs.appendFileSync(path.join(work, "serve.log"), d);
      const m = /listening on (http:\/\/[^\s]+)/.exec(stderr);
      if (m) resolve(m[1]);
    });
    server.on("exit", (code) => reject(new Error(`tpo serve exited ${code}:\n${stderr.slice(-2000)}`)));
  });
  for (let i = 0; i < 600; i++) {
    try {
      const r = await fetch(`${url}/health`);
      if (r.ok && (await r.json()).status === "ok") return url;
    } catch { /* not up yet */ }
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error("tpo serve never became healthy");
}

async function launch() {
  return chromium.launchPersistentContext(fs.mkdtempSync(path.join(work, "profile-")), {
    executablePath: CHROMIUM,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    viewport: { width: 1200, height: 900 },
  });
}

// Polls `done` until it holds, failing after `ms` with what was awaited.
async function waitUntil(done, ms, what) {
  const until = Date.now() + ms;
  while (!done()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// Script errors and console errors go to `errors`; every HTTP response with a failing status
// goes to `failed` as "STATUS PATH". Chromium's own console report of a failed fetch ("Failed to
// load resource: ... status of N") is left out of `errors`: it arrives on the browser's schedule,
// sometimes before and sometimes after the page has handled the response, while the response
// itself is recorded exactly, in `failed`.
function watchErrors(page, errors, failed) {
  page.on("pageerror", (e) => errors.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    if (/^Failed to load resource: the server responded with a status of \d+/.test(m.text())) return;
    errors.push(`console: ${m.text()}`);
  });
  page.on("response", (r) => { if (r.status() >= 400) failed.push(`${r.status()} ${new URL(r.url()).pathname}`); });
}

// What the page shows, read from the DOM.
async function shown(page) {
  return page.evaluate(() => ({
    steps: [...document.querySelectorAll("article.step")].map((a) => ({
      step: Number(a.dataset.step),
      best: a.querySelector(".best-so-far").textContent,
      critique: a.querySelector(".critique")?.textContent ?? null,
      suggestions: a.querySelector(".suggestions")?.textContent ?? null,
      candidates: [...a.querySelectorAll("tr[data-testid=candidate]")].map((tr) => ({
        id: Number(tr.dataset.id),
        reward: tr.querySelector(".reward-cell").textContent,
        status: tr.querySelector(".status").textContent,
        text: tr.querySelector(".answer-text").textContent,
      })),
    })),
    answer: document.getElementById("final-answer").textContent,
    reward: document.getElementById("final-reward").textContent,
    cost: document.getElementById("final-cost").textContent,
    finalHidden: document.getElementById("final").hidden,
    chartDots: document.querySelectorAll("#chart circle").length,
    status: document.getElementById("status").textContent,
  }));
}

function checkSearchView(v, label) {
  assert.equal(v.finalHidden, false, `${label}: the answer is shown`);
  assert.deepEqual(v.steps.map((s) => s.step), [0, 1, 2], `${label}: step 0 and both TPO steps`);
  for (const s of v.steps) {
    assert.equal(s.candidates.length, SEARCH.width, `${label}: step ${s.step} shows its ${SEARCH.width} candidates`);
    assert.match(s.best, /^best so far -?\d+\.\d{3}$/, `${label}: step ${s.step} best reward`);
    for (const c of s.candidates) {
      const scored = /^-?\d+\.\d{3}$/.test(c.reward);
      const dropped = c.status.startsWith("dropped: ");
      assert.ok(scored || dropped, `${label}: candidate #${c.id} has a reward or a drop reason (${c.reward}, ${c.status})`);
      if (dropped) assert.match(c.status, /^dropped: (leaked_prompt|echo|repetition|meta|empty|no_opening_tag|unscored)$/);
    }
    if (s.step > 0) {
      assert.ok(s.critique && s.critique.trim().length > 0, `${label}: step ${s.step} shows its critique`);
      assert.ok(s.suggestions && s.suggestions.trim().length > 0, `${label}: step ${s.step} shows its suggestions`);
    }
  }
  const ids = v.steps.flatMap((s) => s.candidates.map((c) => c.id));
  assert.deepEqual(ids, [...Array(SEARCH.width * 3).keys()], `${label}: every candidate once, in id order`);
  assert.ok(v.answer.trim().length > 0, `${label}: a non-empty answer`);
  const texts = v.steps.flatMap((s) => s.candidates.map((c) => c.text));
  assert.ok(texts.includes(v.answer), `${label}: the answer is one of the candidates shown`);
  assert.match(v.reward, /^reward -?\d+\.\d{3}$/, `${label}: the answer's reward`);
  assert.equal(v.steps[2].best, `best so far ${v.reward.slice("reward ".length)}`, `${label}: the last best is the answer's reward`);
  assert.match(v.cost, /7 policy calls · 13 completions · \d+ tokens generated · \d+ prompt tokens · \d+ reward scorings · [\d.]+ s/, `${label}: the cost`);
  assert.equal(v.chartDots, 3, `${label}: one chart point per step`);
}

async function liveSearch(url) {
  const context = await launch();
  browser = context;
  const page = await context.newPage();
  const errors = [];
  const failed = [];
  watchErrors(page, errors, failed);
  await page.goto(`${url}/ui`);
  // Without the key the page says it cannot list the models; with it, it connects.
  await page.waitForFunction(() => document.getElementById("status").textContent.includes("cannot list models"));
  await waitUntil(() => failed.length > 0, 10_000, "the keyless model listing's response");
  await page.fill("#api-key", KEY);
  await page.dispatchEvent("#api-key", "change");
  await page.waitForFunction(() => document.getElementById("status").textContent.startsWith("connected"));
  // The keyless model listing was refused (401), as it must be; nothing else may fail.
  assert.deepEqual(failed, ["401 /v1/models"], "only the keyless model listing was refused");
  const rms = await page.$$eval("#reward-model option", (o) => o.map((x) => x.value));
  assert.ok(rms.includes("judge"), `the reward models are listed: ${rms}`);
  await page.fill("#question", QUESTION);
  await page.selectOption("#strategy", SEARCH.strategy);
  await page.selectOption("#reward-model", "judge");
  await page.fill("#width", String(SEARCH.width));
  await page.fill("#depth", String(SEARCH.depth));
  await page.fill("#max-tokens", String(SEARCH.max_tokens));
  await page.fill("#temperature", String(SEARCH.temperature));
  await page.fill("#seed", String(SEARCH.seed));
  const started = Date.now();
  await page.click("#run");
  // Steps appear while the search runs, before the answer.
  await page.waitForSelector("article.step[data-step='0']", { timeout: SEARCH_TIMEOUT_MS });
  const early = await shown(page);
  log(`step 0 shown after ${((Date.now() - started) / 1000).toFixed(1)} s; answer shown yet: ${!early.finalHidden}`);
  assert.equal(early.finalHidden, true, "step 0 is shown before the answer (progress is live)");
  await page.waitForFunction(() => ["done", "error"].some((w) => document.getElementById("status").textContent.startsWith(w)), null, { timeout: SEARCH_TIMEOUT_MS });
  const view = await shown(page);
  assert.equal(view.status, "done", `the search finished: ${view.status}`);
  log(`search done after ${((Date.now() - started) / 1000).toFixed(1)} s: ${view.reward}`);
  checkSearchView(view, "live");
  assert.deepEqual(errors, [], "no script errors");
  assert.deepEqual(failed, ["401 /v1/models"], "no keyed request failed");
  fs.mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, "viewer-live.png"), fullPage: true });
  await context.close();
  browser = null;
  return view;
}

// The same seeded search through the API (non-streamed, with its trace).
async function apiSearch(url) {
  const auth = { Authorization: `Bearer ${KEY}` };
  const models = await (await fetch(`${url}/v1/models`, { headers: auth })).json();
  const model = models.data.find((m) => !m.strategy).id;
  const r = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${KEY}` },
    body: JSON.stringify({
      model, messages: [{ role: "user", content: QUESTION }],
      max_tokens: SEARCH.max_tokens, temperature: SEARCH.temperature, seed: SEARCH.seed,
      tpo: { strategy: SEARCH.strategy, width: SEARCH.width, depth: SEARCH.depth, reward_model: "judge", return_trace: true },
    }),
  });
  const body = await r.json();
  assert.equal(r.status, 200, JSON.stringify(body));
  return body;
}

async function traceView(trace) {
  const tracePath = path.join(work, "search.trace.json");
  fs.writeFileSync(tracePath, JSON.stringify(trace, null, 2));
  const out = path.join(work, "search.html");
  execFileSync(TPO, ["trace", "view", tracePath, "--output", out], { stdio: "inherit" });
  const context = await launch();
  browser = context;
  // No network at view time: every request but the file itself is refused.
  const requests = [];
  await context.route("**/*", (route) => {
    const u = route.request().url();
    if (u.startsWith("file://")) return route.continue();
    requests.push(u);
    return route.abort();
  });
  const page = await context.newPage();
  const errors = [];
  const failed = [];
  watchErrors(page, errors, failed);
  await page.goto(`file://${out}`);
  await page.waitForSelector("article.step");
  const view = await shown(page);
  checkSearchView(view, "trace view");
  assert.equal(await page.isVisible("#controls"), false, "no search form in a saved trace");
  assert.deepEqual(requests, [], "the page asks for nothing over the network");
  assert.deepEqual(errors, [], "no script errors");
  assert.deepEqual(failed, [], "no failed responses");
  await page.screenshot({ path: path.join(SHOTS, "viewer-trace.png"), fullPage: true });
  await context.close();
  browser = null;
  return view;
}

async function main() {
  assert.ok(fs.existsSync(TPO), `${TPO} (run make build)`);
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} (apt-get install chromium)`);
  const url = await startServer();
  log(`tpo serve at ${url}`);
  const live = await liveSearch(url);
  const api = await apiSearch(url);
  assert.equal(live.answer, api.choices[0].message.content, "the page's answer is the API's for the same seeded search");
  const saved = await traceView(api.tpo.trace);
  assert.deepEqual(saved.steps, live.steps, "the saved trace shows the same steps, candidates and rewards as the live page");
  assert.equal(saved.answer, live.answer);
  assert.equal(saved.reward, live.reward);
  log(`ok: live page and trace view agree (${live.steps.length} steps, ${live.reward}); screenshots in ${SHOTS}`);
}

try {
  await main();
} catch (e) {
  console.error("[ui-test] FAILED:", e.message);
  const logPath = path.join(work, "serve.log");
  if (fs.existsSync(logPath)) console.error(fs.readFileSync(logPath, "utf8").slice(-3000));
  process.exitCode = 1;
} finally {
  if (browser) await browser.close().catch(() => {});
  if (server) server.kill("SIGTERM");
}
