// The operators' page: the admin API (/admin/v1) with the operator's bearer token, kept in
// sessionStorage so it leaves with the tab. Every move asks for a reason first (the API requires one).
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
const TOKEN_KEY = "rlhf-admin.token";
const CHART_VERSIONS = 12;   // the across-versions charts show the newest this many
let pointer = null;          // {active, canary, canary_share, previous, rejected}
let summaries = [];          // one per version, oldest first: {version, role, gates, parent, created_at}
let selected = null;         // the version whose details are shown
// Versions are immutable, so each one's meta (lineage, gate report) is fetched once per page; roles
// change, and come from the summaries that every load reads afresh.
const metas = new Map();

function html(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  element.append(...children);
  return element;
}

const badge = (text) => html("span", {class: "badge " + text}, text);
const empty = (text) => html("p", {class: "empty"}, text);

function say(message, isError = false) {
  $("#status").textContent = message;
  $("#status").classList.toggle("error", isError);
}

async function api(path, body) {
  const request = {headers: {Authorization: "Bearer " + sessionStorage.getItem(TOKEN_KEY)}};
  if (body !== undefined) {
    Object.assign(request, {method: "POST", body: JSON.stringify(body)});
    request.headers["Content-Type"] = "application/json";
  }
  const reply = await fetch("/admin/v1" + path, request);
  const text = await reply.text();
  let payload;
  try {
    payload = JSON.parse(text);
  } catch {
    throw new Error(`${reply.status} ${reply.statusText}`);
  }
  if (!reply.ok) throw new Error(payload.error?.message ?? `${reply.status} ${reply.statusText}`);
  return payload;
}

// -- loading ----------------------------------------------------------------------------------------
async function load() {
  if (!sessionStorage.getItem(TOKEN_KEY)) {
    $("main").hidden = true;
    say("Paste the operator token (RLHF_ADMIN_TOKEN) to see and move adapters.");
    return;
  }
  try {
    const [adapters, audit] = await Promise.all([api("/adapters"), api("/audit")]);
    ({pointer, data: summaries} = adapters);
    if (!summaryOf(selected)) selected = pointer.canary ?? pointer.active ?? null;
    const charted = summaries.slice(-CHART_VERSIONS).map((summary) => summary.version);
    await Promise.all([...charted, selected].filter(Boolean).map(metaOf));
    say("");
    $("main").hidden = false;
    renderPointer();
    renderLineage();
    renderDetail();
    renderRewardModelChart();
    renderAudit(audit.data);
    await loadStats();
  } catch (error) {
    $("main").hidden = true;  // rather nothing than figures that may be stale
    say("Could not load: " + error.message, true);
  }
}

const summaryOf = (version) => summaries.find((summary) => summary.version === version);

async function metaOf(version) {
  if (!metas.has(version)) metas.set(version, await api("/adapters/" + encodeURIComponent(version)));
  return metas.get(version);
}

async function select(version) {
  try {
    await metaOf(version);
  } catch (error) {
    return say(`Could not load ${version}: ${error.message}`, true);
  }
  selected = version;
  renderLineage();
  renderDetail();
}

async function loadStats() {
  try {
    renderStats(await api("/stats"));
  } catch (error) {
    $("#stats-updated").textContent = "Live statistics unavailable: " + error.message;
  }
}

// -- rendering ----------------------------------------------------------------------------------------
function renderPointer() {
  const p = pointer;
  const parts = [`active: ${p.active ?? "base model"}`,
                 p.canary ? `canary: ${p.canary} (${Math.round(p.canary_share * 100)}% of users)` : "no canary",
                 `previous: ${p.previous ?? "—"}`];
  if (p.rejected.length) parts.push(`rejected: ${p.rejected.join(", ")}`);
  $("#pointer").textContent = parts.join(" · ");
  $("#pointer").dataset.active = p.active ?? "";
  $("#pointer").dataset.canary = p.canary ?? "";
  $("#rollback").textContent = p.canary ? `Roll back: end canary ${p.canary}…` : `Roll back to ${p.previous ?? "the base model"}…`;
  $("#rollback").disabled = !p.canary && !p.active && !p.previous;
}

// Versions as a tree by their parent links; a version without a (known) parent hangs off the base model.
function renderLineage() {
  const known = new Set(summaries.map((summary) => summary.version));
  const children = new Map();
  for (const summary of summaries) {
    const parent = known.has(summary.parent) ? summary.parent : "base";
    children.set(parent, [...(children.get(parent) ?? []), summary]);
  }
  const branch = (parent) => html("ul", {}, ...(children.get(parent) ?? []).map((summary) => {
    const button = html("button", {type: "button", class: "version", "data-version": summary.version,
                                   "aria-pressed": String(summary.version === selected)}, summary.version);
    button.addEventListener("click", () => select(summary.version));
    const item = html("li", {"data-version": summary.version, "data-role": summary.role}, button);
    if (summary.role) item.append(badge(summary.role));
    item.append(badge(summary.gates), " ", html("small", {}, summary.created_at.slice(0, 16).replace("T", " ")));
    if (children.has(summary.version)) item.append(branch(summary.version));
    return item;
  }));
  const root = html("li", {}, html("strong", {}, "base model"));
  if (!pointer.active) root.append(badge("active"));
  root.append(branch("base"));
  $("#lineage").replaceChildren(summaries.length ? html("ul", {}, root) : empty("No adapter published yet."));
}

function figures(values) {
  return Object.entries(values ?? {}).map(([key, value]) => {
    const shown = typeof value === "number" ? formatNumber(value)
      : Array.isArray(value) ? "[" + value.map((v) => (typeof v === "number" ? formatNumber(v) : typeof v === "object" ? JSON.stringify(v) : v)).join(", ") + "]"
      : JSON.stringify(value);
    return `${key} ${shown}`;
  }).join(", ");
}

function renderDetail() {
  const meta = metas.get(selected), summary = summaryOf(selected);
  if (!meta || !summary) {
    $("#detail-title").textContent = "Select a version";
    $("#detail").replaceChildren();
    return;
  }
  const lineage = meta.lineage;
  $("#detail-title").replaceChildren(meta.version, ...(summary.role ? [badge(summary.role)] : []), badge(summary.gates));
  const dataWindow = lineage.data_window;
  const facts = html("table", {class: "facts"}, ...[
    ["parent", lineage.parent ?? "base model"],
    ["created", meta.created_at],
    ["reward model", lineage.reward_model ?? "—"],
    ["reward model held-out", lineage.reward_model_heldout ? figures(lineage.reward_model_heldout) : "—"],
    ["data window", dataWindow ? figures(dataWindow) : "—"],
  ].map(([name, value]) => html("tr", {}, html("th", {}, name), html("td", {}, String(value)))));
  $("#detail").replaceChildren(facts, actions(summary), gateReport(meta.gate_report), ppoPlots(lineage.ppo_history));
}

function gateReport(report) {
  if (!report) return empty("No gate report: published without gates (serving it needs force).");
  const rows = report.gates.map((gate) => html("tr", {"data-gate": gate.name},
    html("td", {}, gate.name),
    html("td", {class: gate.passed ? "pass" : "fail"}, gate.passed ? "passed" : "failed"),
    html("td", {}, figures(gate.figures)),
    html("td", {}, figures(gate.threshold)),
    html("td", {}, gate.reason ?? "")));
  return html("div", {class: "gates"},
    html("h3", {}, "Gate report: ", badge(report.passed ? "passed" : "failed")),
    rows.length ? html("table", {}, html("tr", {}, ...["gate", "result", "figures", "threshold", "reason"].map((h) => html("th", {}, h))), ...rows)
                : empty("No gates were run."));
}

function ppoPlots(history) {
  if (!history?.length) return html("div", {class: "ppo"}, html("h3", {}, "PPO"), empty("No PPO history for this version."));
  const series = (key) => [{name: key, points: history.map((row) => ({x: row.step, y: row[key]}))}];
  const figure = (key, caption) => html("figure", {"data-plot": key}, linePlot(series(key)), html("figcaption", {}, caption));
  return html("div", {class: "ppo"}, html("h3", {}, "PPO"),
    html("div", {class: "charts"}, figure("reward", "reward (reward-model score) per PPO step"),
                                   figure("kl", "KL to the reference per PPO step")));
}

function actions({version, gates, role}) {
  const force = gates !== "passed" || pointer.rejected.includes(version);  // the API refuses these unless forced
  const promote = html("button", {type: "button", id: "promote"}, `Promote ${version}…`);
  const canary = html("button", {type: "button", id: "canary"}, `Canary ${version}…`);
  promote.disabled = role === "active";
  canary.disabled = role === "active" || role === "canary";
  promote.addEventListener("click", () => act(
    `Promote ${version}?`, `${version} will serve everyone; ${pointer.active ?? "the base model"} becomes previous.`,
    `/adapters/${encodeURIComponent(version)}/promote`, {force}));
  canary.addEventListener("click", () => act(
    `Canary ${version}?`, `${version} will serve the chosen share of users, sticky per user.`,
    `/adapters/${encodeURIComponent(version)}/canary`, {share: true, force}));
  return html("div", {class: "actions"}, promote, canary);
}

function renderRewardModelChart() {
  const versions = summaries.slice(-CHART_VERSIONS).map((summary) => metas.get(summary.version));
  const measured = versions.filter((meta) => meta.lineage.reward_model_heldout);
  const figure = $("#rm-chart");
  figure.querySelector("svg, .empty")?.remove();
  if (!measured.length) {
    figure.prepend(empty("No reward-model accuracy recorded yet."));
    return;
  }
  const accuracy = (key) => measured.map((meta) => meta.lineage.reward_model_heldout[key] ?? null);
  figure.prepend(barPlot(measured.map((meta) => meta.version), [
    {name: "pair accuracy", values: accuracy("pair_accuracy")},
    {name: "thumb accuracy", values: accuracy("thumb_accuracy")},
  ], {guide: 0.5}));
}

function renderStats(stats) {
  const rates = $("#rates-chart"), volume = $("#volume-chart");
  for (const figure of [rates, volume]) figure.querySelector("svg, .empty")?.remove();
  rates.prepend(stats.adapters.length ? barPlot(stats.adapters.map((a) => a.version), [
    {name: "thumb-up rate", values: stats.adapters.map((a) => (a.thumbs ? a.up_rate : null))},
    {name: "duel win rate", values: stats.adapters.map((a) => a.duel_win_rate)},
  ], {guide: 0.5}) : empty("No feedback counted yet."));
  const clock = (ms) => new Date(ms).toISOString().slice(11, 16);
  const minutes = everyMinute(stats.volume);
  volume.prepend(minutes.length ? linePlot([
    {name: "thumbs", points: minutes.map((m) => ({x: m.at, y: m.thumbs}))},
    {name: "pairwise", points: minutes.map((m) => ({x: m.at, y: m.pairwise}))},
  ], clock) : empty("No feedback counted yet."));
  $("#stats-updated").textContent = stats.updated_at ? `Live figures written by the learner at ${stats.updated_at}` : "";
}

// The learner lists only the minutes that had feedback (over its last 24 h): a quiet minute is a
// zero, not a gap for the line to draw across.
function everyMinute(volume) {
  const counts = new Map(volume.map((bucket) => [Date.parse(bucket.at), bucket]));
  const times = [...counts.keys()];
  const minutes = [];
  for (let at = Math.min(...times); at <= Math.max(...times); at += 60_000) {
    minutes.push({thumbs: 0, pairwise: 0, ...counts.get(at), at});
  }
  return minutes;
}

function renderAudit(entries) {
  const rows = entries.slice(-50).reverse().map((entry) => html("tr", {},
    ...[entry.at.slice(0, 19).replace("T", " "), entry.actor, entry.action + (entry.forced ? " (forced)" : ""),
        entry.version ?? "", entry.reason].map((value) => html("td", {}, value))));
  $("#audit").replaceChildren(html("tr", {}, ...["when (UTC)", "who", "action", "version", "reason"].map((h) => html("th", {}, h))), ...rows);
}

// -- moves, each behind a confirmation that asks for the reason ------------------------------------
function confirmMove(question, consequence, {share = false, force = false} = {}) {
  const dialog = $("#confirm"), form = $("form", dialog);
  form.reset();
  $(".question", dialog).textContent = question;
  $(".consequence", dialog).textContent = consequence;
  form.share.disabled = !share;  // disabled inputs are neither validated nor sent
  $(".share", dialog).hidden = !share;
  $(".force", dialog).hidden = !force;
  dialog.showModal();
  return new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm" ? {
    reason: form.reason.value.trim(), ...(share ? {share: Number(form.share.value)} : {}),
    ...(force && form.force.checked ? {force: true} : {}),
  } : null), {once: true}));
}

async function act(question, consequence, path, options) {
  const body = await confirmMove(question, consequence, options);
  if (!body) return say("Cancelled: nothing moved.");
  try {
    const {pointer} = await api(path, body);
    await load();
    say(`Done. Active: ${pointer.active ?? "base model"}; canary: ${pointer.canary ?? "none"}.`);
  } catch (error) {
    say("Refused: " + error.message, true);
  }
}

$("#rollback").addEventListener("click", () => {
  const p = pointer;
  act("Roll back?", p.canary ? `The canary ${p.canary} stops serving; everyone goes to ${p.active ?? "the base model"}.`
                             : `${p.previous ?? "The base model"} serves everyone again instead of ${p.active}.`, "/rollback");
});
$("#login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("#token").value.trim());
  $("#token").value = "";
  load();
});
$("#forget").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  metas.clear();
  load();
});
$("#refresh").addEventListener("click", load);
setInterval(() => sessionStorage.getItem(TOKEN_KEY) && !$("main").hidden && loadStats(), 30_000);  // live figures
load();
