// realtime-avatar page: one WebRTC connection, the mic in, the avatar's video and voice out,
// events (status, transcript, errors) on a data channel, typed messages back on it, and
// captions of the avatar's words over the video. Plain JS, no build step. make.js (the
// "Make your avatar" panel) uses headers(), loadOptions() and selectAvatar() from here.
"use strict";

const $ = (id) => document.getElementById(id);
const video = $("avatar-video");
const audio = $("avatar-audio");
const statusPill = $("status");
const micButton = $("mic");
const transcript = $("transcript");
const errorBox = $("error");
const captions = $("captions");
const messageBox = $("message");
const CAPTION_CHARS = 160;   // about two lines over the video
const CAPTION_HOLD_MS = 2500; // how long the last words stay once the avatar is done
const CAPTIONS_KEY = "avatar-captions";
const CONNECT_TIMEOUT_MS = 20000;
const TOKEN_KEY = "avatar-token";
let token = takeToken();
let posterUrl = null;  // the blob URL of the avatar's image, fetched with the token

let pc = null;
let micStream = null;
let channel = null;
let connected = false;
let userBubble = null;   // the user's bubble being spoken (partial text)
let avatarBubbles = {};  // turn_id -> the avatar's bubble
let connectTimer = null;
let pendingTexts = [];   // typed before the data channel opened: sent when it does
let avatarState = "idle";
let interruptSent = false;  // one interrupt per answer while the user types over it
let captionTimer = null;
let captionTurn = -1;

// The token comes in the URL's fragment (#token=...), which the browser never sends to the
// server, so it stays out of access logs; it then lives in this tab's sessionStorage only.
// A link with ?token= still works, and the address bar loses it at once.
function takeToken() {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
  const query = new URLSearchParams(location.search);
  const fromQuery = query.get("token");
  const found = fromHash || fromQuery;
  if (found) {
    sessionStorage.setItem(TOKEN_KEY, found);
    query.delete("token");
    const search = query.toString();
    history.replaceState(null, "", location.pathname + (search ? `?${search}` : ""));
  }
  return found || sessionStorage.getItem(TOKEN_KEY);
}

function askForToken() {
  const given = window.prompt("This avatar server needs its token (AVATAR_TOKEN):");
  if (!given) return false;
  token = given.trim();
  sessionStorage.setItem(TOKEN_KEY, token);
  return true;
}

function headers(extra = {}) {
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

function setStatus(state, label) {
  statusPill.className = `pill ${state}`;
  statusPill.textContent = label || state;
  statusPill.dataset.state = state;
}

function showError(message) {
  $("error-text").textContent = message;
  errorBox.hidden = false;
  setStatus("error");
  micButton.disabled = false;
  micButton.setAttribute("aria-pressed", "false");
}

function clearError() {
  errorBox.hidden = true;
}

function bubble(role, text, cls = "") {
  const li = document.createElement("li");
  li.className = `${role} ${cls}`.trim();
  const who = document.createElement("span");
  who.className = "who";
  const name = $("avatar").value;
  who.textContent = role === "user" ? "You" : !name || name === "default" ? "Avatar" : name;
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  li.append(who, body);
  transcript.append(li);
  transcript.scrollTop = transcript.scrollHeight;
  return li;
}

function setText(li, text) {
  li.querySelector(".text").textContent = text;
  transcript.scrollTop = transcript.scrollHeight;
}

function onEvent(event) {
  switch (event.type) {
    case "status":
      avatarState = event.state;
      if (event.state === "listening") setStatus(event.user_speaking ? "listening hearing" : "listening", "listening");
      else setStatus(event.state);
      if (event.state === "speaking") { video.dataset.firstFrameIndex = event.first_frame_index; interruptSent = false; }
      if (event.state === "listening") fadeCaptions();
      break;
    case "transcript":
      if (event.role === "user") {
        if (!userBubble) userBubble = bubble("user", "", "partial");
        setText(userBubble, event.text);
        if (event.final) { userBubble.classList.remove("partial"); userBubble = null; }
      } else {
        let li = avatarBubbles[event.turn_id];
        if (!li) li = avatarBubbles[event.turn_id] = bubble("avatar", "");
        if (event.final) { if (event.text) setText(li, event.text); }
        else setText(li, li.querySelector(".text").textContent + event.text);
        showCaption(event.turn_id, li.querySelector(".text").textContent);
      }
      break;
    case "interrupted": {
      const li = avatarBubbles[event.turn_id];
      if (li) li.classList.add("interrupted");
      if (event.turn_id === captionTurn) clearCaptions();
      break;
    }
    case "error":
      $("error-text").textContent = event.message;
      errorBox.hidden = false;  // the session goes on: show it, keep the status
      setTimeout(clearError, 6000);
      break;
  }
}

// Captions: the avatar's words of the current answer, the last two lines or so.
function captionsOn() { return $("captions-toggle").checked; }

function showCaption(turnId, text) {
  clearTimeout(captionTimer);
  captionTurn = turnId;
  let shown = text.trim();
  if (shown.length > CAPTION_CHARS) {
    shown = shown.slice(-CAPTION_CHARS);
    shown = "…" + shown.slice(shown.indexOf(" ") + 1);
  }
  captions.textContent = shown;
  captions.hidden = !captionsOn() || !shown;
}

function fadeCaptions() {
  clearTimeout(captionTimer);
  captionTimer = setTimeout(clearCaptions, CAPTION_HOLD_MS);
}

function clearCaptions() {
  clearTimeout(captionTimer);
  captions.textContent = "";
  captions.hidden = true;
}

function setCaptions(on) {
  $("captions-toggle").checked = on;
  localStorage.setItem(CAPTIONS_KEY, on ? "on" : "off");
  captions.hidden = !on || !captions.textContent;
}

// Typed messages go on the data channel as {"type": "text"}; the server answers them as
// it answers speech. Typing over the avatar sends {"type": "interrupt"} once, at once.
function sendMessage(kind, extra = {}) {
  if (!channel || channel.readyState !== "open") return false;
  channel.send(JSON.stringify({ type: kind, ...extra }));
  return true;
}

function sendText(text) {
  text = text.trim();
  if (!text) return;
  if (!sendMessage("text", { text })) {
    pendingTexts.push(text);
    if (!pc) connect();
  }
}

function flushPending() {
  const queued = pendingTexts;
  pendingTexts = [];
  for (const text of queued) sendMessage("text", { text });
}

async function loadOptions() {
  try {
    let res = await fetch("/api/v1/options", { headers: headers() });
    let opts = await res.json();
    if (opts.token_required && !opts.token_ok) {
      if (!askForToken()) { showError("This server needs its token: open the page as /#token=<AVATAR_TOKEN>."); return; }
      res = await fetch("/api/v1/options", { headers: headers() });
      opts = await res.json();
      if (!opts.token_ok) { sessionStorage.removeItem(TOKEN_KEY); showError("Wrong token. Reload the page to try again."); return; }
    }
    const avatarSel = $("avatar");
    const chosen = avatarSel.value;
    avatarSel.innerHTML = "";
    for (const name of opts.avatars.length ? opts.avatars : ["default"]) avatarSel.add(new Option(name, name));
    if (chosen && opts.avatars.includes(chosen)) avatarSel.value = chosen;
    const dlg = $("dialogue");
    dlg.innerHTML = "";
    for (const name of opts.dialogue) dlg.add(new Option(name, name));
    dlg.value = opts.default_dialogue;
    if (!loadOptions.done) $("language").value = opts.default_language || "auto";
    loadOptions.done = true;
    setPoster();
    document.dispatchEvent(new CustomEvent("avatars-changed", { detail: opts.avatars }));
  } catch (err) {
    showError(`The server did not answer (${err.message}). Is "avatar serve" running?`);
  }
}

// Fetched with the token header (a poster attribute cannot send one), shown as a blob URL.
async function setPoster() {
  const name = encodeURIComponent($("avatar").value || "default");
  try {
    const res = await fetch(`/api/v1/avatars/${name}/image`, { headers: headers() });
    if (!res.ok) return;
    const url = URL.createObjectURL(await res.blob());
    if (posterUrl) URL.revokeObjectURL(posterUrl);
    posterUrl = url;
    video.poster = url;
  } catch (err) {
    console.warn("no poster image", err);
  }
}

function waitForIce(peer) {
  if (peer.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (peer.iceGatheringState === "complete") { peer.removeEventListener("icegatheringstatechange", done); resolve(); } };
    peer.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, 3000);  // use what we have; the server does not trickle
  });
}

async function connect() {
  clearError();
  setStatus("connecting");
  micButton.disabled = true;
  connectTimer = setTimeout(() => {
    if (!connected) { hangup(); showError("Could not connect within 20 s. Check the server, then retry."); }
  }, CONNECT_TIMEOUT_MS);
  try {
    micStream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
    });
  } catch (err) {
    clearTimeout(connectTimer);
    showError(`Microphone unavailable: ${err.message}. Allow microphone access and retry.`);
    return;
  }
  try {
    pc = new RTCPeerConnection({ iceServers: [] });
    window.avatarPeer = pc;  // for diagnostics (and the browser tests' getStats)
    for (const track of micStream.getAudioTracks()) pc.addTrack(track, micStream);
    pc.addTransceiver("video", { direction: "recvonly" });
    channel = pc.createDataChannel("events");
    channel.onmessage = (msg) => { try { onEvent(JSON.parse(msg.data)); } catch (e) { console.warn(e); } };
    channel.onopen = flushPending;
    pc.ontrack = (ev) => {
      const stream = ev.streams[0] || new MediaStream([ev.track]);
      if (ev.track.kind === "video") { video.srcObject = stream; video.play().catch(() => {}); }
      else { audio.srcObject = stream; audio.play().catch(() => {}); }
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "connected") {
        connected = true;
        clearTimeout(connectTimer);
        micButton.disabled = false;
        micButton.setAttribute("aria-pressed", "true");
        $("hangup").disabled = false;
        if (statusPill.dataset.state === "connecting") setStatus("listening");
      } else if (["failed", "disconnected"].includes(pc.connectionState) && connected) {
        hangup();
        showError("The connection was lost. Retry to talk again.");
      }
    };
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIce(pc);
    const res = await fetch("/api/v1/rtc/offer", {
      method: "POST",
      headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify({
        sdp: pc.localDescription.sdp, type: pc.localDescription.type,
        avatar: $("avatar").value, language: $("language").value, dialogue: $("dialogue").value,
      }),
    });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(body.error || `server answered ${res.status}`);
    await pc.setRemoteDescription({ sdp: body.sdp, type: body.type });
    window.avatarSessionId = body.session_id;
  } catch (err) {
    clearTimeout(connectTimer);
    hangup();
    showError(err.message);
  }
}

function hangup() {
  connected = false;
  if (channel) channel.close();
  if (pc) pc.close();
  if (micStream) micStream.getTracks().forEach((t) => t.stop());
  pc = channel = micStream = null;
  video.srcObject = null;
  micButton.setAttribute("aria-pressed", "false");
  micButton.classList.remove("muted");
  micButton.disabled = false;
  $("hangup").disabled = true;
  avatarState = "idle";
  clearCaptions();
  setStatus("idle", "ready");
}

// Choose an avatar (a new one, or after a delete); a call in progress restarts with it.
function selectAvatar(name) {
  const sel = $("avatar");
  if (![...sel.options].some((o) => o.value === name)) sel.add(new Option(name, name));
  if (sel.value === name) return;
  sel.value = name;
  sel.dispatchEvent(new Event("change"));
}

micButton.addEventListener("click", () => {
  if (!pc) { connect(); return; }
  const track = micStream && micStream.getAudioTracks()[0];
  if (!track) return;
  track.enabled = !track.enabled;
  micButton.classList.toggle("muted", !track.enabled);
  micButton.title = track.enabled ? "Mute" : "Unmute";
});
$("hangup").addEventListener("click", hangup);
$("retry").addEventListener("click", () => { hangup(); connect(); });
for (const id of ["avatar", "language", "dialogue"]) {
  $(id).addEventListener("change", () => { if (id === "avatar") setPoster(); if (pc) { hangup(); connect(); } });
}
$("composer").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sendText(messageBox.value);
  messageBox.value = "";
});
messageBox.addEventListener("input", () => {
  if (avatarState === "speaking" && !interruptSent && messageBox.value.trim()) {
    interruptSent = sendMessage("interrupt");
  }
});
$("captions-toggle").addEventListener("change", (ev) => setCaptions(ev.target.checked));
setCaptions(localStorage.getItem(CAPTIONS_KEY) !== "off");
loadOptions();
