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
      SH.el("span", {class: `tag tag-${ev.group}`, title: ev.type, text: ev.label || ev.type}),
      SH.el("span", {class: "text", text: ev.text}));
    if (ev.gift_total) {
      li.classList.add("gift-bomb");
      li.dataset.channel = ev.channel_id;
      li.dataset.left = ev.gift_total;
      li.querySelector(".text").append(SH.el("details", {class: "recipients"},
        SH.el("summary", {text: "0 recipients"}), SH.el("ul")));
    }
    return li;
  }

  // A gift bomb is one row naming the gifter; its gifted subs (which Twitch sends within seconds,
  // before or after the bomb) go into that row's list instead of flooding the feed.
  const WINDOW = 120 * 1000;
  const near = (a, b) => Math.abs(Date.parse(a) - Date.parse(b)) <= WINDOW;
  function addRecipient(bomb, ev) {
    const list = bomb.querySelector(".recipients ul");
    list.append(SH.el("li", {text: ev.who}));
    bomb.dataset.left = Number(bomb.dataset.left) - 1;
    const n = list.children.length;
    bomb.querySelector(".recipients summary").textContent = `${n} recipient${n === 1 ? "" : "s"}`;
  }
  function bombFor(ev) {
    return [...list.querySelectorAll("li.gift-bomb")].find((b) => b.dataset.channel === ev.channel_id &&
      Number(b.dataset.left) > 0 && near(b.querySelector("time").getAttribute("datetime"), ev.occurred_at));
  }
  function show(ev) {
    if (ev.gifted) {
      const bomb = bombFor(ev);
      if (bomb) { addRecipient(bomb, ev); return; }
    }
    const li = item(ev, !ev.backlog);
    li._event = ev;
    list.prepend(li);
    if (ev.gift_total) {
      for (const other of [...list.querySelectorAll("li")]) {
        const o = other._event;
        if (o && o.gifted && o.channel_id === ev.channel_id && near(o.occurred_at, ev.occurred_at) &&
            Number(li.dataset.left) > 0) { addRecipient(li, o); other.remove(); }
      }
    }
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
      show(ev);
      if (!ev.backlog) document.dispatchEvent(new CustomEvent("sh-event"));  // cards refresh soon
      while (list.children.length > MAX_ITEMS) list.lastElementChild.remove();
    });
  }

  filter.addEventListener("change", connect);
  window.addEventListener("pagehide", () => source && source.close());
  connect();
})();
