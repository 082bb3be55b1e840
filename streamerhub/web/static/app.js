// StreamerHub: helpers shared by every page (no framework, no build step).
"use strict";
const SH = (() => {
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

  // fetch JSON from our own API; throws an Error whose message is the server's words.
  async function api(method, path, body) {
    const opts = {method, credentials: "same-origin",
                  headers: {"X-CSRF-Token": csrf(), "Accept": "application/json",
                            "X-Requested-With": "fetch"}};
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(path, opts);
    } catch (err) {
      throw new Error("StreamerHub cannot be reached: is the daemon running?");
    }
    return parse(resp);
  }

  async function parse(resp) {
    const text = await resp.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
    if (!resp.ok) {
      const msg = (data && data.error) || text.slice(0, 300) || resp.statusText;
      const err = new Error(resp.status === 401 ? "Your session ended: reload the page and sign in." : msg);
      err.status = resp.status;
      throw err;
    }
    return data;
  }

  function showError(id, err) {
    const el = document.getElementById(id);
    if (!el) return;
    if (!err) { el.hidden = true; el.textContent = ""; return; }
    el.textContent = err.message || String(err);
    el.hidden = false;
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(node.dataset, v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function duration(s) {
    if (s === null || s === undefined) return "—";
    s = Math.max(0, Math.round(s));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    if (h) return `${h} h ${String(m).padStart(2, "0")} min`;
    return m ? `${m} min ${String(sec).padStart(2, "0")} s` : `${sec} s`;
  }

  function bytes(n) {
    if (n === null || n === undefined) return "—";
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
  }

  function number(n, digits) {
    if (n === null || n === undefined) return "—";
    return Number(n).toLocaleString(undefined, {maximumFractionDigits: digits || 0});
  }

  // Forms marked .confirm ask first (e.g. disconnect, remove user).
  document.addEventListener("submit", (ev) => {
    const form = ev.target;
    if (form.classList && form.classList.contains("confirm") && !window.confirm(form.dataset.confirm || "Sure?")) {
      ev.preventDefault();
    }
  });

  // <select class="autosubmit"> applies its form at once (channel selectors).
  document.addEventListener("change", (ev) => {
    if (ev.target.classList && ev.target.classList.contains("autosubmit")) ev.target.form.submit();
  });

  return {csrf, api, parse, showError, el, duration, bytes, number};
})();
