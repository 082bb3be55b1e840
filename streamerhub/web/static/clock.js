// Setup's time-zone picker starts at the browser's own zone, so most streamers just confirm it.
"use strict";
(() => {
  const pick = document.querySelector("#clock-timezone[data-guess]");
  if (!pick) return;
  const mine = Intl.DateTimeFormat().resolvedOptions().timeZone;
  if (mine && [...pick.options].some((o) => o.value === mine)) pick.value = mine;
})();
