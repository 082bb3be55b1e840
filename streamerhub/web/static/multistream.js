// Multistream page: targets, library, jobs — all through /api/v1, refreshed live.
"use strict";
(() => {
  const root = document.getElementById("multistream");
  if (!root) return;
  const API = "/api/v1";
  const {api, el, showError, duration, bytes, number} = SH;
  const state = {targets: [], videos: [], jobs: [], playlist: [], openLogs: new Set(), editing: null,
                 presets: [], testing: new Map()};  // testing: target id → when its key test began
  // Times in the streamer's zone (as every other page shows them), not the browser's.
  const zone = root.dataset.tz || "UTC";
  const when = (iso) => new Date(iso).toLocaleString("sv-SE", {timeZone: zone}).slice(0, 16);
  const clock = (iso) => new Date(iso).toLocaleTimeString("sv-SE", {timeZone: zone});

  // ------------------------------------------------------------------ targets
  async function loadTargets() {
    state.targets = await api("GET", `${API}/targets`);
    const now = Date.now();
    for (const [id, since] of state.testing) {
      const t = state.targets.find((x) => x.id === id);
      if (!t || t.key_test || now - since > 90_000) state.testing.delete(id);
    }
    renderTargets();
    renderChecklist();
    renderJobTargets();
  }

  function renderTargets() {
    const body = document.querySelector("#targets-table tbody");
    body.replaceChildren(...(state.targets.length ? state.targets.map(targetRow) :
      [el("tr", {}, el("td", {colspan: 5, class: "empty", text: "No target yet: add one below."}))]));
  }

  function targetRow(t) {
    return el("tr", {dataset: {targetId: t.id}},
      el("td", {}, el("strong", {text: t.name})),
      el("td", {}, el("code", {text: t.url}),
        t.ca_file ? el("div", {class: "small muted ca-file", text: `CA file: ${t.ca_file}`}) : null),
      el("td", {}, el("code", {class: "masked", text: t.stream_key}), keyTest(t)),
      el("td", {}, el("label", {class: "switch"},
        el("input", {type: "checkbox", checked: t.enabled, onchange: (ev) => toggleTarget(t, ev.target)}),
        t.enabled ? " on" : " off")),
      el("td", {class: "actions"},
        el("button", {type: "button", class: "small", title: "Publish a few test seconds with this key (Twitch: bandwidth-test mode, never public)", onclick: (ev) => testTarget(t, ev.target), text: "Test"}),
        el("button", {type: "button", class: "small", onclick: () => editTarget(t), text: "Edit"}),
        el("button", {type: "button", class: "small danger", onclick: () => deleteTarget(t), text: "Delete"})));
  }

  // The last key test on the target (the one made at creation lands here when done).
  function keyTest(t) {
    if (!t.key_test) {
      return state.testing.has(t.id) ? el("div", {class: "key-test small muted", text: "Testing the key…"}) : null;
    }
    const k = t.key_test;
    return el("div", {class: `key-test small ${k.ok ? "good" : "bad"}`,
      title: k.at ? `tested ${when(k.at)}` : null,
      text: `${k.ok ? "OK" : k.result.replaceAll("_", " ")}: ${k.message}`});
  }

  async function testTarget(t, button) {
    const row = button.closest("tr");
    const out = row.querySelector(".key-test") || el("div", {class: "key-test small"});
    button.disabled = true;
    out.className = "key-test small muted";
    out.textContent = "Testing…";
    row.cells[2].append(out);
    try {
      const checked = await api("POST", `${API}/targets/${t.id}/test`);
      out.className = `key-test small ${checked.ok ? "good" : "bad"}`;
      out.textContent = `${checked.ok ? "OK" : checked.result.replaceAll("_", " ")}: ${checked.message}`;
    } catch (err) { out.className = "key-test small bad"; out.textContent = String(err.message || err); }
    button.disabled = false;
  }

  async function toggleTarget(t, box) {
    try {
      await api("PATCH", `${API}/targets/${t.id}`, {enabled: box.checked});
      showError("targets-error", null);
    } catch (err) { box.checked = !box.checked; showError("targets-error", err); }
    loadTargets();
  }

  // A target used by jobs: say which, and take it out of them first (a job keeps its other
  // targets; a job whose only target this is cannot be left without one, so it is named).
  async function deleteTarget(t) {
    const using = state.jobs.filter((j) => j.targets.some((x) => x.target_id === t.id));
    const alone = using.filter((j) => j.targets.length === 1);
    if (alone.length) {
      showError("targets-error", new Error(`${t.name} is the only target of ${alone.map((j) => j.name).join(", ")}: delete ${alone.length === 1 ? "that job" : "those jobs"} or give ${alone.length === 1 ? "it" : "them"} another target first.`));
      return;
    }
    const question = using.length
      ? `Remove ${t.name} from ${using.length} job${using.length === 1 ? "" : "s"} (${using.map((j) => j.name).join(", ")}) and delete it?`
      : `Delete the target ${t.name}?`;
    if (!confirm(question)) return;
    try {
      for (const j of using) {
        await api("PATCH", `${API}/jobs/${j.id}`, {targets: j.targets.map((x) => x.target_id).filter((id) => id !== t.id)});
      }
      await api("DELETE", `${API}/targets/${t.id}`);
      showError("targets-error", null);
    } catch (err) { showError("targets-error", err); }
    await loadTargets();
    await loadJobs();
  }

  const targetForm = document.getElementById("target-form");
  const presetPick = document.getElementById("target-preset");
  const regionRow = document.getElementById("target-region-row");
  const presetNote = document.getElementById("target-preset-note");
  const REGION = /^[a-z]{3}\d{2,3}$/;  // Twitch's ingest names: fra05, lhr08, jfk50

  // The platforms come from the API (GET /presets), with their documented ingest and needs.
  async function loadPresets() {
    state.presets = await api("GET", `${API}/presets`);
    presetPick.replaceChildren(...state.presets.map((p) => el("option", {value: p.key,
      text: p.key === "twitch" ? "Twitch (nearest ingest or a region)" : p.key === "custom" ? "custom URL" : p.name})));
    presetPick.value = "custom";
  }

  function needs(p) {
    const r = p.requirements;
    if (!r) return "";
    return `${p.name} asks for H.264 (${r.profiles.join("/")}) up to ${r.max_height}p${r.max_fps}, ` +
      `keyframes at most ${r.max_keyframe_s} s apart, at most ${number(r.max_video_kbps)} kbit/s video, ` +
      `AAC audio at ${r.sample_rates.map((x) => `${x / 1000} kHz`).join(" or ")}; the job checks its videos against this.`;
  }

  // A platform fills in its ingest URL (for Twitch: the nearest, or the region typed) and a
  // name when none is typed yet; the URL is the platform's own, so it is not typed by hand.
  function applyPreset() {
    const p = state.presets.find((x) => x.key === presetPick.value);
    const custom = !p || p.key === "custom";
    regionRow.hidden = !p || p.key !== "twitch";
    targetForm.url.readOnly = !custom;
    presetNote.hidden = custom;
    if (custom) return;
    presetNote.textContent = [needs(p), p.key === "twitch" ? "Leave the ingest empty for the nearest one, or type a region name from Twitch's ingest list (e.g. fra05)." : ""].filter(Boolean).join(" ");
    const region = targetForm.region.value.trim().toLowerCase();
    targetForm.url.value = p.key === "twitch" && region && region !== "auto"
      ? `rtmps://${region}.contribute.live-video.net/app` : p.url;
    if (!targetForm.name.value) targetForm.name.value = p.name;
  }
  presetPick.addEventListener("change", applyPreset);
  targetForm.region.addEventListener("input", applyPreset);

  function editTarget(t) {
    resetTargetForm();
    targetForm.id.value = t.id;
    targetForm.name.value = t.name;
    targetForm.url.value = t.url;
    targetForm.stream_key.value = "";
    targetForm.stream_key.placeholder = `unchanged (${t.stream_key})`;
    targetForm.channel_id.value = t.channel_id || "";
    targetForm.ca_file.value = t.ca_file || "";
    targetForm.enabled.checked = t.enabled;
    document.getElementById("target-test-row").hidden = true;  // "Test" on the row does it
    document.getElementById("target-submit").textContent = "Save target";
    document.getElementById("target-cancel").hidden = false;
    targetForm.name.focus();
  }

  function resetTargetForm() {
    targetForm.reset();
    targetForm.id.value = "";
    targetForm.stream_key.placeholder = "write-only";
    presetPick.value = "custom";
    applyPreset();
    document.getElementById("target-test-row").hidden = false;
    document.getElementById("target-submit").textContent = "Add target";
    document.getElementById("target-cancel").hidden = true;
  }
  document.getElementById("target-cancel").addEventListener("click", resetTargetForm);

  function targetBody(f) {
    const body = {name: f.name.value, enabled: f.enabled.checked, channel_id: f.channel_id.value || null};
    const preset = f.id.value ? "custom" : presetPick.value;
    if (preset === "custom") body.url = f.url.value;
    else {
      body.preset = preset;  // the server turns it (and a Twitch region) into the ingest URL
      const region = f.region.value.trim().toLowerCase();
      if (preset === "twitch" && region) body.region = region;
    }
    if (f.ca_file.value.trim() || f.id.value) body.ca_file = f.ca_file.value.trim() || null;
    if (f.stream_key.value || !f.id.value) body.stream_key = f.stream_key.value;
    if (!f.id.value && f.test_key.checked) body.test_key = true;
    return body;
  }

  targetForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = targetForm;
    const region = f.region.value.trim().toLowerCase();
    if (presetPick.value === "twitch" && region && region !== "auto" && !REGION.test(region)) {
      showError("target-form-error", new Error(`"${region}" is not a Twitch ingest name: use one like fra05 (from Twitch's ingest list), or leave it empty for the nearest.`));
      return;
    }
    const body = targetBody(f);
    try {
      if (f.id.value) await api("PATCH", `${API}/targets/${f.id.value}`, body);
      else {
        const made = await api("POST", `${API}/targets`, body);
        if (body.test_key) state.testing.set(made.id, Date.now());
      }
      showError("target-form-error", null);
      resetTargetForm();
      loadTargets();
    } catch (err) { showError("target-form-error", err); }
  });

  // ------------------------------------------------------------------ library
  async function loadVideos() {
    state.videos = await api("GET", `${API}/videos`);
    renderVideos();
    renderChecklist();
    renderVideoPick();
  }

  function probeText(v) {
    const p = (v.prepared && v.prepared.probe) || v.probe;
    if (!p || v.status === "rejected") return "";
    const parts = [];
    if (p.duration) parts.push(duration(p.duration));
    if (p.video) parts.push(`${p.video.width}×${p.video.height}`, p.video.fps ? `${number(p.video.fps, 2)} fps` : null, p.video.codec);
    parts.push(p.audio ? p.audio.codec : "no audio");
    if (p.bitrate_kbps) parts.push(`${number(p.bitrate_kbps)} kbit/s`);
    if (p.keyframe_interval) parts.push(`keyframes every ${number(p.keyframe_interval, 1)} s`);
    if (v.prepared) {
      const why = (v.prepared.reasons || []).join("; ");
      parts.push(v.prepared.mode === "remux" ? "remuxed" : `re-encoded${why ? ` (${why})` : ""}`);
    }
    return parts.filter(Boolean).join(" · ");
  }

  function renderVideos() {
    const body = document.querySelector("#videos-table tbody");
    body.replaceChildren(...(state.videos.length ? state.videos.map(videoRow) :
      [el("tr", {}, el("td", {colspan: 5, class: "empty", text: "No video yet: upload one below."}))]));
  }

  function videoRow(v) {
    const busy = v.status === "preparing" || v.status === "probing";
    const pct = v.progress !== null && v.progress !== undefined ? Math.round(v.progress * 100) : null;
    return el("tr", {dataset: {videoId: v.id}},
      el("td", {}, el("strong", {text: v.label}), el("br"), el("small", {class: "muted", text: v.source})),
      el("td", {}, el("span", {class: `state state-${v.status}`, text: v.status}),
        busy && pct !== null ? el("progress", {max: 100, value: pct, class: "inline-progress"}) : null,
        busy && pct !== null ? ` ${pct} %` : null,
        v.status === "rejected" && v.reason ? el("div", {class: "bad small", text: v.reason}) : null,
        ...(v.notices || []).map((n) => el("div", {class: "warn small video-notice", text: n}))),
      el("td", {class: "small"}, probeText(v)),
      el("td", {class: "nowrap"}, bytes(v.size_bytes)),
      el("td", {class: "actions"},
        busy ? el("button", {type: "button", class: "small", text: "Cancel", onclick: () => videoAction(v, "cancel")}) : null,
        !busy && v.status !== "ready" && v.status !== "rejected" ? el("button", {type: "button", class: "small", text: "Prepare", onclick: () => videoAction(v, "prepare")}) : null,
        el("button", {type: "button", class: "small danger", text: "Delete", onclick: () => deleteVideo(v)})));
  }

  async function videoAction(v, action) {
    try { await api("POST", `${API}/videos/${v.id}/${action}`, {}); showError("library-error", null); }
    catch (err) { showError("library-error", err); }
    loadVideos();
  }

  async function deleteVideo(v) {
    if (!confirm(`Delete ${v.label}?`)) return;
    try { await api("DELETE", `${API}/videos/${v.id}`); showError("library-error", null); }
    catch (err) { showError("library-error", err); }
    loadVideos();
  }

  // Upload several files (chosen or dropped), one after the other, each with its own progress
  // bar and its own outcome: ready, or rejected with the reason. XMLHttpRequest reports upload
  // progress, fetch does not.
  const uploadForm = document.getElementById("upload-form");
  const drop = document.getElementById("upload-drop");
  const uploads = {queue: [], busy: false};

  function queueUploads(files) {
    showError("upload-error", null);
    if (!files.length) { showError("upload-error", new Error("Choose or drop one or more video files first.")); return; }
    const options = {};
    for (const name of ["video_kbps", "audio_kbps"]) if (uploadForm[name].value) options[name] = uploadForm[name].value;
    for (const file of files) uploads.queue.push({file, options, item: uploadItem(file)});
    uploadForm.file.value = "";
    if (!uploads.busy) runUploads();
  }

  function uploadItem(file) {
    const item = el("li", {class: "upload-item", dataset: {file: file.name}},
      el("span", {class: "upload-name", text: file.name}),
      el("progress", {max: 100, value: 0, "aria-label": `${file.name} upload`}),
      el("span", {class: "upload-status muted", text: "Waiting…"}));
    document.getElementById("upload-list").append(item);
    return item;
  }

  function say(item, text, tone) {
    const status = item.querySelector(".upload-status");
    status.textContent = text;
    status.className = `upload-status ${tone || "muted"}`;
    item.dataset.result = tone === "good" ? "ready" : tone === "bad" ? "rejected" : "";
  }

  async function runUploads() {
    uploads.busy = true;
    while (uploads.queue.length) {
      const next = uploads.queue.shift();
      const id = await uploadOne(next);
      if (id) followUpload(id, next.file.name, next.item);
    }
    uploads.busy = false;
  }

  // Resolves with the new video's id, or null when the daemon refused the file.
  function uploadOne({file, options, item}) {
    const limit = Number(root.dataset.maxUpload);
    const bar = item.querySelector("progress");
    if (file.size > limit) {
      bar.hidden = true;
      say(item, `Rejected: ${bytes(file.size)} is above the upload limit of ${bytes(limit)}. Import it by path instead, or raise [ffmpeg] max_upload_bytes.`, "bad");
      return Promise.resolve(null);
    }
    const data = new FormData();
    for (const [name, value] of Object.entries(options)) data.append(name, value);
    data.append("file", file, file.name);
    return new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", `${API}/videos`);
      xhr.setRequestHeader("X-CSRF-Token", SH.csrf());
      xhr.setRequestHeader("Accept", "application/json");
      say(item, "Uploading…");
      xhr.upload.addEventListener("progress", (e) => {
        if (!e.lengthComputable) return;
        bar.value = Math.round(e.loaded / e.total * 100);
        say(item, `Uploading… ${bar.value} % (${bytes(e.loaded)} of ${bytes(e.total)})`);
      });
      xhr.addEventListener("load", () => {
        let body = null;
        try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
        loadVideos();
        if (xhr.status >= 200 && xhr.status < 300 && body && body.id) {
          bar.value = 100;
          say(item, "Uploaded: checking it…");
          resolve(body.id);
        } else {
          bar.hidden = true;
          say(item, `Rejected: ${(body && body.error) || `the daemon refused the upload (${xhr.status})`}`, "bad");
          resolve(null);
        }
      });
      xhr.addEventListener("error", () => {
        bar.hidden = true;
        say(item, "Not uploaded: the connection broke off (is the daemon running?). Try this file again.", "bad");
        resolve(null);
      });
      xhr.send(data);
    });
  }

  uploadForm.addEventListener("submit", (ev) => { ev.preventDefault(); queueUploads([...uploadForm.file.files]); });
  // Dropping files is the intent to upload them: no button press needed.
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    drop.classList.remove("over");
    queueUploads([...((ev.dataTransfer && ev.dataTransfer.files) || [])]);
  });

  // The upload's outcome in words: ready, or rejected with the reason (never just "Uploaded").
  async function followUpload(id, name, item) {
    for (let i = 0; i < 600; i++) {
      await new Promise((r) => setTimeout(r, 1000));
      const v = state.videos.find((x) => x.id === id);
      if (!v) continue;
      if (v.status === "ready") { say(item, "Ready to stream.", "good"); return; }
      if (v.status === "rejected") {
        say(item, `Rejected: ${(v.reason || `${name} is not a video StreamerHub can stream`).replace(/\.$/, "")}.`, "bad");
        return;
      }
      say(item, `Uploaded: ${v.status}…`);
    }
  }

  document.getElementById("import-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = ev.target;
    try {
      await api("POST", `${API}/videos`, {path: f.path.value});
      showError("import-error", null); f.reset(); loadVideos();
    } catch (err) { showError("import-error", err); }
  });

  // ------------------------------------------------------------------ jobs
  function renderVideoPick() {
    const pick = document.getElementById("job-video-pick");
    const ready = state.videos.filter((v) => v.status === "ready");
    const chosen = pick.value;
    pick.replaceChildren(...(ready.length ? ready.map((v) => el("option", {value: v.id, text: v.label})) :
      [el("option", {value: "", text: "no ready video yet"})]));
    if (ready.some((v) => String(v.id) === chosen)) pick.value = chosen;
    pick.disabled = !ready.length;
    document.getElementById("job-video-add").disabled = !ready.length;
    renderPlaylist();
  }

  function renderPlaylist() {
    const list = document.getElementById("job-playlist");
    const label = (id) => (state.videos.find((v) => v.id === id) || {label: `video ${id}`}).label;
    list.replaceChildren(...state.playlist.map((id, i) => el("li", {},
      label(id), " ",
      el("button", {type: "button", class: "small link", text: "remove", onclick: () => { state.playlist.splice(i, 1); renderPlaylist(); }}))));
  }

  document.getElementById("job-video-add").addEventListener("click", () => {
    const id = Number(document.getElementById("job-video-pick").value);
    if (id) { state.playlist.push(id); renderPlaylist(); }
  });

  function renderJobTargets() {
    const box = document.getElementById("job-targets");
    const checked = new Set([...box.querySelectorAll("input:checked")].map((i) => Number(i.value)));
    box.replaceChildren(...(state.targets.length ? state.targets.map((t) => el("label", {class: "check"},
      el("input", {type: "checkbox", name: "targets", value: t.id, checked: checked.has(t.id)}), ` ${t.name}`,
      t.enabled ? null : el("small", {class: "muted", text: " (disabled)"}))) :
      [el("span", {class: "muted", text: "Add a target first."})]));
  }

  function jobBody(f) {
    const body = {name: f.name.value, videos: state.playlist.slice(),
                  targets: [...f.querySelectorAll('input[name="targets"]:checked')].map((i) => Number(i.value))};
    const mode = f.loop_mode.value;
    body.loop = mode === "forever" ? "forever" : mode === "once" ? 1 : Number(f.loop_times.value);
    if (f.title.value) body.title = f.title.value;
    if (f.category.value) body.category = f.category.value;
    const tags = f.tags.value.split(",").map((t) => t.trim()).filter(Boolean);
    if (tags.length) body.tags = tags;
    const days = [...f.querySelectorAll('input[name="days"]:checked')].map((i) => i.value);
    const schedule = {};
    if (f.start_at.value) schedule.start_at = f.start_at.value;
    if (f.stop_at.value) schedule.stop_at = f.stop_at.value;
    if (f.duration_min.value) schedule.duration_s = Math.round(Number(f.duration_min.value) * 60);
    if (days.length) schedule.days = days;
    if (Object.keys(schedule).length) body.schedule = schedule;
    return body;
  }

  document.getElementById("job-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = ev.target;
    // A video chosen but not added is what the streamer meant: it becomes the playlist.
    const picked = Number(document.getElementById("job-video-pick").value);
    if (!state.playlist.length && picked) { state.playlist.push(picked); renderPlaylist(); }
    if (!state.playlist.length) { showError("job-form-error", new Error("Add at least one ready video to the playlist (upload one in step 2 first).")); return; }
    try {
      if (state.editing) {
        await api("PATCH", `${API}/jobs/${state.editing}`, jobBody(f));
      } else {
        const job = await api("POST", `${API}/jobs`, jobBody(f));
        if (f.start_now.checked && !jobBody(f).schedule) await api("POST", `${API}/jobs/${job.id}/start`, {});
      }
      showError("job-form-error", null);
      resetJobForm();
      loadJobs();
    } catch (err) { showError("job-form-error", err); }
  });

  // Edit a job in the same form: PATCH /jobs/{id} with what the form holds.
  function editJob(job) {
    const f = document.getElementById("job-form");
    resetJobForm();
    state.editing = job.id;
    f.name.value = job.name;
    state.playlist = job.videos.slice();
    renderPlaylist();
    for (const box of f.querySelectorAll('input[name="targets"]')) {
      box.checked = job.targets.some((t) => t.target_id === Number(box.value));
    }
    f.loop_mode.value = job.loop === "forever" ? "forever" : job.loop === 1 ? "once" : "times";
    if (typeof job.loop === "number" && job.loop > 1) f.loop_times.value = job.loop;
    f.title.value = job.title || "";
    f.category.value = job.category || "";
    f.tags.value = (job.tags || []).join(", ");
    document.getElementById("job-submit").textContent = `Save ${job.name}`;
    document.getElementById("job-cancel").hidden = false;
    f.start_now.closest("label").hidden = true;
    const details = document.getElementById("job-create");
    details.open = true;
    f.name.focus();
  }

  function resetJobForm() {
    const f = document.getElementById("job-form");
    f.reset();
    state.editing = null;
    state.playlist = [];
    renderPlaylist();
    document.getElementById("job-submit").textContent = "Create job";
    document.getElementById("job-cancel").hidden = true;
    f.start_now.closest("label").hidden = false;
    document.getElementById("job-create").open = false;
  }
  document.getElementById("job-cancel").addEventListener("click", resetJobForm);

  // Category search through the daemon (it asks Twitch with a connected channel's token).
  let searchTimer = null;
  document.getElementById("job-category").addEventListener("input", (ev) => {
    clearTimeout(searchTimer);
    const q = ev.target.value.trim();
    if (q.length < 2) return;
    searchTimer = setTimeout(async () => {
      try {
        const found = await api("GET", `/multistream/categories?q=${encodeURIComponent(q)}`);
        document.getElementById("category-options").replaceChildren(
          ...found.map((c) => el("option", {value: c.name})));
      } catch (err) { /* search is a convenience: typing the name works too */ }
    }, 250);
  });

  // Until the first job exists, the checklist says which step is next.
  function renderChecklist() {
    const list = document.getElementById("checklist");
    list.hidden = !state.jobsLoaded || state.jobs.length > 0;
    const done = {targets: state.targets.length > 0, videos: state.videos.some((v) => v.status === "ready"), jobs: false};
    for (const li of list.querySelectorAll("li[data-step]")) li.classList.toggle("done", done[li.dataset.step]);
  }

  async function loadJobs() {
    state.jobs = await api("GET", `${API}/jobs`);
    state.jobsLoaded = true;
    renderChecklist();
    await renderJobs();
    document.getElementById("jobs-updated").textContent = `updated ${clock(new Date().toISOString())}`;
  }

  async function renderJobs() {
    const box = document.getElementById("jobs");
    if (!state.jobs.length) {
      box.replaceChildren(el("p", {class: "empty", text: "No job yet. A job pushes videos to one or more targets."}));
      return;
    }
    const cards = [];
    for (const job of state.jobs) cards.push(await jobCard(job));
    box.replaceChildren(...cards);
  }

  function videoLabels(ids) {
    return ids.map((id) => (state.videos.find((v) => v.id === id) || {label: `#${id}`}).label).join(" → ");
  }

  async function jobCard(job) {
    const running = job.desired === "running";
    const loop = job.loop === "forever" ? "loops forever" : job.loop === 1 ? "plays once" : `plays ${job.loop} times`;
    const card = el("article", {class: `job job-${job.state}`, dataset: {jobId: job.id}},
      el("header", {},
        el("h3", {}, job.name, " ", el("span", {class: `state state-${job.state}`, text: job.state})),
        el("div", {class: "actions"},
          running ? el("button", {type: "button", class: "danger", text: "Stop job", onclick: () => jobAction(job, "stop")})
                  : el("button", {type: "button", class: "primary", text: "Start job", onclick: () => jobAction(job, "start")}),
          el("button", {type: "button", class: "small", text: "Edit", onclick: () => editJob(job)}),
          running ? null : el("button", {type: "button", class: "small danger", text: "Delete", onclick: () => deleteJob(job)}))),
      el("p", {class: "muted small"}, videoLabels(job.videos), ` · ${loop}`,
        job.title ? ` · “${job.title}”` : null, job.category ? ` · ${job.category}` : null,
        job.started_at && running ? ` · started ${when(job.started_at)}` : null,
        job.next_start ? ` · next start ${when(job.next_start)}` : null,
        job.stop_deadline && running ? ` · stops ${when(job.stop_deadline)}` : null,
        job.ended_reason && !running ? ` · last run: ${job.ended_reason}` : null),
      ...(job.warnings || []).map((w) => el("p", {class: "bad small warning", text: `⚠ ${w}`})),
      el("table", {class: "data compact targets-live"},
        el("thead", {}, el("tr", {}, ...["Target", "State", "Bitrate", "FPS", "Speed", "Uptime", "Restarts", "Last error", ""].map((h) => el("th", {text: h})))),
        el("tbody", {}, ...job.targets.map((t) => liveRow(job, t)))));
    const logs = el("details", {class: "logs", open: state.openLogs.has(job.id),
      ontoggle: (ev) => { if (ev.target.open) { state.openLogs.add(job.id); fillLogs(job, ev.target); } else state.openLogs.delete(job.id); }},
      el("summary", {text: running ? "FFmpeg log (live)" : "FFmpeg log"}), el("div", {class: "log-body", text: "Loading…"}));
    // Keep what the open log showed until the new lines arrive: no "Loading…" flash each poll.
    const shown = document.querySelector(`.job[data-job-id="${job.id}"] .log-body`);
    if (shown && state.openLogs.has(job.id)) logs.querySelector(".log-body").replaceChildren(...shown.childNodes);
    if (state.openLogs.has(job.id)) fillLogs(job, logs);
    card.append(logs);
    return card;
  }

  function liveRow(job, t) {
    const on = t.desired === "running" && job.desired === "running";
    const retry = t.next_retry_in_s !== null && t.next_retry_in_s !== undefined ? `retry in ${Math.round(t.next_retry_in_s)} s` : null;
    return el("tr", {dataset: {targetId: t.target_id}, class: `target-${t.state}`},
      el("td", {}, t.name),
      el("td", {}, el("span", {class: `state state-${t.state}`, text: t.state}), retry ? el("div", {class: "small muted", text: retry}) : null),
      el("td", {class: "num"}, t.bitrate_kbps ? `${number(t.bitrate_kbps)} kbit/s` : "—"),
      el("td", {class: "num"}, t.fps ? number(t.fps, 1) : "—"),
      el("td", {class: "num"}, t.speed ? `${number(t.speed, 2)}×` : "—"),
      el("td", {class: "num"}, t.uptime_s ? duration(t.uptime_s) : "—"),
      el("td", {class: "num"}, t.restarts || 0),
      el("td", {class: "small"}, t.last_error ? failure(t.failure_class, t.last_error) : ""),
      el("td", {class: "actions"}, job.desired !== "running" ? null :
        on ? el("button", {type: "button", class: "small", text: "Stop", onclick: () => targetAction(job, t, "stop")})
           : el("button", {type: "button", class: "small", text: "Start", onclick: () => targetAction(job, t, "start")})));
  }

  // Each failure class in one sentence a streamer can act on; FFmpeg's own words below it.
  const FAILURES = {
    key_rejected: "The platform refused the stream key: copy it again from the platform's dashboard and edit the target.",
    connection_refused: "The ingest server refused the connection: check the ingest URL, or the platform may be down.",
    dns: "The ingest server's name could not be found: check the ingest URL and this machine's internet connection.",
    tls: "The secure (RTMPS) connection failed: check the URL's rtmps:// address and port, or this machine's clock.",
    timeout: "The ingest server stopped answering: the connection is slow or dropped; StreamerHub retries by itself.",
    input_error: "The video could not be read: prepare it again in the library, or remove it from the job.",
    other: "FFmpeg stopped with an error: the detail below says what it saw.",
  };
  function failure(kind, raw) {
    return el("div", {class: "failure", dataset: {failure: kind || "other"}},
      el("span", {class: "bad", text: FAILURES[kind] || FAILURES.other}),
      el("div", {class: "muted raw", title: "FFmpeg's own words", text: raw}));
  }

  // While a job runs, each target's FFmpeg output as it comes (GET /jobs/{id}/log, polled with
  // the rest of the page); below it, the output each finished run left.
  async function fillLogs(job, details) {
    const body = details.querySelector(".log-body");
    try {
      const [live, detail] = await Promise.all([
        api("GET", `${API}/jobs/${job.id}/log`), api("GET", `${API}/jobs/${job.id}`)]);
      const tails = live.targets.filter((t) => t.running).map((t) => el("div", {class: "run live-log", dataset: {targetId: t.target_id}},
        el("div", {class: "small"}, el("strong", {text: t.name}), ` · run ${t.run} · `, el("span", {class: "good", text: "running now"})),
        el("pre", {class: "log", text: t.lines.join("\n") || "(no output yet)"})));
      const runs = (detail.runs || []).slice(0, 6).map((r) => {
        const target = (job.targets.find((t) => t.target_id === r.target_id) || {name: `target ${r.target_id}`}).name;
        return el("div", {class: "run"},
          el("div", {class: "small muted"}, `${target} · run ${r.id} · ${when(r.started_at)}`,
            r.ended_at ? ` → ${clock(r.ended_at)}` : " (running)",
            r.failure_class ? ` · ${FAILURES[r.failure_class] || r.failure_class}` : "", r.error ? ` · ${r.error}` : ""),
          el("pre", {class: "log", text: r.stderr_tail || "(no output)"}));
      });
      const parts = [...tails];
      if (runs.length) parts.push(el("h4", {class: "small muted", text: "Finished runs"}), ...runs);
      body.replaceChildren(...(parts.length ? parts : [el("p", {class: "muted", text: "This job has not run yet."})]));
      // Follow the newest lines, as a terminal does.
      for (const pre of body.querySelectorAll(".live-log pre")) pre.scrollTop = pre.scrollHeight;
    } catch (err) { body.textContent = err.message; }
  }

  async function jobAction(job, action) {
    try { await api("POST", `${API}/jobs/${job.id}/${action}`, {}); showError("jobs-error", null); }
    catch (err) { showError("jobs-error", err); }
    loadJobs();
  }

  async function targetAction(job, t, action) {
    try { await api("POST", `${API}/jobs/${job.id}/targets/${t.target_id}/${action}`, {}); showError("jobs-error", null); }
    catch (err) { showError("jobs-error", err); }
    loadJobs();
  }

  async function deleteJob(job) {
    if (!confirm(`Delete the job ${job.name}?`)) return;
    try { await api("DELETE", `${API}/jobs/${job.id}`); showError("jobs-error", null); }
    catch (err) { showError("jobs-error", err); }
    loadJobs();
  }

  // ------------------------------------------------------------------ live refresh
  async function refresh() {
    try {
      await loadJobs();
      if (state.testing.size) await loadTargets();  // a key test made at creation lands
      if (state.videos.some((v) => ["uploaded", "probing", "preparing"].includes(v.status))) await loadVideos();
      showError("jobs-error", null);
    } catch (err) { showError("jobs-error", err); }
  }

  (async () => {
    try { await Promise.all([loadPresets(), loadTargets(), loadVideos()]); await loadJobs(); }
    catch (err) { showError("jobs-error", err); }
    setInterval(() => { if (!document.hidden) refresh(); }, 1500);
  })();
})();
