// Overview: refresh the stat cards every 30 s while the page is visible, and soon after each live event.
"use strict";
(() => {
  const cards = document.getElementById("cards");
  if (!cards) return;
  const fmt = (v, digits) => v === null || v === undefined ? "—" :
    Number(v).toLocaleString("en-US", {minimumFractionDigits: digits, maximumFractionDigits: digits});

  async function refresh() {
    let data;
    try { data = await SH.api("GET", `/overview/data${location.search}`); }
    catch (err) { return; }  // a missed refresh is harmless: the next one catches up
    for (const c of data.cards || []) {
      const card = cards.querySelector(`[data-card="${c.key}"]`);
      if (!card) continue;
      card.querySelector(".value").textContent = fmt(c.value, c.digits);
      const sub = card.querySelector(".sub");
      sub.replaceChildren(c.sub);
      if (c.delta !== null && c.delta !== undefined) {
        sub.append(" ", SH.el("span", {class: `delta ${c.delta >= 0 ? "up" : "down"}`,
                                       text: `${c.delta >= 0 ? "+" : ""}${Math.round(c.delta)} %`}));
      }
    }
  }
  setInterval(() => { if (!document.hidden) refresh(); }, 30000);
  // While events arrive live, the cards follow within a couple of seconds (one refresh per burst).
  let soon = null;
  document.addEventListener("sh-event", () => {
    if (soon) return;
    soon = setTimeout(() => { soon = null; refresh(); }, 1500);
  });
})();
