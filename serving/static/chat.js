// The chat page. Answers stream from the public /v1/chat/completions; the stream's last chunk before
// [DONE] carries the feedback handles (one signed token per answer), which is all rating needs.
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
const handles = new WeakMap();  // answer element -> its feedback handle {response_id, feedback_token, ...}
const duelTurns = new WeakMap(); // duel section -> its assistant turn in the conversation (A's answer until B wins)
let history = [];               // the conversation so far, sent with every request: [{role, content}]
let conversationId = newConversationId();
let asking = new AbortController();  // "New chat" aborts the answer in flight (vLLM then stops generating)

// A fresh id per thread keys its events on Kafka, keeping one conversation in order.
// (crypto.randomUUID exists only on https or localhost pages.)
function newConversationId() {
  return "ui-" + Date.now().toString(36) + "-" + Math.random().toString(36).slice(2, 12);
}

// The user name and answer length are kept in this browser; the duel toggle is not.
for (const id of ["user", "max-tokens"]) {
  const input = $("#" + id);
  input.value = localStorage.getItem("rlhf-chat." + id) ?? input.value;
  input.addEventListener("change", () => localStorage.setItem("rlhf-chat." + id, input.value));
}

function requestHeaders() {
  return {"Content-Type": "application/json", "X-Conversation-Id": conversationId};
}

function requestBody(extra) {
  const body = {messages: history, ...extra};
  const user = $("#user").value.trim();
  const maxTokens = parseInt($("#max-tokens").value, 10);
  if (user) body.user = user;
  if (maxTokens > 0) body.max_tokens = maxTokens;
  return body;
}

// Errors come in OpenAI's shape {"error": {"message": ...}}; anything else is shown as its status.
async function failure(reply) {
  const text = await reply.text();
  try {
    return new Error(JSON.parse(text).error.message);
  } catch {
    return new Error(`${reply.status} ${reply.statusText}`);
  }
}

async function postJson(path, body, signal) {
  const reply = await fetch(path, {method: "POST", headers: requestHeaders(), body: JSON.stringify(body), signal});
  if (!reply.ok) throw await failure(reply);
  return reply.json();
}

function say(message, isError = false) {
  $("#status").textContent = message;
  $("#status").classList.toggle("error", isError);
}

function bubble(role, text) {
  const element = document.createElement("p");
  element.className = "bubble " + role;
  element.textContent = text;
  $("#log").append(element);
  element.scrollIntoView({block: "end"});
  return element;
}

function answerElement(side) {
  const answer = $("#answer-template").content.firstElementChild.cloneNode(true);
  $(".side", answer).textContent = side ?? "";
  $(".side", answer).hidden = !side;
  $(".rate", answer).hidden = true;  // shown once the feedback handle has arrived
  for (const button of answer.querySelectorAll(".thumb")) {
    button.addEventListener("click", () => rate(answer, button.dataset.rating));
  }
  $(".send-correction", answer).addEventListener("click", () => correct(answer));
  return answer;
}

function settle(answer, handle, adapterVersion) {
  handles.set(answer, handle);
  answer.dataset.responseId = handle.response_id;
  answer.dataset.state = "done";
  $(".meta", answer).textContent = "answered by " + (adapterVersion ?? "the base model");
}

// 1. one streamed answer: SSE events "data: {chunk}\n\n" ending in "data: [DONE]"
async function streamAnswer() {
  const answer = answerElement();
  $("#log").append(answer);
  const text = $(".text", answer);
  const reply = await fetch("/v1/chat/completions", {
    method: "POST", headers: requestHeaders(), body: JSON.stringify(requestBody({stream: true})), signal: asking.signal,
  });
  if (!reply.ok) throw await failure(reply);
  const reader = reply.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "", chunks = 0, final = null;
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += value;
    const events = buffer.split(/\r?\n\r?\n/);
    buffer = events.pop();  // an event cut in two waits for its rest
    for (const event of events) {
      const data = event.replace(/^data: ?/, "");
      if (!data || data === "[DONE]") continue;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.feedback) final = chunk;  // the handles come last, with empty choices
      for (const choice of chunk.choices ?? []) {
        text.textContent += choice.delta?.content ?? "";
      }
      answer.dataset.chunks = ++chunks;
      answer.scrollIntoView({block: "end"});
    }
  }
  if (!final) throw new Error("the answer ended before its feedback handle arrived");
  settle(answer, final.feedback[0], final.adapter_version);
  $(".rate", answer).hidden = false;
  return {said: text.textContent};
}

// 2. a duel: two answers from two policies (active vs canary, else two samples), not streamed
async function duel() {
  const section = $("#duel-template").content.firstElementChild.cloneNode(true);
  $(".vote", section).hidden = true;
  $("#log").append(section);
  const reply = await postJson("/v1/chat/duels", requestBody({}), asking.signal);
  section.dataset.duelId = reply.id;
  const sides = reply.answers.map((answer, i) => {
    const element = answerElement(i === 0 ? "A" : "B");
    $(".text", element).textContent = answer.choices[0].message.content;
    settle(element, answer.feedback[0], answer.adapter_version);
    $(".sides", section).append(element);
    return element;
  });
  for (const button of section.querySelectorAll("[data-choice]")) {
    button.addEventListener("click", () => vote(section, sides, button));
  }
  $(".vote", section).hidden = false;
  section.scrollIntoView({block: "end"});
  return {said: $(".text", sides[0]).textContent, section};  // A continues the conversation unless B wins the vote
}

// 3. ratings: a thumb (optionally with a comment) or a better answer on one answer; a choice between a duel's two
async function rate(answer, rating) {
  const comment = $(".comment", answer).value.trim();
  const body = {feedback_token: handles.get(answer).feedback_token, rating};
  if (comment) body.comment = comment;
  try {
    await postJson("/v1/feedback", body);
    answer.dataset.rated = rating;
    $(".rated", answer).textContent = `Thanks: recorded ${rating === "up" ? "👍" : "👎"}`;
  } catch (error) {
    $(".rated", answer).textContent = "Not recorded: " + error.message;
  }
}

// a better answer, written by the user: the learner trains on it (and prefers it over the served one)
async function correct(answer) {
  const correction = $(".correction", answer).value;
  if (!correction.trim()) {
    $(".corrected", answer).textContent = "Write the answer you would rather have received first.";
    return;
  }
  try {
    await postJson("/v1/feedback/correction", {feedback_token: handles.get(answer).feedback_token, correction});
    answer.dataset.corrected = "true";
    $(".corrected", answer).textContent = "Thanks: your better answer was recorded";
  } catch (error) {
    $(".corrected", answer).textContent = "Not recorded: " + error.message;
  }
}

async function vote(section, sides, button) {
  const [a, b] = sides.map((side) => handles.get(side).feedback_token);
  const body = {feedback_token_a: a, feedback_token_b: b, choice: button.dataset.choice};
  const comment = $(".vote .comment", section).value.trim();
  if (comment) body.comment = comment;
  const buttons = section.querySelectorAll("[data-choice]");
  buttons.forEach((each) => (each.disabled = true));  // one vote per duel
  try {
    await postJson("/v1/feedback/pairwise", body);
    section.dataset.voted = button.dataset.choice;
    button.setAttribute("aria-pressed", "true");
    $(".voted", section).textContent = "Thanks: recorded “" + button.textContent + "”";
    if (button.dataset.choice === "b") duelTurns.get(section).content = $(".text", sides[1]).textContent;
  } catch (error) {
    buttons.forEach((each) => (each.disabled = false));
    $(".voted", section).textContent = "Not recorded: " + error.message;
  }
}

async function send(event) {
  event.preventDefault();
  const prompt = $("#prompt").value.trim();
  if (!prompt) return;
  $("#send").disabled = true;
  $("#prompt").value = "";
  say("");
  bubble("user", prompt);
  const thread = history;  // "New chat" may replace `history` while this answer is on its way
  thread.push({role: "user", content: prompt});
  try {
    const {said, section} = $("#duel").checked ? await duel() : await streamAnswer();
    const turn = {role: "assistant", content: said};
    thread.push(turn);
    if (section) duelTurns.set(section, turn);
  } catch (error) {
    thread.pop();  // the question stays on screen but leaves the conversation, so it can be asked again
    if (error.name === "AbortError") return;  // the person started a new chat
    say("Failed: " + error.message, true);
    document.querySelectorAll('.answer[data-state="streaming"]').forEach((each) => (each.dataset.state = "error"));
  } finally {
    $("#send").disabled = false;
    $("#prompt").focus();
  }
}

$("#ask").addEventListener("submit", send);
$("#prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("#ask").requestSubmit();
  }
});
$("#new-chat").addEventListener("click", () => {
  asking.abort();
  asking = new AbortController();
  history = [];
  conversationId = newConversationId();
  $("#log").replaceChildren();
  say("");
});
