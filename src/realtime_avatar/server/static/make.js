// "Make your avatar": a photo (dropped or picked), a voice sample (recorded while reading
// the shown text, with a live level meter and warnings, or an uploaded file), a persona;
// sent to POST /api/v1/avatars with progress; per-field errors; then the new avatar is
// selected. Also the list of avatars with delete (and a confirmation). Uses headers(),
// loadOptions() and selectAvatar() from app.js.
"use strict";

(() => {
  const MB = 1024 * 1024;
  const MAX_RECORD_S = 30;        // the server keeps the first 30 s of a voice sample
  const SILENT_DBFS = -50;         // as the server's check (media/audio.py)
  const QUIET_DBFS = -40;
  const CLIP_LEVEL = 0.999;
  const MAX_CLIPPED = 0.01;
  const UPLOAD_SHARE = 0.3;        // of the progress bar: the upload, then the steps
  const NDJSON = "application/x-ndjson";
  const limits = {
    image_max_bytes: 15 * MB, voice_max_bytes: 20 * MB, persona_max_bytes: 256 * 1024,
    min_voice_s: 3, name_pattern: "^[a-z0-9][a-z0-9_-]{0,39}$",
  };
  const form = $("make-form");
  const FIELDS = ["name", "image", "voice", "persona", "form"];
  const INPUT_OF = { name: "new-name", image: "photo-pick", voice: "record", persona: "persona" };
  let photoFile = null;
  let photoProblem = "";  // why the chosen photo was refused here (shown again on submit)
  let voiceProblem = "";
  let recording = null;   // {file, analysis}
  let voiceFile = null;
  let rec = null;         // the recorder while it runs
  let busy = false;
  const thumbs = new Map();  // avatar name -> blob URL of its face

  const mb = (bytes) => `${(bytes / MB).toFixed(1)} MB`;

  fetch("/api/v1/avatar-limits").then((r) => r.ok && r.json()).then((got) => {
    if (got) Object.assign(limits, got);
  }).catch(() => {});

  // ---------------------------------------------------------------- errors per field
  function fieldError(field, message) {
    const key = FIELDS.includes(field) ? field : "form";
    const box = $(`err-${key}`);
    box.textContent = message;
    box.hidden = false;
    const input = INPUT_OF[key] && $(INPUT_OF[key]);
    if (input) input.setAttribute("aria-invalid", "true");
    return input || box;
  }

  function clearError(field) {
    const box = $(`err-${field}`);
    box.textContent = "";
    box.hidden = true;
    const input = INPUT_OF[field] && $(INPUT_OF[field]);
    if (input) input.removeAttribute("aria-invalid");
  }

  function clearErrors() { FIELDS.forEach(clearError); }

  // ---------------------------------------------------------------- photo
  function setPhoto(file) {
    clearError("image");
    photoProblem = "";
    if (!file) return;
    if (file.size > limits.image_max_bytes) {
      photoFile = null;
      $("photo").value = "";
      $("photo-preview").hidden = true;
      $("photo-name").textContent = "Drop a photo here, or";
      photoProblem = `${file.name} is ${mb(file.size)}, over the ${mb(limits.image_max_bytes)} limit. Use a smaller photo (a 2000 px side is plenty).`;
      fieldError("image", photoProblem);
      return;
    }
    photoFile = file;
    $("photo-name").textContent = file.name;
    const img = $("photo-preview");
    if (img.src) URL.revokeObjectURL(img.src);
    img.onerror = () => { img.hidden = true; };  // HEIC and others the browser cannot show
    img.onload = () => { img.hidden = false; };
    img.src = URL.createObjectURL(file);
  }

  $("photo-pick").addEventListener("click", () => $("photo").click());
  $("photo").addEventListener("change", (ev) => setPhoto(ev.target.files[0]));
  const drop = $("photo-drop");
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    drop.classList.remove("over");
    if (ev.dataTransfer.files.length) setPhoto(ev.dataTransfer.files[0]);
  });

  // ---------------------------------------------------------------- voice: recording
  function dbfs(rms) { return 20 * Math.log10(Math.max(rms, 1e-10)); }

  // What the server will check (media/audio.py validate_voice), measured before sending.
  function analyse(pcm, rate) {
    let sum = 0, clipped = 0;
    for (const x of pcm) { sum += x * x; if (Math.abs(x) >= CLIP_LEVEL) clipped++; }
    const n = Math.floor(rate * 0.03);
    const frames = [];
    for (let i = 0; i + n <= pcm.length; i += n) {
      let e = 0;
      for (let j = i; j < i + n; j++) e += pcm[j] * pcm[j];
      frames.push(10 * Math.log10(e / n + 1e-12));
    }
    const sorted = [...frames].sort((a, b) => a - b);
    const floor = sorted.length ? sorted[Math.floor(sorted.length * 0.1)] : 0;
    const speech = frames.filter((db) => db > Math.max(floor + 12, SILENT_DBFS)).length * 0.03;
    return {
      duration_s: pcm.length / rate,
      speech_s: speech,
      level_dbfs: dbfs(Math.sqrt(sum / Math.max(pcm.length, 1))),
      clipped: clipped / Math.max(pcm.length, 1),
    };
  }

  function voiceWarnings(a) {
    const out = [];
    const min = limits.min_voice_s;
    if (a.level_dbfs < SILENT_DBFS) {
      out.push(["silent", `The recording is silent (${a.level_dbfs.toFixed(0)} dBFS): check that the right microphone is on, then record again while reading the text aloud.`]);
    } else if (a.level_dbfs < QUIET_DBFS) {
      out.push(["quiet", `The recording is quiet (${a.level_dbfs.toFixed(0)} dBFS): speak up or move closer to the microphone.`]);
    }
    if (a.clipped > MAX_CLIPPED) {
      out.push(["clipped", `The recording is clipped (${(a.clipped * 100).toFixed(1)} % at full scale): move back from the microphone or lower its input level.`]);
    }
    if (a.level_dbfs >= SILENT_DBFS && (a.duration_s < min || a.speech_s < min * 0.6)) {
      out.push(["short", `Too short: ${a.speech_s.toFixed(1)} s of speech. Read the whole text (about 10 s).`]);
    }
    return out;
  }

  function showVoiceCheck(a) {
    const box = $("voice-warn");
    const warnings = voiceWarnings(a);
    box.hidden = false;
    if (warnings.length) {
      box.className = "warn";
      box.dataset.kind = warnings.map(([k]) => k).join(" ");
      box.textContent = warnings.map(([, text]) => text).join(" ");
    } else {
      box.className = "ok";
      box.dataset.kind = "ok";
      box.textContent = `Sounds good: ${a.speech_s.toFixed(1)} s of speech at ${a.level_dbfs.toFixed(0)} dBFS.`;
    }
  }

  function wav(pcm, rate) {
    const view = new DataView(new ArrayBuffer(44 + pcm.length * 2));
    const text = (at, s) => { for (let i = 0; i < s.length; i++) view.setUint8(at + i, s.charCodeAt(i)); };
    text(0, "RIFF"); view.setUint32(4, 36 + pcm.length * 2, true); text(8, "WAVE");
    text(12, "fmt "); view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
    view.setUint32(24, rate, true); view.setUint32(28, rate * 2, true); view.setUint16(32, 2, true);
    view.setUint16(34, 16, true); text(36, "data"); view.setUint32(40, pcm.length * 2, true);
    for (let i = 0; i < pcm.length; i++) {
      const x = Math.max(-1, Math.min(1, pcm[i]));
      view.setInt16(44 + i * 2, x < 0 ? x * 0x8000 : x * 0x7fff, true);
    }
    return new Blob([view], { type: "audio/wav" });
  }

  function meter(block) {
    let peak = 0, sum = 0;
    for (const x of block) { const a = Math.abs(x); if (a > peak) peak = a; sum += x * x; }
    const db = dbfs(Math.sqrt(sum / block.length));
    rec.recent.push(db);
    if (rec.recent.length > 60) rec.recent.shift();
    const level = $("level");
    level.style.width = `${Math.max(0, Math.min(100, (db + 60) * (100 / 60)))}%`;
    level.classList.toggle("hot", peak >= CLIP_LEVEL);
    level.classList.toggle("low", db < QUIET_DBFS);
    const seconds = rec.samples / rec.rate;
    $("rec-time").textContent = `${seconds.toFixed(1)} s`;
    const box = $("voice-warn");
    if (peak >= CLIP_LEVEL) {
      box.hidden = false; box.className = "warn"; box.dataset.kind = "clipped-live";
      box.textContent = "Too loud: the sound is clipping. Move back a little.";
    } else if (seconds > 2 && Math.max(...rec.recent) < SILENT_DBFS) {
      box.hidden = false; box.className = "warn"; box.dataset.kind = "silent-live";
      box.textContent = "We hear almost nothing: check the microphone, or move closer.";
    } else if (box.dataset.kind && box.dataset.kind.endsWith("-live")) {
      box.hidden = true; box.dataset.kind = "";
    }
    if (seconds >= MAX_RECORD_S) stopRecording();
  }

  async function startRecording() {
    clearError("voice");
    $("voice-warn").hidden = true;
    $("voice-warn").dataset.kind = "";
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false, channelCount: 1 },
      });
    } catch (err) {
      fieldError("voice", `The microphone is not available (${err.message}). Allow it and try again, or upload an audio file.`);
      return;
    }
    const ctx = new AudioContext();
    await ctx.audioWorklet.addModule("/static/recorder-worklet.js");
    const source = ctx.createMediaStreamSource(stream);
    const node = new AudioWorkletNode(ctx, "voice-recorder");
    const mute = ctx.createGain();
    mute.gain.value = 0;  // pulled by the graph, never heard
    source.connect(node).connect(mute).connect(ctx.destination);
    rec = { ctx, stream, node, blocks: [], samples: 0, rate: ctx.sampleRate, recent: [] };
    node.port.onmessage = (ev) => {
      if (!rec) return;
      rec.blocks.push(ev.data);
      rec.samples += ev.data.length;
      meter(ev.data);
    };
    const button = $("record");
    button.textContent = "■ Stop";
    button.setAttribute("aria-pressed", "true");
    button.classList.add("recording");
  }

  function stopRecording() {
    if (!rec) return;
    const { ctx, stream, blocks, samples, rate } = rec;
    rec = null;
    stream.getTracks().forEach((t) => t.stop());
    ctx.close();
    const button = $("record");
    button.textContent = "● Record again";
    button.setAttribute("aria-pressed", "false");
    button.classList.remove("recording");
    $("level").style.width = "0%";
    const pcm = new Float32Array(samples);
    let at = 0;
    for (const b of blocks) { pcm.set(b, at); at += b.length; }
    const analysis = analyse(pcm, rate);
    recording = { file: new File([wav(pcm, rate)], "recording.wav", { type: "audio/wav" }), analysis };
    voiceProblem = "";
    voiceFile = null;
    $("voice-file").value = "";
    $("voice-name").textContent = "";
    const preview = $("voice-preview");
    if (preview.src) URL.revokeObjectURL(preview.src);
    preview.src = URL.createObjectURL(recording.file);
    preview.hidden = false;
    showVoiceCheck(analysis);
  }

  $("record").addEventListener("click", () => { if (rec) stopRecording(); else startRecording(); });

  // ---------------------------------------------------------------- voice: a file
  $("voice-file").addEventListener("change", (ev) => {
    clearError("voice");
    voiceProblem = "";
    const file = ev.target.files[0];
    if (!file) return;
    if (file.size > limits.voice_max_bytes) {
      ev.target.value = "";
      voiceFile = null;
      voiceProblem = `${file.name} is ${mb(file.size)}, over the ${mb(limits.voice_max_bytes)} limit. Send about 10–30 s of speech (trim it, or export it as MP3 or M4A).`;
      fieldError("voice", voiceProblem);
      return;
    }
    voiceFile = file;
    recording = null;
    $("voice-preview").hidden = true;
    $("voice-warn").hidden = true;
    $("voice-name").textContent = file.name;
  });

  // ---------------------------------------------------------------- sending
  function setProgress(share, label) {
    const bar = $("make-progress");
    bar.hidden = false;
    bar.value = Math.max(bar.value, Math.min(1, share));
    $("make-status").textContent = label;
  }

  function checkForm() {
    const problems = [];
    const name = $("new-name").value.trim();
    if (!name) problems.push(["name", "Give your avatar a name."]);
    else if (!new RegExp(limits.name_pattern).test(name)) {
      problems.push(["name", `“${name}” cannot be a name: use 1–40 lower-case letters, digits, - or _, e.g. ${name.toLowerCase().replace(/[^a-z0-9_-]+/g, "-").replace(/^[-_]+/, "").slice(0, 40) || "ana"}.`]);
    }
    if (!photoFile) problems.push(["image", photoProblem || "Choose or drop a photo of your face."]);
    if (!recording && !voiceFile) problems.push(["voice", voiceProblem || "Record yourself reading the text, or upload an audio file."]);
    const persona = new TextEncoder().encode($("persona").value).length;
    if (persona > limits.persona_max_bytes) {
      problems.push(["persona", `The persona is ${(persona / 1024).toFixed(0)} KiB; keep it under ${limits.persona_max_bytes / 1024} KiB.`]);
    }
    return problems;
  }

  function finish(ok) {
    busy = false;
    const button = $("create");
    button.disabled = false;
    button.textContent = "Make my avatar";
    if (!ok) $("make-progress").hidden = true;
  }

  function fail(field, message) {
    finish(false);
    $("make-status").textContent = "";
    const target = fieldError(field, message);
    target.focus({ preventScroll: false });
  }

  async function succeed(avatar) {
    finish(true);
    setProgress(1, "");
    form.reset();
    photoFile = voiceFile = recording = null;
    $("photo-preview").hidden = true;
    $("photo-name").textContent = "Drop a photo here, or";
    $("voice-preview").hidden = true;
    $("voice-warn").hidden = true;
    $("voice-name").textContent = "";
    $("record").textContent = "● Record";
    $("make-progress").hidden = true;
    await loadOptions();
    selectAvatar(avatar.name);
    $("make-status").textContent = `Made ${avatar.display_name} (${avatar.name}): it is selected. Press the microphone or type below to talk to it.`;
    document.querySelector(".stage").scrollIntoView({ behavior: "smooth", block: "start" });
    messageBox.focus({ preventScroll: true });
  }

  function onLine(line) {
    let msg;
    try { msg = JSON.parse(line); } catch { return; }
    if (msg.type === "progress") {
      const label = msg.step.charAt(0).toUpperCase() + msg.step.slice(1);
      const detail = msg.detail ? ` (${msg.detail})` : "";
      setProgress(UPLOAD_SHARE + (1 - UPLOAD_SHARE) * (msg.done / msg.total), `${label}…${detail}`);
    } else if (msg.type === "error") {
      fail(msg.field, msg.error);
    } else if (msg.type === "done") {
      succeed(msg.avatar);
    }
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (busy) return;
    clearErrors();
    $("make-status").textContent = "";
    const problems = checkForm();
    if (problems.length) {
      let first = null;
      for (const [field, message] of problems) {
        const target = fieldError(field, message);
        first = first || target;
      }
      first.focus();
      return;
    }
    const data = new FormData();
    data.append("name", $("new-name").value.trim());
    data.append("image", photoFile, photoFile.name);
    const voice = recording ? recording.file : voiceFile;
    data.append("voice", voice, voice.name);
    if ($("persona").value.trim()) data.append("persona", $("persona").value);
    busy = true;
    const button = $("create");
    button.disabled = true;
    button.textContent = "Making…";
    $("make-progress").value = 0;
    setProgress(0, "Uploading…");

    const xhr = new XMLHttpRequest();
    let seen = 0;
    const readLines = (all) => {
      const text = xhr.responseText;
      let end = text.lastIndexOf("\n");
      if (all) end = text.length;
      if (end <= seen) return;
      for (const line of text.slice(seen, end).split("\n")) if (line.trim()) onLine(line);
      seen = end;
    };
    xhr.open("POST", "/api/v1/avatars");
    for (const [k, v] of Object.entries(headers({ Accept: NDJSON }))) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) setProgress(UPLOAD_SHARE * (e.loaded / e.total), `Uploading… ${Math.round((100 * e.loaded) / e.total)} %`);
    };
    xhr.onprogress = () => { if (xhr.status === 200) readLines(false); };
    xhr.onload = () => {
      if (xhr.status === 200) {
        readLines(true);
        if (busy) fail(null, "The server stopped before the avatar was made; try again.");
        return;
      }
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      if (xhr.status === 401) fail(null, "This server needs its token: open the page as /#token=<AVATAR_TOKEN>.");
      else if (xhr.status === 413 && !body.field) fail(null, `The upload is too large for this server (${body.error || "413"}). Use a smaller photo or a shorter voice sample.`);
      else fail(body.field, body.error || `The server answered ${xhr.status}; try again.`);
    };
    xhr.onerror = () => fail(null, "The server did not answer. Is it running? Your entries are kept: try again.");
    xhr.send(data);
  });

  // ---------------------------------------------------------------- the list, delete
  async function thumb(name) {
    if (thumbs.has(name)) return thumbs.get(name);
    try {
      const res = await fetch(`/api/v1/avatars/${encodeURIComponent(name)}/image`, { headers: headers() });
      if (!res.ok) return "";
      const url = URL.createObjectURL(await res.blob());
      thumbs.set(name, url);
      return url;
    } catch { return ""; }
  }

  function actions(li, name) {
    const box = li.querySelector(".actions");
    box.innerHTML = "";
    const talk = document.createElement("button");
    talk.type = "button";
    talk.textContent = "Talk";
    talk.className = "talk";
    talk.setAttribute("aria-label", `Talk to ${name}`);
    talk.addEventListener("click", () => { selectAvatar(name); messageBox.focus(); });
    box.append(talk);
    if (name === "default") return;
    const del = document.createElement("button");
    del.type = "button";
    del.textContent = "Delete";
    del.className = "delete";
    del.setAttribute("aria-label", `Delete ${name}`);
    del.addEventListener("click", () => confirmDelete(li, name));
    box.append(del);
  }

  function confirmDelete(li, name) {
    const box = li.querySelector(".actions");
    box.innerHTML = "";
    const ask = document.createElement("span");
    ask.className = "ask";
    ask.textContent = `Delete ${name} for good?`;
    const yes = document.createElement("button");
    yes.type = "button";
    yes.className = "delete confirm-delete";
    yes.textContent = "Yes, delete";
    const no = document.createElement("button");
    no.type = "button";
    no.textContent = "Cancel";
    no.addEventListener("click", () => { actions(li, name); li.querySelector(".delete").focus(); });
    yes.addEventListener("click", () => remove(li, name));
    box.append(ask, yes, no);
    no.focus();
  }

  async function remove(li, name) {
    const error = li.querySelector(".item-error");
    error.hidden = true;
    try {
      const res = await fetch(`/api/v1/avatars/${encodeURIComponent(name)}`, { method: "DELETE", headers: headers() });
      const body = await res.json().catch(() => ({}));
      if (!res.ok) throw new Error(body.error || `the server answered ${res.status}`);
    } catch (err) {
      error.textContent = `Could not delete ${name}: ${err.message}`;
      error.hidden = false;
      actions(li, name);
      return;
    }
    thumbs.delete(name);
    if ($("avatar").value === name) selectAvatar("default");
    $("make-status").textContent = `Deleted ${name}.`;
    await loadOptions();
  }

  async function renderList(names) {
    const list = $("avatar-list");
    list.innerHTML = "";
    for (const name of names) {
      const li = document.createElement("li");
      li.dataset.name = name;
      const img = document.createElement("img");
      img.alt = "";
      img.width = img.height = 48;
      const label = document.createElement("span");
      label.className = "avatar-name";
      label.textContent = name === "default" ? "default (ships with the program)" : name;
      const box = document.createElement("span");
      box.className = "actions";
      const error = document.createElement("p");
      error.className = "item-error field-error";
      error.setAttribute("role", "alert");
      error.hidden = true;
      li.append(img, label, box, error);
      list.append(li);
      actions(li, name);
      thumb(name).then((url) => { if (url) img.src = url; });
    }
  }

  document.addEventListener("avatars-changed", (ev) => renderList(ev.detail || []));
  window.avatarVoiceCheck = { analyse, voiceWarnings };  // for diagnostics and the browser tests
})();
