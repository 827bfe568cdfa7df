// The operators' page: the admin API (/admin/v1) with the operator's bearer token, kept in
// sessionStorage so it leaves with the tab. Every move asks for a reason first (the API requires one).
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
const TOKEN_KEY = "rlhf-admin.token";
const CHART_VERSIONS = 12;   // the across-versions charts show the newest this many
let state = {pointer: null, versions: [], metas: new Map(), selected: null};

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
    const metas = await Promise.all(adapters.data.map((summary) => api("/adapters/" + encodeURIComponent(summary.version))));
    state = {...state, pointer: adapters.pointer, versions: adapters.data,
             metas: new Map(metas.map((meta) => [meta.version, meta]))};
    if (!state.metas.has(state.selected)) state.selected = adapters.pointer.canary ?? adapters.pointer.active ?? null;
    say("");
    $("main").hidden = false;
    renderPointer();
    renderLineage();
    renderDetail();
    renderRewardModelChart();
    renderAudit(audit.data);
    await loadStats();
  } catch (error) {
    say("Could not load: " + error.message, true);
  }
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
  const p = state.pointer;
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
  const known = new Set(state.versions.map((v) => v.version));
  const children = new Map();
  for (const summary of state.versions) {
    const parent = known.has(summary.parent) ? summary.parent : "base";
    children.set(parent, [...(children.get(parent) ?? []), summary]);
  }
  const branch = (parent) => html("ul", {}, ...(children.get(parent) ?? []).map((summary) => {
    const button = html("button", {type: "button", class: "version", "data-version": summary.version,
                                   "aria-pressed": String(summary.version === state.selected)}, summary.version);
    button.addEventListener("click", () => {
      state.selected = summary.version;
      renderLineage();
      renderDetail();
    });
    const item = html("li", {"data-version": summary.version, "data-role": summary.role}, button);
    if (summary.role) item.append(badge(summary.role));
    item.append(badge(summary.gates), " ", html("small", {}, summary.created_at.slice(0, 16).replace("T", " ")));
    if (children.has(summary.version)) item.append(branch(summary.version));
    return item;
  }));
  const root = html("li", {}, html("strong", {}, "base model"));
  if (!state.pointer.active) root.append(badge("active"));
  root.append(branch("base"));
  $("#lineage").replaceChildren(state.versions.length ? html("ul", {}, root) : empty("No adapter published yet."));
}

function figures(values) {
  return Object.entries(values ?? {}).map(([key, value]) => {
    const shown = typeof value === "number" ? formatNumber(value)
      : Array.isArray(value) ? "[" + value.map((v) => (typeof v === "number" ? formatNumber(v) : v)).join(", ") + "]"
      : JSON.stringify(value);
    return `${key} ${shown}`;
  }).join(", ");
}

function renderDetail() {
  const meta = state.metas.get(state.selected);
  if (!meta) {
    $("#detail-title").textContent = "Select a version";
    $("#detail").replaceChildren();
    return;
  }
  const lineage = meta.lineage;
  $("#detail-title").replaceChildren(meta.version, ...(meta.role ? [badge(meta.role)] : []), badge(meta.gates));
  const dataWindow = lineage.data_window;
  const facts = html("table", {class: "facts"}, ...[
    ["parent", lineage.parent ?? "base model"],
    ["created", meta.created_at],
    ["reward model", lineage.reward_model ?? "—"],
    ["reward model held-out", lineage.reward_model_heldout ? figures(lineage.reward_model_heldout) : "—"],
    ["data window", dataWindow ? figures(dataWindow) : "—"],
  ].map(([name, value]) => html("tr", {}, html("th", {}, name), html("td", {}, String(value)))));
  $("#detail").replaceChildren(facts, actions(meta), gateReport(meta.gate_report), ppoPlots(lineage.ppo_history));
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

function actions(meta) {
  const force = meta.gates !== "passed" || meta.role === "rejected";  // the API refuses these unless forced
  const promote = html("button", {type: "button", id: "promote"}, `Promote ${meta.version}…`);
  const canary = html("button", {type: "button", id: "canary"}, `Canary ${meta.version}…`);
  promote.disabled = meta.role === "active";
  canary.disabled = meta.role === "active" || meta.role === "canary";
  promote.addEventListener("click", () => act(
    `Promote ${meta.version}?`, `${meta.version} will serve everyone; ${state.pointer.active ?? "the base model"} becomes previous.`,
    `/adapters/${encodeURIComponent(meta.version)}/promote`, {force}));
  canary.addEventListener("click", () => act(
    `Canary ${meta.version}?`, `${meta.version} will serve the chosen share of users, sticky per user.`,
    `/adapters/${encodeURIComponent(meta.version)}/canary`, {share: true, force}));
  return html("div", {class: "actions"}, promote, canary);
}

function renderRewardModelChart() {
  const versions = state.versions.slice(-CHART_VERSIONS).map((v) => state.metas.get(v.version));
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
  const minute = (iso) => Date.parse(iso);
  const clock = (ms) => new Date(ms).toISOString().slice(11, 16);
  volume.prepend(stats.volume.length ? linePlot([
    {name: "thumbs", points: stats.volume.map((v) => ({x: minute(v.at), y: v.thumbs}))},
    {name: "pairwise", points: stats.volume.map((v) => ({x: minute(v.at), y: v.pairwise}))},
  ], clock) : empty("No feedback counted yet."));
  $("#stats-updated").textContent = stats.updated_at ? `Live figures written by the learner at ${stats.updated_at}` : "";
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
  const p = state.pointer;
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
  load();
});
$("#refresh").addEventListener("click", load);
setInterval(() => sessionStorage.getItem(TOKEN_KEY) && !$("main").hidden && loadStats(), 30_000);  // live figures
load();
