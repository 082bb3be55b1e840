// Charts with uPlot (vendored in static/vendor/uplot, MIT): overview series and a stream's curve.
"use strict";
(() => {
  if (typeof uPlot === "undefined") return;
  // Every colour comes from the page's CSS variables, so light and dark themes style the charts too.
  const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  const palette = () => ({follows: css("--c-follows"), subs: css("--c-subs"), bits: css("--c-bits"),
    avg: css("--c-avg"), peak: css("--c-peak"), up: css("--ok"), restarted: css("--warn"),
    down: css("--bad"), event: css("--accent"), ink: css("--muted"), grid: css("--grid"),
    line: css("--line"), gap: css("--gap")});
  let COLORS = palette();
  const charts = [];  // [plot, target, height, build]: build() mounts it again after a theme change
  const fromZero = (u, min, max) => [0, Math.max(1, max * 1.1)];  // counts start at zero
  // Whole-number ticks: nobody gets 0.4 of a follow.
  const WHOLE = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 1e6];

  function read(id) {
    const node = document.getElementById(id);
    if (!node) return null;
    try { return JSON.parse(node.textContent); } catch (e) { return null; }
  }

  function size(target, height) {
    return {width: Math.max(280, target.clientWidth), height: height || 240};
  }

  // Follows and subs side by side in each bucket (left and right half), not on top of each other.
  function bars(fill, stroke, align) {
    return {paths: uPlot.paths.bars({size: [0.4, 40], align}), fill, stroke, width: 1, points: {show: false}};
  }

  // Axis labels in the streamer's time zone (the page says which), not the browser's.
  function timeValues(fmt) {
    const f = uPlot.fmtDate(fmt);
    return (u, splits) => splits.map((v) => f(zoned(v)));
  }
  let zone = "UTC";
  const zoned = (secs) => uPlot.tzDate(new Date(secs * 1000), zone);

  function mount(target, build) {
    const [opts, data] = build();
    opts.tzDate = zoned;
    const plot = new uPlot({...opts, ...size(target, opts.height)}, data, target);
    charts.push([plot, target, opts.height, build]);
    return plot;
  }

  function bucketFill(color) {  // the bar colour at 35 % opacity
    return color.startsWith("#") && color.length === 7 ? `${color}59` : color;
  }

  // Shade [from, to) ranges (seconds) where capture was missing: gaps are shown as gaps.
  function shade(ranges) {
    return (u) => {
      const ctx = u.ctx;
      ctx.save();
      ctx.fillStyle = COLORS.gap;
      const left = u.bbox.left, right = u.bbox.left + u.bbox.width;
      for (const [a, b] of ranges) {
        const x0 = Math.max(left, u.valToPos(a, "x", true));
        const x1 = Math.min(right, u.valToPos(b, "x", true));
        if (x1 > x0) ctx.fillRect(x0, u.bbox.top, Math.max(1, x1 - x0), u.bbox.height);
      }
      ctx.restore();
    };
  }

  // The missing ranges of the given kinds ("events": EventSub down; "viewers": no samples).
  function gapRanges(series, kinds) {
    return (series.gaps || []).filter((g) => kinds.includes(g[2])).map((g) => [g[0], g[1]]);
  }

  function overview(series) {
    const events = document.getElementById("chart-events");
    const viewers = document.getElementById("chart-viewers");
    if (!series || !events) return;
    zone = series.tz || "UTC";
    const t = series.t;
    // Half a bucket of room at both ends, so the first and last buckets' bars are not cut off.
    const step = t.length > 1 ? t[1] - t[0] : 3600;
    const xRange = (u, min, max) => [min - step * 0.6, max + step * 0.6];
    const timeFmt = {"15min": "{HH}:{mm}", hour: "{HH}:{mm}", day: "{MMM} {D}", week: "{MMM} {D}"}[series.bucket] || "{MMM} {YYYY}";
    const tipFmt = ["15min", "hour"].includes(series.bucket) ? "{YYYY}-{MM}-{DD} {HH}:{mm}" : "{YYYY}-{MM}-{DD}";
    const axis = () => ({stroke: COLORS.ink, grid: {stroke: COLORS.grid}, ticks: {stroke: COLORS.line}});
    const gaps = gapRanges(series, ["events"]);
    legendGaps(events, gaps, "StreamerHub was not receiving events from Twitch (stopped or disconnected), so counts there may be low.");
    mount(events, () => [{
      height: 240,
      scales: {x: {time: true, range: xRange}, y: {range: fromZero}, bits: {range: fromZero}},
      axes: [{...axis(), space: 70, values: timeValues(timeFmt)}, {...axis(), label: "follows · subs", incrs: WHOLE},
             {...axis(), scale: "bits", side: 1, grid: {show: false}, label: "bits", incrs: WHOLE}],
      // Every series counts things, so every one is bars: bits in the middle, thinner.
      series: [{value: tipFmt},
               {label: "Follows", stroke: COLORS.follows, ...bars(bucketFill(COLORS.follows), COLORS.follows, -1)},
               {label: "Subs", stroke: COLORS.subs, ...bars(bucketFill(COLORS.subs), COLORS.subs, 1)},
               {label: "Bits", stroke: COLORS.bits, scale: "bits",
                paths: uPlot.paths.bars({size: [0.15, 12]}), fill: bucketFill(COLORS.bits), width: 1,
                points: {show: false}}],
      hooks: {drawClear: [shade(gaps)]},
    }, [t, series.follows, series.subs, series.bits]]);
    if (!series.avg_viewers.some((v) => v !== null)) {
      viewers.replaceChildren(Object.assign(document.createElement("p"),
        {className: "chart-empty", textContent: "No viewer counts in this period (counts are sampled every minute while live)."}));
      return;
    }
    const viewerGaps = gapRanges(series, ["events", "viewers"]);
    legendGaps(viewers, viewerGaps, "no viewer count was sampled while live (or StreamerHub was not running).");
    // Viewers are a level, so lines; with a point on each bucket so a lone bucket still shows.
    mount(viewers, () => [{
      height: 220,
      scales: {x: {time: true, range: xRange}, y: {range: fromZero}},
      axes: [{...axis(), space: 70, values: timeValues(timeFmt)}, {...axis(), label: "viewers", incrs: WHOLE}],
      series: [{value: tipFmt},
               {label: "Average", stroke: COLORS.avg, width: 2, fill: bucketFill(COLORS.avg).replace(/59$/, "1a"),
                spanGaps: false, points: {size: 5}},
               {label: "Peak", stroke: COLORS.peak, width: 1, dash: [4, 3], spanGaps: false, points: {size: 4}}],
      hooks: {drawClear: [shade(viewerGaps)]},
    }, [t, series.avg_viewers, series.peak_viewers]]);
  }

  function stream(data) {
    const target = document.getElementById("chart-stream");
    if (!data || !target) return;
    zone = data.tz || "UTC";
    const drawMarks = (u) => {
      const ctx = u.ctx;
      const top = u.bbox.top, bottom = u.bbox.top + u.bbox.height;
      const left = u.bbox.left, right = u.bbox.left + u.bbox.width;
      ctx.save();
      ctx.font = `${11 * devicePixelRatio}px system-ui, sans-serif`;
      // Ad breaks: a band as long as the break, its length written in it.
      for (const m of (data.moments || []).filter((m) => m.kind === "ad")) {
        const x0 = Math.max(left, u.valToPos(m.t, "x", true));
        const x1 = Math.min(right, u.valToPos(m.t + Math.max(m.seconds || 0, 1), "x", true));
        if (x1 < left || x0 > right) continue;
        ctx.fillStyle = bucketFill(COLORS.bits);
        ctx.fillRect(x0, top, Math.max(2 * devicePixelRatio, x1 - x0), bottom - top);
        ctx.fillStyle = COLORS.ink;
        ctx.fillText(`ad ${m.seconds || "?"} s`, x0 + 3 * devicePixelRatio, top + 24 * devicePixelRatio);
      }
      // Multistream targets up / restarted / down: dashed lines with the target's name at the foot.
      for (const m of data.markers) {
        const x = u.valToPos(m.t, "x", true);
        if (x < left || x > right) continue;
        ctx.strokeStyle = ctx.fillStyle = COLORS[m.kind] || "#888";
        ctx.setLineDash([6, 4]);
        ctx.lineWidth = 1.5 * devicePixelRatio;
        ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, bottom); ctx.stroke();
        ctx.fillText(m.label, x + 3 * devicePixelRatio, bottom - 14 * devicePixelRatio);
      }
      ctx.setLineDash([]);
      // Raids, hype trains and title changes: solid lines with a short word at the top.
      const MOMENT = {raid: COLORS.down, hype: COLORS.restarted, title: COLORS.follows};
      const WORD = {raid: "raid", hype: "hype", title: "title"};
      for (const m of (data.moments || []).filter((m) => m.kind !== "ad")) {
        const x = u.valToPos(m.t, "x", true);
        ctx.strokeStyle = ctx.fillStyle = MOMENT[m.kind] || COLORS.ink;
        ctx.lineWidth = 2 * devicePixelRatio;
        ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, bottom); ctx.stroke();
        ctx.fillText(WORD[m.kind] || m.kind, x + 3 * devicePixelRatio, top + 11 * devicePixelRatio);
      }
      ctx.fillStyle = COLORS.event;
      for (const e of data.events) {
        const x = u.valToPos(e.t, "x", true);
        ctx.beginPath(); ctx.arc(x, bottom - 6 * devicePixelRatio, 3 * devicePixelRatio, 0, 2 * Math.PI); ctx.fill();
      }
      ctx.restore();
    };
    const t = data.t.length ? data.t : [data.start, data.end];
    const v = data.t.length ? data.viewers : [null, null];
    legendGaps(target, data.gaps || [], "part of this stream was not captured (viewer counts or events missing).");
    mount(target, () => [{
      height: 280,
      scales: {x: {time: true, range: [data.start, data.end]}, y: {range: fromZero}},
      axes: [{stroke: COLORS.ink, grid: {stroke: COLORS.grid}, space: 80, values: timeValues("{HH}:{mm}")},
             {stroke: COLORS.ink, grid: {stroke: COLORS.grid}, label: "viewers", incrs: WHOLE}],
      series: [{value: "{HH}:{mm}:{ss}"},
               {label: "Viewers", stroke: COLORS.avg, width: 2, fill: bucketFill(COLORS.avg).replace(/59$/, "1a"),
                spanGaps: false}],
      hooks: {drawClear: [shade(data.gaps || [])], draw: [drawMarks]},
    }, [t, v]]);
  }

  // A shaded band means "nothing was captured here": say so under the chart, once, only when one shows.
  function legendGaps(target, ranges, what) {
    if (!ranges.length || target.parentNode.querySelector(".gap-legend")) return;
    target.after(SH_el("p", "chart-note gap-legend", [SH_el("span", "legend-gap"), `Shaded: ${what}`]));
  }
  function SH_el(tag, cls, children) {
    const node = document.createElement(tag);
    node.className = cls;
    for (const c of children || []) node.append(c);
    return node;
  }

  window.addEventListener("resize", () => {
    for (const [plot, target, height] of charts) plot.setSize(size(target, height));
  });
  document.addEventListener("sh-theme", () => {
    COLORS = palette();
    const again = charts.splice(0);
    for (const [plot, target, , build] of again) { plot.destroy(); mount(target, build); }
  });

  overview(read("series-data"));
  stream(read("stream-data"));
})();
