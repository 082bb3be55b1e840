// Linked Twitch accounts panel: link a target to an account, see Twitch's word while live.
"use strict";
// This partial's script comes before app.js in the page: start once every deferred script ran.
document.addEventListener("DOMContentLoaded", () => {
  const panel = document.getElementById("linked-panel");
  if (!panel) return;
  const API = "/api/v1";
  const {api, el, showError, number} = SH;
  let targets = [];

  function options(select) {
    const chosen = select.value;
    select.replaceChildren(...targets.map((t) => el("option", {value: t.id, text: t.name})));
    if (chosen) select.value = chosen;
  }

  function accountCell(a) {
    if (!a) return el("td", {class: "muted", text: "not linked"});
    return el("td", {},
      a.avatar_url ? el("img", {src: a.avatar_url, alt: "", width: 24, height: 24, class: "avatar"}) : null,
      " ", el("strong", {text: a.display_name}), " ", el("span", {class: "muted", text: `(${a.login}, ${a.via})`}));
  }

  function row(t, live) {
    const a = t.account;
    const tw = live && live.twitch;
    const onAir = tw ? `${tw.ours} / ${tw.twitch}` : "—";
    const what = tw && tw.title ? `${tw.title} · ${tw.category}` : "—";
    return [
      el("tr", {dataset: {targetId: t.id}},
        el("td", {text: t.name}),
        accountCell(a),
        el("td", {text: a ? number(a.followers) : "—"}),
        el("td", {text: a ? (a.key_source === "helix" ? "read from Twitch" : (t.key_test ? t.key_test.result : "typed")) : "—"}),
        el("td", {class: tw && tw.warning ? "bad" : "", text: onAir}),
        el("td", {text: tw ? number(tw.viewers) : "—"}),
        el("td", {text: what}),
        el("td", {}, a ? el("button", {type: "button", text: "Unlink", onclick: () => unlink(t.id)}) : null)),
      tw && tw.warning ? el("tr", {class: "warning-row"}, el("td", {colspan: 8, class: "form-error", text: tw.warning})) : null,
    ];
  }

  async function load() {
    try {
      targets = await api("GET", `${API}/targets`);
      const jobs = await api("GET", `${API}/jobs`);
      const live = {};
      for (const job of jobs) for (const t of job.targets || []) if (t.twitch && job.desired === "running") live[t.target_id] = t;
      options(document.getElementById("link-target"));
      const body = document.querySelector("#linked-table tbody");
      body.replaceChildren(...(targets.length ? targets.flatMap((t) => row(t, live[t.id])).filter(Boolean) :
        [el("tr", {}, el("td", {colspan: 8, class: "empty", text: "No target yet."}))]));
      document.getElementById("linked-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
      showError("linked-error", null);
    } catch (err) { showError("linked-error", err); }
  }

  async function unlink(id) {
    try { await api("DELETE", `${API}/targets/${id}/account`); await load(); }
    catch (err) { showError("linked-error", err); }
  }

  document.getElementById("link-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const body = {fill_key: f.get("fill_key") === "on"};
    if (f.get("channel_id")) body.channel_id = f.get("channel_id"); else body.login = (f.get("login") || "").trim();
    document.getElementById("link-result").textContent = "Linking… (a key test takes a few seconds)";
    try {
      const answer = await api("POST", `${API}/targets/${f.get("target_id")}/account`, body);
      const test = answer.key_test;
      document.getElementById("link-result").textContent = test ? `Linked. Key test: ${test.message}` : "Linked; the key was read from Twitch.";
      showError("link-form-error", null);
      await load();
    } catch (err) {
      document.getElementById("link-result").textContent = "";
      showError("link-form-error", err);
    }
  });

  load();
  setInterval(load, 10000);
});
