// tpo-engine search viewer: renders a search as it runs (live mode: from the streamed
// progress of POST /v1/chat/completions) or as it was saved (trace mode: the views embedded
// in the page by `tpo trace view`). One data shape for both:
//   { query, strategy, reward_model, settings, events: [StepEvent...], final: Final|null }
// where a StepEvent is the server's `tpo` progress object (step, depth, best_reward, kept,
// dropped, candidates, tpo_step?, darwin_iteration?) and Final is { answer, reward,
// all_dropped, policy_calls, completions, reward_scorings, prompt_tokens,
// tokens_generated, seconds, dropped_by_reason }.
"use strict";

const $ = (id) => document.getElementById(id);

// An element with attributes and children (strings become text nodes: nothing is parsed as
// HTML, so model output cannot inject markup).
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

const fmt = (x) => (x === null || x === undefined || Number.isNaN(x) ? "—" : Number(x).toFixed(3));
const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

function setStatus(text, isError) {
  const s = $("status");
  s.textContent = text;
  s.className = isError ? "error" : "";
}

// ---- rendering -------------------------------------------------------------------------

function render(view) {
  $("overview").hidden = false;
  $("query").textContent = view.query;
  $("settings").textContent = view.settings;
  drawChart(view.events);
  const roles = rolesOf(view.events);
  const steps = $("steps");
  steps.replaceChildren(...view.events.map((e) => stepCard(e, view, roles)));
  renderFinal(view.final);
}

function stepTitle(e, view) {
  if (e.darwin_iteration) return `Iteration ${e.step} of ${e.depth}`;
  if (e.step === 0) {
    if (view.strategy === "greedy") return "Greedy answer";
    if (view.strategy === "bon") return `${plural(e.candidates.length, "sample")} (Best-of-N)`;
    return `Step 0: ${plural(e.candidates.length, "initial sample")}`;
  }
  return `Step ${e.step} of ${e.depth}: critique, suggestions, rewrites`;
}

// Candidate id -> the TPO steps that took it as chosen or rejected.
function rolesOf(events) {
  const roles = {};
  const add = (id, role, step) => (roles[id] = roles[id] || []).push({ role, step });
  for (const e of events) {
    if (!e.tpo_step) continue;
    add(e.tpo_step.chosen_id, "chosen", e.step);
    add(e.tpo_step.rejected_id, "rejected", e.step);
  }
  return roles;
}

function stepCard(e, view, roles) {
  return el("article", { class: "step", "data-step": e.step, "data-testid": "step" },
    el("h3", {},
      el("span", {}, stepTitle(e, view)),
      el("span", { class: "reward best-so-far" }, `best so far ${fmt(e.best_reward)}`),
      el("span", { class: "counts" }, `${e.kept} kept · ${e.dropped} dropped`)),
    e.tpo_step ? feedback(e.tpo_step) : null,
    e.darwin_iteration ? darwinBlock(e.darwin_iteration) : null,
    candidateTable(e.candidates, e.best_reward, roles));
}

function feedback(s) {
  return el("div", { class: "feedback", "data-testid": "feedback" },
    el("div", { class: "pair" },
      `Rewriting the best answer so far, #${s.chosen_id} (${fmt(s.chosen_score)}), against the worst, #${s.rejected_id} (${fmt(s.rejected_score)}).`),
    el("details", { open: true }, el("summary", {}, "Critique (textual loss)"),
      el("pre", { class: "critique" }, s.critique || "(empty)")),
    el("details", { open: true }, el("summary", {}, "Suggestions (textual gradient)"),
      el("pre", { class: "suggestions" }, s.suggestions || "(empty)")));
}

function darwinBlock(it) {
  const replacements = it.rounds.flatMap((r) => r.replacements.map((x) =>
    el("li", {}, `round ${r.round}: #${x.replaced_id} replaced by #${x.fork_id}, a fork of #${x.from_id} after ${x.prefix_tokens} tokens`)));
  return el("div", { class: "darwin", "data-testid": "darwin" },
    el("div", {}, "Parent instruction: ", el("em", {}, it.parent_instruction)),
    el("details", { open: true }, el("summary", {}, `Mutations (${it.mutations.length})`),
      el("ul", {}, it.mutations.map((m) =>
        el("li", { class: m.dropped ? "dropped" : null, title: m.dropped ? `dropped: ${m.dropped}` : null },
          m.instruction || m.raw, m.dropped ? ` [${m.dropped}]` : "")))),
    el("details", {}, el("summary", {}, `Replacements (${replacements.length})`),
      replacements.length ? el("ul", {}, replacements) : el("p", { class: "empty" }, "none")));
}

function candidateTable(candidates, best, roles) {
  if (!candidates.length) return el("p", { class: "empty" }, "no candidates");
  const rows = candidates.map((c) => {
    const kept = c.score !== null && c.score !== undefined && !c.dropped;
    const isBest = kept && best !== null && c.score === best;
    const text = el("div", { class: "answer-text" }, c.text || "(empty)");
    text.addEventListener("click", () => text.classList.toggle("open"));
    const status = c.dropped ? `dropped: ${c.dropped}` : kept ? "kept" : "not scored";
    return el("tr", { class: [c.dropped ? "dropped" : "kept", isBest ? "best" : ""].join(" ").trim(),
      "data-testid": "candidate", "data-id": c.id },
      el("td", { class: "num" }, `#${c.id}`, (roles[c.id] || []).map((r) =>
        el("span", { class: `role ${r.role}`, title: `${r.role} by step ${r.step}` }, `${r.role} → ${r.step}`))),
      el("td", {}, c.origin + (c.instruction ? ` (${c.instruction})` : "")),
      el("td", { class: "num reward-cell" }, fmt(c.score)),
      el("td", { class: "status", title: c.drop_detail || null }, status),
      el("td", { class: "text" }, text));
  });
  return el("table", { class: "candidates" },
    el("thead", {}, el("tr", {}, ["id", "origin", "reward", "status", "answer"].map((h) => el("th", {}, h)))),
    el("tbody", {}, rows));
}

function renderFinal(f) {
  const box = $("final");
  if (!f) { box.hidden = true; return; }
  box.hidden = false;
  $("final-answer").textContent = f.answer;
  $("final-reward").textContent = `reward ${fmt(f.reward)}`;
  const flag = $("final-flag");
  flag.hidden = !f.all_dropped;
  flag.textContent = f.all_dropped ? "Every candidate was dropped as not an answer: this is the best-scored drop." : "";
  const drops = Object.entries(f.dropped_by_reason || {}).map(([k, n]) => `${k} ${n}`).join(", ");
  $("final-cost").textContent = [
    plural(f.policy_calls, "policy call"),
    plural(f.completions, "completion"),
    `${f.tokens_generated} tokens generated`,
    `${f.prompt_tokens} prompt tokens`,
    plural(f.reward_scorings, "reward scoring"),
    `${Number(f.seconds).toFixed(1)} s`,
    drops ? `dropped: ${drops}` : "nothing dropped",
  ].join(" · ");
}

// The best reward per step as a line; y spans the values seen.
function drawChart(events) {
  const svg = $("chart");
  const ns = "http://www.w3.org/2000/svg";
  const mk = (tag, attrs, text) => {
    const n = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    return n;
  };
  const pts = events.filter((e) => e.best_reward !== null && !Number.isNaN(e.best_reward));
  svg.replaceChildren();
  const W = 640, H = 180, L = 48, R = 16, T = 16, B = 28;
  svg.append(mk("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
  svg.append(mk("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
  if (!pts.length) return;
  const ys = pts.map((e) => e.best_reward);
  let lo = Math.min(...ys), hi = Math.max(...ys);
  if (hi - lo < 1e-6) { lo -= 0.5; hi += 0.5; }
  const first = events[0].step, last = Math.max(events[events.length - 1].step, events[0].depth || 0, first + 1);
  const x = (s) => L + ((s - first) / (last - first)) * (W - L - R);
  const y = (v) => H - B - ((v - lo) / (hi - lo)) * (H - T - B);
  svg.append(mk("text", { x: 4, y: T + 4 }, fmt(hi)));
  svg.append(mk("text", { x: 4, y: H - B }, fmt(lo)));
  for (let s = first; s <= last; s++) svg.append(mk("text", { x: x(s) - 4, y: H - 8 }, String(s)));
  svg.append(mk("polyline", { class: "line", points: pts.map((e) => `${x(e.step)},${y(e.best_reward)}`).join(" ") }));
  for (const e of pts) {
    svg.append(mk("circle", { class: "dot", cx: x(e.step), cy: y(e.best_reward), r: 4 }));
    svg.append(mk("text", { class: "value", x: x(e.step) + 6, y: y(e.best_reward) - 6 }, fmt(e.best_reward)));
  }
}

// ---- trace mode ------------------------------------------------------------------------

function traceMode(data) {
  const views = data.traces || [];
  if (!views.length) { setStatus("the file holds no trace", true); return; }
  const pick = $("trace-select");
  views.forEach((v, i) => pick.append(el("option", { value: i }, `${i + 1}. ${v.query.slice(0, 80)}`)));
  $("picker").hidden = views.length < 2;
  pick.addEventListener("change", () => render(views[Number(pick.value)]));
  render(views[0]);
  setStatus(views.length > 1 ? `${views.length} saved searches` : "saved search");
}

// ---- live mode -------------------------------------------------------------------------

let running = null; // the AbortController of the search in flight

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function loadModels() {
  try {
    const r = await fetch("/v1/models", { headers: headers() });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error ? body.error.message : r.statusText);
    const base = body.data.find((m) => !m.strategy) || body.data[0];
    const select = $("reward-model");
    select.replaceChildren(el("option", { value: "" }, "server default"),
      ...(base.reward_models || []).map((name) => el("option", { value: name }, name)));
    $("controls").dataset.model = base.id;
    setStatus(`connected: ${base.id}`);
  } catch (err) {
    setStatus(`cannot list models: ${err.message} (an API key may be needed)`, true);
  }
}

function requestBody() {
  const int = (id) => Number.parseInt($(id).value, 10);
  const tpo = { strategy: $("strategy").value };
  if (tpo.strategy !== "greedy") tpo.width = int("width");
  if (tpo.strategy === "tpo") tpo.depth = int("depth");
  if (tpo.strategy === "darwin") tpo.iterations = Math.max(1, int("depth"));
  if ($("reward-model").value) tpo.reward_model = $("reward-model").value;
  const body = {
    model: $("controls").dataset.model || "smollm2-135m-instruct",
    messages: [{ role: "user", content: $("question").value }],
    stream: true,
    stream_options: { include_usage: true },
    max_tokens: int("max-tokens"),
    temperature: Number($("temperature").value),
    tpo,
  };
  if ($("seed").value !== "") body.seed = int("seed");
  return body;
}

function settingsLine(body) {
  const t = body.tpo;
  const parts = [t.strategy];
  if (t.width) parts.push(`width ${t.width}`);
  if (t.depth !== undefined) parts.push(`depth ${t.depth}`);
  if (t.iterations) parts.push(`${t.iterations} iterations`);
  parts.push(`reward model ${t.reward_model || "(server default)"}`);
  parts.push(`${body.max_tokens} tokens per call`, `temperature ${body.temperature}`);
  if (body.seed !== undefined) parts.push(`seed ${body.seed}`);
  return parts.join(" · ");
}

// Feeds one SSE `data:` payload into the view; returns false at [DONE].
function consume(view, payload, answer) {
  if (payload === "[DONE]") return false;
  const chunk = JSON.parse(payload);
  if (chunk.error) throw new Error(chunk.error.message || JSON.stringify(chunk.error));
  if (chunk.usage) {
    answer.prompt_tokens = chunk.usage.prompt_tokens;
    answer.tokens_generated = chunk.usage.completion_tokens;
  }
  const choice = (chunk.choices || [])[0];
  if (choice && choice.delta && typeof choice.delta.content === "string") answer.text += choice.delta.content;
  if (chunk.tpo && !choice) {
    view.events.push(chunk.tpo);
    const e = chunk.tpo;
    setStatus(e.darwin_iteration ? `iteration ${e.step} of ${e.depth} done` : `step ${e.step} of ${e.depth} done`);
  }
  if (chunk.tpo && choice && choice.finish_reason) answer.summary = chunk.tpo;
  return true;
}

function finalOf(answer) {
  const s = answer.summary;
  return {
    answer: answer.text, reward: s.best_reward, all_dropped: s.all_dropped,
    policy_calls: s.policy_calls, completions: s.completions, reward_scorings: s.reward_scorings,
    prompt_tokens: answer.prompt_tokens ?? 0, tokens_generated: answer.tokens_generated ?? 0,
    seconds: s.seconds, dropped_by_reason: s.dropped_by_reason,
  };
}

async function runSearch(ev) {
  ev.preventDefault();
  if (running) return;
  const body = requestBody();
  const view = { query: body.messages[0].content, strategy: body.tpo.strategy, settings: settingsLine(body), events: [], final: null };
  const answer = { text: "", summary: null };
  render(view);
  running = new AbortController();
  $("run").disabled = true;
  $("stop").disabled = false;
  setStatus("searching…");
  try {
    const r = await fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(body), signal: running.signal });
    if (!r.ok) {
      const err = await r.json().catch(() => ({}));
      throw new Error(err.error ? err.error.message : `HTTP ${r.status}`);
    }
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "", open = true;
    while (open) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while (open && (cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data:")) continue;
          open = consume(view, line.slice(5).trim(), answer);
          if (!open) break;
        }
        render(view);
      }
    }
    if (!answer.summary) throw new Error("the stream ended before the answer");
    view.final = finalOf(answer);
    render(view);
    setStatus("done");
  } catch (err) {
    setStatus(err.name === "AbortError" ? "stopped" : `error: ${err.message}`, err.name !== "AbortError");
  } finally {
    running = null;
    $("run").disabled = false;
    $("stop").disabled = true;
  }
}

function liveMode() {
  $("controls").hidden = false;
  const key = $("api-key");
  key.value = sessionStorage.getItem("tpo-api-key") || "";
  key.addEventListener("change", () => { sessionStorage.setItem("tpo-api-key", key.value); loadModels(); });
  $("controls").addEventListener("submit", runSearch);
  $("stop").addEventListener("click", () => running && running.abort());
  loadModels();
}

const data = JSON.parse($("tpo-data").textContent);
if (document.body.dataset.mode === "trace") traceMode(data);
else liveMode();
