// Light or dark: follows the system unless the streamer chose with the header toggle (kept in this
// browser only). Loaded in <head>, not deferred, so a dark page never flashes white first.
"use strict";
(() => {
  const KEY = "streamerhub-theme";
  const ORDER = ["auto", "dark", "light"];
  const NAMES = {auto: "Theme: system", dark: "Theme: dark", light: "Theme: light"};
  const root = document.documentElement;
  const stored = () => {
    try { return ORDER.includes(localStorage.getItem(KEY)) ? localStorage.getItem(KEY) : "auto"; }
    catch (e) { return "auto"; }  // storage refused (private mode): follow the system
  };

  function apply(choice) {
    if (choice === "auto") root.removeAttribute("data-theme");
    else root.setAttribute("data-theme", choice);
    const button = document.getElementById("theme-toggle");
    if (button) {
      button.textContent = NAMES[choice];
      button.setAttribute("aria-label", `${NAMES[choice]}. Press to change.`);
    }
    document.dispatchEvent(new CustomEvent("sh-theme"));  // charts redraw in the new colours
  }

  apply(stored());
  document.addEventListener("DOMContentLoaded", () => {
    const button = document.getElementById("theme-toggle");
    if (!button) return;
    apply(stored());
    button.hidden = false;
    button.addEventListener("click", () => {
      const next = ORDER[(ORDER.indexOf(stored()) + 1) % ORDER.length];
      try { localStorage.setItem(KEY, next); } catch (e) { /* applies to this page only */ }
      apply(next);
    });
  });
  window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
    if (stored() === "auto") apply("auto");
  });
})();
