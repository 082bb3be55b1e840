// Charts with uPlot (vendored in static/vendor/uplot, MIT): overview series and a stream's curve.
"use strict";
(() => {
  if (typeof uPlot === "undefined") return;
  const COLORS = {follows: "#0284c7", subs: "#7c3aed", bits: "#d97706", avg: "#15803d", peak: "#86efac",
                  up: "#15803d", restarted: "#d97706", down: "#b91c1c", event: "#7c3aed"};
  const charts = [];

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
    return {paths: uPlot.paths.bars({size: [0.4, 40], align}), fill, stroke, width: 1};
  }

  // Axis labels in the streamer's time zone (the page says which), not the browser's.
  function timeValues(fmt) {
    const f = uPlot.fmtDate(fmt);
    return (u, splits) => splits.map((v) => f(zoned(v)));
  }
  let zone = "UTC";
  const zoned = (secs) => uPlot.tzDate(new Date(secs * 1000), zone);

  function mount(target, opts, data) {
    opts.tzDate = zoned;
    const plot = new uPlot({...opts, ...size(target, opts.height)}, data, target);
    charts.push([plot, target, opts.height]);
    return plot;
  }

  // Shade [from, to) ranges (seconds) where capture was missing: gaps are shown as gaps.
  function shade(ranges) {
    return (u) => {
      const ctx = u.ctx;
      ctx.save();
      ctx.fillStyle = "rgba(185, 28, 28, .08)";
      for (const [a, b] of ranges) {
        const x0 = u.valToPos(a, "x", true), x1 = u.valToPos(b, "x", true);
        ctx.fillRect(x0, u.bbox.top, Math.max(1, x1 - x0), u.bbox.height);
      }
      ctx.restore();
    };
  }

  function gapRanges(series) {
    const out = [];
    series.t.forEach((t, i) => {
      if (series.gap && series.gap[i]) out.push([t, series.t[i + 1] || t + (t - (series.t[i - 1] || t))]);
    });
    return out;
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
    const timeFmt = {hour: "{HH}:{mm}", day: "{MMM} {D}", week: "{MMM} {D}"}[series.bucket] || "{MMM} {YYYY}";
    const tipFmt = series.bucket === "hour" ? "{YYYY}-{MM}-{DD} {HH}:{mm}" : "{YYYY}-{MM}-{DD}";
    const axis = {stroke: "#6b6880", grid: {stroke: "#eeebf5"}, ticks: {stroke: "#e3e0ee"}};
    mount(events, {
      height: 240,
      scales: {x: {time: true, range: xRange}, bits: {auto: true}},
      axes: [{...axis, space: 70, values: timeValues(timeFmt)}, {...axis, label: "follows · subs"},
             {...axis, scale: "bits", side: 1, grid: {show: false}, label: "bits"}],
      series: [{value: tipFmt},
               {label: "Follows", stroke: COLORS.follows, ...bars("rgba(2,132,199,.35)", COLORS.follows, -1)},
               {label: "Subs", stroke: COLORS.subs, ...bars("rgba(124,58,237,.35)", COLORS.subs, 1)},
               {label: "Bits", stroke: COLORS.bits, scale: "bits", width: 2, points: {show: false}}],
      hooks: {drawClear: [shade(gapRanges(series))]},
    }, [t, series.follows, series.subs, series.bits]);
    if (!series.avg_viewers.some((v) => v !== null)) {
      viewers.replaceChildren(Object.assign(document.createElement("p"),
        {className: "chart-empty", textContent: "No viewer counts in this period (counts are sampled every minute while live)."}));
      return;
    }
    mount(viewers, {
      height: 220,
      scales: {x: {time: true, range: xRange}},
      axes: [{...axis, space: 70, values: timeValues(timeFmt)}, {...axis, label: "viewers"}],
      series: [{value: tipFmt},
               {label: "Average", stroke: COLORS.avg, width: 2, fill: "rgba(21,128,61,.10)", spanGaps: false},
               {label: "Peak", stroke: COLORS.peak, width: 1, dash: [4, 3], spanGaps: false}],
      hooks: {drawClear: [shade(gapRanges(series))]},
    }, [t, series.avg_viewers, series.peak_viewers]);
  }

  function stream(data) {
    const target = document.getElementById("chart-stream");
    if (!data || !target) return;
    zone = data.tz || "UTC";
    const drawMarks = (u) => {
      const ctx = u.ctx;
      const top = u.bbox.top, bottom = u.bbox.top + u.bbox.height;
      ctx.save();
      for (const m of data.markers) {
        const x = u.valToPos(m.t, "x", true);
        ctx.strokeStyle = COLORS[m.kind] || "#888";
        ctx.setLineDash([6, 4]);
        ctx.lineWidth = 1.5 * devicePixelRatio;
        ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, bottom); ctx.stroke();
      }
      ctx.setLineDash([]);
      ctx.fillStyle = COLORS.event;
      for (const e of data.events) {
        const x = u.valToPos(e.t, "x", true);
        ctx.beginPath(); ctx.arc(x, bottom - 6 * devicePixelRatio, 3 * devicePixelRatio, 0, 2 * Math.PI); ctx.fill();
      }
      ctx.restore();
    };
    const axis = {stroke: "#6b6880", grid: {stroke: "#eeebf5"}};
    const t = data.t.length ? data.t : [data.start, data.end];
    const v = data.t.length ? data.viewers : [null, null];
    mount(target, {
      height: 280,
      scales: {x: {time: true, range: [data.start, data.end]}},
      axes: [{...axis, values: timeValues("{HH}:{mm}")}, {...axis, label: "viewers"}],
      series: [{value: "{HH}:{mm}:{ss}"},
               {label: "Viewers", stroke: COLORS.avg, width: 2, fill: "rgba(21,128,61,.10)", spanGaps: false}],
      hooks: {drawClear: [shade(data.gaps || [])], draw: [drawMarks]},
    }, [t, v]);
  }

  window.addEventListener("resize", () => {
    for (const [plot, target, height] of charts) plot.setSize(size(target, height));
  });

  overview(read("series-data"));
  stream(read("stream-data"));
})();
