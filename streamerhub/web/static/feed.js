// The live event feed: Server-Sent Events from /feed/events. EventSource reconnects by itself and
// sends Last-Event-ID, so the server replays exactly what was missed.
"use strict";
(() => {
  const list = document.getElementById("feed");
  if (!list) return;
  const status = document.getElementById("feed-status");
  const empty = document.getElementById("feed-empty");
  const filter = document.getElementById("feed-filter");
  const MAX_ITEMS = 200;
  let source = null;

  function setStatus(text, cls) {
    status.textContent = text;
    status.className = `feed-status ${cls || ""}`;
  }

  function types() {
    const boxes = [...filter.querySelectorAll("input[type=checkbox]")];
    const on = boxes.filter((b) => b.checked).map((b) => b.value);
    return on.length === boxes.length ? null : on;
  }

  // local_time is "YYYY-MM-DD HH:MM:SS" in the streamer's zone: today shows the time only.
  const today = () => new Date().toLocaleDateString("sv-SE", {timeZone: list.dataset.tz || "UTC"});
  function item(ev, fresh) {
    const shown = ev.local_time.slice(0, 10) === today() ? ev.local_time.slice(11) : ev.local_time.slice(5, 16);
    const li = SH.el("li", {class: `ev-${ev.group}${fresh ? " fresh" : ""}`, dataset: {id: ev.id, type: ev.type}},
      SH.el("time", {datetime: ev.occurred_at, title: ev.local_time, text: shown}),
      SH.el("span", {class: `tag tag-${ev.group}`, text: ev.group}),
      SH.el("span", {class: "text", text: ev.text}));
    return li;
  }

  function connect() {
    if (source) source.close();
    list.replaceChildren();
    empty.hidden = false;
    const chosen = types();
    const params = new URLSearchParams();
    if (chosen) params.set("types", chosen.join(",") || "none");
    if (list.dataset.channel) params.set("channel", list.dataset.channel);
    source = new EventSource(`/feed/events?${params}`);
    let opened = false;
    source.addEventListener("open", () => { opened = true; setStatus("live", "live"); });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) setStatus("disconnected: reload the page to sign in again", "down");
      else setStatus(opened ? "reconnecting…" : "connecting…", "down");
    });
    source.addEventListener("reload", () => connect());
    source.addEventListener("twitch", (msg) => {
      const ev = JSON.parse(msg.data);
      empty.hidden = true;
      list.prepend(item(ev, !ev.backlog));
      while (list.children.length > MAX_ITEMS) list.lastElementChild.remove();
    });
  }

  filter.addEventListener("change", connect);
  window.addEventListener("pagehide", () => source && source.close());
  connect();
})();
