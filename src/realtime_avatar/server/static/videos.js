"use strict";
// Script to video: POST /api/v1/videos, play the stream while it renders, poll the job's
// state for progress, offer the finished file for download. No build step.

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "avatar-token";  // the main page keeps the token here (same origin)
const POLL_MS = 500;
const MAX_CHARS = 5000;

let token = takeToken();
let job = null;  // the current job's id
let pollTimer = null;

// The token comes in the URL's fragment (#token=...) or from the main page's session.
function takeToken() {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromHash) {
    sessionStorage.setItem(TOKEN_KEY, fromHash);
    history.replaceState(null, "", location.pathname);
    return fromHash;
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

function headers(extra = {}) {
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

function showError(message) {
  $("job-error").textContent = message;
  $("job-error").hidden = !message;
}

function setState(text) { $("job-state").textContent = text; }

async function errorOf(res) {
  try { return (await res.json()).error || `HTTP ${res.status}`; } catch { return `HTTP ${res.status}`; }
}

async function loadAvatars() {
  const select = $("avatar");
  try {
    const res = await fetch("/api/v1/avatars", { headers: headers() });
    if (!res.ok) { showError(await errorOf(res)); return; }
    const body = await res.json();
    select.replaceChildren(...body.avatars.map((name) => new Option(name, name, name === body.default, name === body.default)));
    if (!body.avatars.length) select.append(new Option("default", "default", true, true));
  } catch (err) {
    showError(`Cannot reach the server: ${err}`);
  }
}

function updateCount() {
  const n = $("script").value.length;
  $("script-count").textContent = `${n} / ${MAX_CHARS}`;
}

async function submit(event) {
  event.preventDefault();
  showError("");
  const file = $("audio-file").files[0];
  const text = $("script").value.trim();
  if (!file && !text) { showError("Write a script (or choose a recording to lip-sync)."); $("script").focus(); return; }
  let res;
  $("render").disabled = true;
  try {
    if (file) {
      const form = new FormData();
      form.append("audio", file);
      form.append("avatar", $("avatar").value || "default");
      res = await fetch("/api/v1/videos", { method: "POST", headers: headers(), body: form });
    } else {
      res = await fetch("/api/v1/videos", {
        method: "POST",
        headers: headers({ "Content-Type": "application/json" }),
        body: JSON.stringify({ text, avatar: $("avatar").value || "default", language: $("language").value }),
      });
    }
  } catch (err) {
    $("render").disabled = false;
    showError(`Cannot reach the server: ${err}`);
    return;
  }
  if (res.status !== 202) {
    $("render").disabled = false;
    showError(await errorOf(res));
    return;
  }
  const accepted = await res.json();
  start(accepted);
}

function start(accepted) {
  job = accepted.id;
  $("download").hidden = true;
  $("cancel").hidden = false;
  $("job-progress").value = 0;
  setState("queued");
  const video = $("job-video");
  // The stream plays from its first fragment while the rest is still being rendered.
  video.src = accepted.stream_url;
  video.play().catch(() => { /* autoplay refused: the controls are there */ });
  clearInterval(pollTimer);
  pollTimer = setInterval(poll, POLL_MS);
  poll();
}

async function poll() {
  if (!job) return;
  let res;
  try {
    res = await fetch(`/api/v1/videos/${job}`, { headers: headers() });
  } catch {
    return;  // try again at the next tick
  }
  if (!res.ok) { finish(); showError(await errorOf(res)); return; }
  const state = await res.json();
  $("job-progress").value = state.progress;
  const pct = Math.round(state.progress * 100);
  if (state.state === "queued") setState(`queued (${state.timings.queued_s ?? 0} s)`);
  else if (state.state === "running") setState(`rendering… ${pct} %${state.attempt > 1 ? ` (attempt ${state.attempt})` : ""}`);
  else if (state.state === "done") {
    setState(`done: ${state.timings.video_s} s of video in ${state.timings.running_s} s`);
    const link = $("download");
    link.href = state.stream_url;
    link.download = `avatar-${state.id.slice(0, 8)}.mp4`;
    link.hidden = false;
    finish();
  } else {
    setState(state.state);
    showError(state.error || `the job ended: ${state.state}`);
    finish();
  }
}

function finish() {
  clearInterval(pollTimer);
  pollTimer = null;
  $("cancel").hidden = true;
  $("render").disabled = false;
}

async function cancel() {
  if (!job) return;
  const res = await fetch(`/api/v1/videos/${job}`, { method: "DELETE", headers: headers() });
  if (!res.ok) showError(await errorOf(res));
  poll();
}

$("job-form").addEventListener("submit", submit);
$("script").addEventListener("input", updateCount);
$("cancel").addEventListener("click", cancel);
loadAvatars();
updateCount();
