// PrefixScope variant and alert pages: fetch JSON from /api/v1 (with the tab's token when the
// server needs one) and draw it with plotly.js, served by this server (no CDN). The plotted
// values are kept on each chart element (el.data) exactly as the API returned them.
(function () {
  "use strict";
  const TOKEN_KEY = "prefixscope.token";
  const $ = (s) => document.querySelector(s);
  const PAGE = document.body.dataset.page;
  const ID = document.body.dataset.id;
  const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"];
  const BASE_COLOR = "#7f7f7f";
  // no mode bar: its styles would be injected inline (blocked by the CSP); drag zooms, a
  // double click resets, hover shows the values
  const CONFIG = { displaylogo: false, displayModeBar: false, responsive: true };

  // plotly.js renders a small HTML subset (<a href>, <b>, <br>, <span style>, ...) in trace
  // names, titles, annotations and category labels. Every user-supplied string goes in as text:
  // its markup as entities, which plotly shows as the characters they stand for.
  function esc(s) {
    return String(s === null || s === undefined ? "" : s)
      .replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  function headers() {
    const h = { Accept: "application/json" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) h.Authorization = "Bearer " + token;
    return h;
  }

  async function api(path, opts) {
    const resp = await fetch(path, Object.assign({ headers: headers() }, opts || {}));
    if (resp.status === 401 || resp.status === 403) {
      $("#auth-needed").hidden = false;
      $("#token-form").hidden = false;
      throw new Error("token required");
    }
    if (resp.status === 404) {
      const body = await resp.json().catch(() => ({}));
      const nf = $("#not-found");
      nf.textContent = body.message || "Not found.";
      nf.hidden = false;
      throw new Error("not found");
    }
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    return resp.json();
  }

  function colorFor(series, i) {
    return series.prefix_id === "base" ? BASE_COLOR : COLORS[i % COLORS.length];
  }

  // Times from the API are UTC without an offset ("2026-12-06T07:00:00"): plotly shows them
  // as written; arithmetic parses them as UTC and writes them back the same way.
  function ms(t) { return Date.parse(/[zZ]|[+-]\d\d:\d\d$/.test(t) ? t : t + "Z"); }
  function iso(v) { return new Date(v).toISOString().slice(0, 19); }

  // The x range of a set of series: from the start of the first bucket to the end of the
  // last one (a single bucket is a bucket wide, not a fraction of a millisecond).
  function xRange(seriesList, bucketSeconds) {
    const times = [];
    for (const s of seriesList) {
      for (const t of s.t || []) times.push(ms(t));
      for (const e of Object.values(s.scores || {})) for (const t of e.t || []) times.push(ms(t));
    }
    if (!times.length) return null;
    const b = 1000 * (bucketSeconds || 60);
    return [iso(Math.min(...times)), iso(Math.max(...times) + b)];
  }

  // Each point stands for its bucket: x is the bucket's start (as the API returns it),
  // drawn in the bucket's middle, so a marker inside a bucket sits beside its point.
  function inBuckets(traces, bucketSeconds) {
    if (!bucketSeconds) return traces;
    for (const t of traces) {
      if (t.type === "scatter") Object.assign(t, { xperiod: 1000 * bucketSeconds, xperiodalignment: "middle" });
    }
    return traces;
  }

  let XRANGE = null; // the page's x range (every chart of a page shares it)
  let XBUCKET = 0; // and its bucket, seconds

  // Rollout markers inside the x range (one outside it would stretch the axis away from the
  // data); a label that would overlap its left neighbour goes one row up.
  const LABEL_ROW_PX = 13;
  function markers(rollouts, range) {
    const shapes = [];
    const notes = [];
    range = range === undefined ? XRANGE : range;
    const lo = range ? ms(range[0]) : -Infinity;
    const hi = range ? ms(range[1]) : Infinity;
    const minGap = range ? (hi - lo) * 0.14 : 0;
    const rowEnds = [];
    const inRange = (rollouts || []).filter((m) => ms(m.time) >= lo && ms(m.time) <= hi)
      .sort((x, y) => ms(x.time) - ms(y.time));
    for (const m of inRange) {
      const t = ms(m.time);
      let row = rowEnds.findIndex((end) => t - end >= minGap);
      if (row < 0) row = rowEnds.length < 3 ? rowEnds.length : rowEnds.indexOf(Math.min(...rowEnds));
      rowEnds[row] = t;
      shapes.push({
        type: "line", xref: "x", yref: "paper", x0: m.time, x1: m.time, y0: 0, y1: 1,
        line: { color: m.source === "first_seen" ? "#555" : "#aaa", width: 1, dash: "dot" },
      });
      notes.push({
        // a label runs right of its line, or left of it in the range's last fifth (where it
        // would run off the chart)
        x: m.time, xref: "x", y: 1, yref: "paper", yanchor: "bottom",
        xanchor: range && t > lo + 0.8 * (hi - lo) ? "right" : "left",
        showarrow: false, yshift: row * LABEL_ROW_PX,
        text: esc((m.version ? "@" + m.version : "") + (m.source === "first_seen" ? " rollout" : " " + m.source)),
        font: { size: 10, color: "#555" },
      });
    }
    return { shapes, annotations: notes, rows: rowEnds.length };
  }

  // A chart's card, created before any chart is drawn: plotly sizes a chart to its element
  // when it draws it, and a card added later re-flows the grid (the first chart, drawn alone
  // at full width, was clipped once its neighbours arrived).
  function card(id, title) {
    let el = document.getElementById(id);
    if (el) return el;
    const section = document.createElement("section");
    section.className = "card chart-card";
    const h = document.createElement("h2");
    h.textContent = title;
    el = document.createElement("div");
    el.id = id;
    el.className = "chart";
    section.append(h, el);
    $("#charts").append(section);
    return el;
  }

  function hasData(traces) {
    return traces.some((t) => Array.from(t.y || []).some((v) => v !== null && v !== undefined));
  }

  // A chart with no values is a note, not empty axes: the element keeps an empty data list.
  function noData(el, text) {
    if (el.classList.contains("js-plotly-plot")) Plotly.purge(el);
    el.textContent = "";
    const p = document.createElement("p");
    p.className = "empty no-data";
    p.textContent = text;
    el.append(p);
    el.data = [];
    el.dataset.empty = "1";
  }

  function chart(id, title, traces, yTitle, rollouts, extraLayout) {
    const el = card(id, title);
    if (!hasData(traces)) {
      noData(el, "No data: no request in this window and filter records " + title.toLowerCase() + ".");
      return el;
    }
    if (el.dataset.empty) { el.textContent = ""; delete el.dataset.empty; }
    inBuckets(traces, XBUCKET);
    const m = markers(rollouts);
    const layout = Object.assign(
      {
        // the legend sits at the card's foot, below the date axis' two tick lines (times,
        // then the date): placed against the plot it covered the second line
        margin: { l: 55, r: 20, t: 12 + LABEL_ROW_PX * Math.max(1, m.rows), b: 96 }, height: 340,
        hovermode: "closest",
        xaxis: XRANGE ? { type: "date", range: XRANGE } : { type: "date" },
        yaxis: { title: { text: yTitle }, rangemode: "tozero" },
        legend: { orientation: "h", yref: "container", y: 0, yanchor: "bottom" },
      },
      { shapes: m.shapes, annotations: m.annotations },
      extraLayout || {}
    );
    Plotly.react(el, traces, layout, CONFIG);
    return el;
  }

  function rateTraces(data, key) {
    return data.series.map((s, i) => ({
      type: "scatter", mode: "lines+markers", name: esc(s.label), x: s.t, y: s[key],
      line: { color: colorFor(s, i) },
      error_y: {
        type: "data", symmetric: false, visible: true, thickness: 1,
        array: s[key].map((v, j) => s[key + "_ci"][j][1] - v),
        arrayminus: s[key].map((v, j) => v - s[key + "_ci"][j][0]),
      },
      customdata: s.t.map((_, j) => [s.n[j], s[key + "_ci"][j][0], s[key + "_ci"][j][1]]),
      hovertemplate: "%{y:.3f} [%{customdata[1]:.3f}, %{customdata[2]:.3f}]<br>n=%{customdata[0]}<extra>%{fullData.name}</extra>",
    }));
  }

  function lineTraces(data, keys, nKey) {
    const out = [];
    data.series.forEach((s, i) => {
      keys.forEach((k, ki) => {
        out.push({
          type: "scatter", mode: "lines+markers", name: esc(s.label + " " + k.split("_").pop()), x: s.t, y: s[k],
          line: { color: colorFor(s, i), dash: ki ? "dot" : "solid" },
          customdata: s[nKey],
          hovertemplate: "%{y:.1f} ms<br>n=%{customdata}<extra>%{fullData.name}</extra>",
        });
      });
    });
    return out;
  }

  const FIXED_CHARTS = [
    ["plot-requests", "Requests per bucket"],
    ["plot-error_rate", "Error rate"],
    ["plot-fallback_rate", "Fallback rate"],
    ["plot-latency", "Latency p50 / p99"],
    ["plot-ttft", "Time to first token p50 / p99"],
    ["plot-thumbs_down_rate", "Thumbs-down rate"],
  ];

  async function loadPrefix() {
    const params = new URLSearchParams();
    params.set("since", $("#since").value);
    if ($("#route").value.trim()) params.set("route", $("#route").value.trim());
    if ($("#cohort").value.trim()) params.append("cohort", $("#cohort").value.trim());
    $("#status").textContent = "loading…";
    const data = await api("/api/v1/prefixes/" + encodeURIComponent(ID) + "/timeseries?" + params);
    document.getElementById("charts").dataset.bucketSeconds = data.bucket_seconds;
    const r = data.rollouts;
    XRANGE = xRange(data.series, data.bucket_seconds);
    XBUCKET = data.bucket_seconds;
    for (const [id, title] of FIXED_CHARTS) card(id, title);
    chart("plot-requests", "Requests per bucket", data.series.map((s, i) => ({
      type: "scatter", mode: "lines+markers", name: esc(s.label), x: s.t, y: s.n,
      line: { color: colorFor(s, i) }, hovertemplate: "n=%{y}<extra>%{fullData.name}</extra>",
    })), "requests", r);
    chart("plot-error_rate", "Error rate", rateTraces(data, "error_rate"), "error rate", r);
    chart("plot-fallback_rate", "Fallback rate", rateTraces(data, "fallback_rate"), "fallback rate", r);
    chart("plot-latency", "Latency p50 / p99", lineTraces(data, ["latency_p50", "latency_p99"], "n"), "ms", r);
    chart("plot-ttft", "Time to first token p50 / p99", lineTraces(data, ["ttft_p50", "ttft_p99"], "ttft_n"), "ms", r);
    chart("plot-thumbs_down_rate", "Thumbs-down rate", rateTraces(data, "thumbs_down_rate"), "thumbs-down rate", r);
    const evaluators = new Set();
    data.series.forEach((s) => Object.keys(s.scores).forEach((n) => evaluators.add(n)));
    for (const name of [...evaluators].sort()) {
      const traces = data.series.filter((s) => s.scores[name]).map((s, i) => {
        const e = s.scores[name];
        return {
          type: "scatter", mode: "lines+markers", name: esc(s.label), x: e.t, y: e.mean,
          line: { color: colorFor(s, i) },
          customdata: e.t.map((_, j) => [e.n[j], e.ci[j][0], e.ci[j][1]]),
          hovertemplate: "%{y:.3f} [%{customdata[1]:.3f}, %{customdata[2]:.3f}]<br>n=%{customdata[0]}<extra>%{fullData.name}</extra>",
        };
      });
      chart("plot-score-" + name.replace(/[^A-Za-z0-9_-]/g, "_"), name + " (mean score)", traces, "score", r, { yaxis: { range: [0, 1] } });
    }
    $("#status").textContent = "bucket " + data.bucket_seconds + " s · " + data.series.length + " series";
  }

  function fmt(v) {
    return v === null || v === undefined ? "n/a" : (Math.abs(v) >= 100 ? v.toFixed(1) : v.toPrecision(3));
  }

  function row(k, v) {
    const tr = document.createElement("tr");
    const th = document.createElement("th");
    th.textContent = k;
    const td = document.createElement("td");
    td.textContent = v;
    tr.append(th, td);
    return tr;
  }

  async function loadAlert() {
    const data = await api("/api/v1/alerts/" + encodeURIComponent(ID) + "/evidence");
    const a = data.alert;
    const ev = data.evidence;
    const head = $("#alert-head");
    head.textContent = "";
    const h = document.createElement("h2");
    const variant = (a.prefix_id || "base") + (a.prefix_version ? "@" + a.prefix_version : "");
    h.textContent = variant + " · " + a.metric + " · " + (a.severity || "") + " · " + a.status;
    const table = document.createElement("table");
    table.className = "attrs";
    const cohort = Object.entries(a.cohort || {}).map(([k, v]) => k + "=" + v).join(", ") || "all traffic";
    [
      ["baseline", a.baseline + " = " + fmt(a.baseline_value) + " (n=" + a.n_baseline + ")"],
      ["value", fmt(a.value) + " (n=" + a.n + ")"],
      ["effect", fmt(a.delta) + " " + interval(a.ci_low, a.ci_high) +
        (ev.effect.scale === "relative" ? " = " + fmt(100 * ev.effect.delta) + " % of the baseline" : "")],
      ["minimum effect", fmt(ev.effect.min_effect)],
      ["p-value / q-value", fmt(a.p_value) + " / " + fmt(a.q_value)],
      ["method", a.method || "n/a"],
      ["evaluation window", (ev.window.since || "start of data") + " → " + (ev.window.until || "now")],
      ["route / cohort", (a.route || "all routes") + " / " + cohort],
    ].forEach(([k, v]) => table.append(row(k, v)));
    head.append(h, table);
    if (a.status === "open") {
      const btn = document.createElement("button");
      btn.id = "ack";
      btn.textContent = "Acknowledge";
      btn.addEventListener("click", async () => {
        btn.disabled = true;
        try {
          const done = await api("/api/v1/alerts/" + encodeURIComponent(ID) + "/ack", { method: "POST" });
          h.textContent = h.textContent.replace(/open$/, done.status);
          btn.remove();
        } catch (e) { btn.disabled = false; }
      });
      head.append(btn);
    }
    const sides = ev.sides;
    const names = { variant: esc(variant), baseline: esc(a.baseline || "base") };
    const colors = { variant: COLORS[1], baseline: BASE_COLOR };
    let traces = [];
    let layout = {};
    const kind = (sides.variant || {}).kind;
    if (kind === "ecdf") {
      traces = ["baseline", "variant"].map((k) => ({
        type: "scatter", mode: "lines", name: names[k] + " (n=" + sides[k].n + ")",
        x: sides[k].x, y: sides[k].p, line: { color: colors[k], shape: "hv" },
        hovertemplate: "%{x:.1f} ms ≤ %{y:.0%}<extra>%{fullData.name}</extra>",
      }));
      layout = { xaxis: { title: { text: "ms" }, type: "log" }, yaxis: { title: { text: "ECDF" }, range: [0, 1] } };
    } else if (kind === "rate") {
      traces = [{
        type: "bar", x: ["baseline", "variant"].map((k) => names[k] + " (n=" + sides[k].n + ")"),
        y: ["baseline", "variant"].map((k) => sides[k].rate),
        marker: { color: [colors.baseline, colors.variant] },
        error_y: {
          type: "data", symmetric: false,
          array: ["baseline", "variant"].map((k) => sides[k].ci[1] - sides[k].rate),
          arrayminus: ["baseline", "variant"].map((k) => sides[k].rate - sides[k].ci[0]),
        },
        hovertemplate: "%{y:.4f}<extra></extra>",
      }];
      layout = { yaxis: { title: { text: esc(ev.label) } } };
    } else if (kind === "histogram") {
      traces = ["baseline", "variant"].map((k) => ({
        type: "bar", name: names[k] + " (n=" + sides[k].n + ", mean " + fmt(sides[k].mean) + ")",
        x: sides[k].edges.slice(0, -1).map((e, j) => (e + sides[k].edges[j + 1]) / 2),
        y: sides[k].counts.map((c) => c / Math.max(1, sides[k].n)), marker: { color: colors[k] }, opacity: 0.7,
        hovertemplate: "%{y:.1%}<extra>%{fullData.name}</extra>",
      }));
      layout = { barmode: "overlay", xaxis: { title: { text: "score" }, range: [0, 1] }, yaxis: { title: { text: "share" } } };
    }
    // legends at the card's foot, clear of the x axis' title and tick lines
    const base = { margin: { l: 55, r: 15, t: 10, b: 80 }, height: 320, legend: { orientation: "h", yref: "container", y: 0, yanchor: "bottom" } };
    Plotly.react("plot-sides", traces, Object.assign({}, base, layout), CONFIG);
    const eff = ev.effect;
    const shapes = [];
    if (eff.min_effect !== null && eff.min_effect !== undefined) {
      const sign = ev.lower_is_better ? 1 : -1;
      shapes.push({ type: "line", x0: sign * eff.min_effect, x1: sign * eff.min_effect, y0: 0, y1: 1, yref: "paper", line: { dash: "dash", color: "#d62728" } });
    }
    shapes.push({ type: "line", x0: 0, x1: 0, y0: 0, y1: 1, yref: "paper", line: { color: "#999" } });
    Plotly.react("plot-effect", [{
      type: "scatter", mode: "markers", x: [eff.delta], y: [esc(a.metric)], marker: { size: 12, color: COLORS[1] },
      error_x: { type: "data", symmetric: false, array: [(eff.ci_high ?? eff.delta) - eff.delta], arrayminus: [eff.delta - (eff.ci_low ?? eff.delta)] },
      hovertemplate: "Δ %{x:.4g}<extra></extra>",
    }], Object.assign({}, base, { height: 200, margin: { l: 110, r: 15, t: 10, b: 45 }, shapes: shapes, xaxis: { title: { text: (eff.scale === "relative" ? "relative effect" : "effect") + " (dashed: minimum effect)" }, tickformat: eff.scale === "relative" ? ".0%" : "" } }), CONFIG);
    const series = data.timeseries;
    if (series) {
      const key = { error_rate: "error_rate", fallback_rate: "fallback_rate", thumbs_down_rate: "thumbs_down_rate" }[a.metric];
      let traces2;
      if (key) traces2 = rateTraces(series, key);
      else if (a.metric.startsWith("latency")) traces2 = lineTraces(series, ["latency_p50", "latency_p99"], "n");
      else if (a.metric.startsWith("ttft")) traces2 = lineTraces(series, ["ttft_p50", "ttft_p99"], "ttft_n");
      else traces2 = series.series.filter((s) => s.scores[a.metric]).map((s, i) => ({
        type: "scatter", mode: "lines+markers", name: esc(s.label), x: s.scores[a.metric].t, y: s.scores[a.metric].mean, line: { color: colorFor(s, i) },
      }));
      const created = { type: "line", x0: a.created_at, x1: a.created_at, y0: 0, y1: 1, yref: "paper", line: { color: "#d62728" } };
      XRANGE = xRange(series.series, series.bucket_seconds);
      inBuckets(traces2, series.bucket_seconds);
      const m = markers(series.rollouts);
      if (!hasData(traces2)) noData(document.getElementById("plot-series"), "No data: no request of this variant in the window of the page's time series.");
      else Plotly.react("plot-series", traces2, Object.assign({}, base, { margin: Object.assign({}, base.margin, { t: 12 + LABEL_ROW_PX * Math.max(1, m.rows), b: 96 }), height: 340, legend: { orientation: "h", yref: "container", y: 0, yanchor: "bottom" }, xaxis: XRANGE ? { type: "date", range: [XRANGE[0], iso(Math.max(ms(XRANGE[1]), ms(a.created_at) + 60000))] } : { type: "date" }, shapes: m.shapes.concat([created]), annotations: m.annotations }), CONFIG);
    }
    await loadSlices(a);
    const list = $("#example-list");
    for (const t of a.example_trace_ids || []) {
      const li = document.createElement("li");
      const link = document.createElement("a");
      link.href = "/#trace=" + t;
      link.className = "mono";
      link.textContent = t;
      li.append(link);
      list.append(li);
    }
  }

  // The alert's slice tree: the whole route ({}), each cohort key, each pair of keys, with n,
  // effect and interval per slice, which were flagged and which one is the cause. The tree is
  // the one detection tests (GET /api/v1/regressions/slices, recomputed over the alert's
  // window); the alert's own evidence (details.slices, as of the run that raised it) marks its
  // rows, and stands alone when the tree cannot be recomputed.
  function sliceKey(cohort) {
    return JSON.stringify(Object.entries(cohort || {}).map(([k, v]) => [k, String(v)]).sort());
  }

  function sliceLabel(cohort) {
    const items = Object.entries(cohort || {}).sort();
    return items.length ? items.map(([k, v]) => k + "=" + v).join(" · ") : "whole route";
  }

  const LEVELS = ["route {}", "key", "pair"];

  // detection's intervals are one-sided (a worsening is the alternative): the open end is ∞
  function interval(lo, hi) {
    const none = (v) => v === null || v === undefined;
    return "[" + (none(lo) ? "−∞" : fmt(lo)) + ", " + (none(hi) ? "+∞" : fmt(hi)) + "]";
  }

  function sliceRow(s, a, evidence) {
    const tr = document.createElement("tr");
    const level = Object.keys(s.cohort || {}).length;
    const isCause = sliceKey(s.cohort) === sliceKey(a.cohort);
    tr.className = "slice level-" + level + (s.flagged ? " flagged" : "") + (isCause ? " cause" : "");
    tr.dataset.slice = sliceKey(s.cohort);
    const cells = [
      [sliceLabel(s.cohort), "slice-name"],
      [LEVELS[Math.min(level, 2)] || "", ""],
      [s.n + " / " + s.n_baseline, "num"],
      [fmt(s.value) + " vs " + fmt(s.baseline_value), "num"],
      [fmt(s.delta) + " " + interval(s.ci_low, s.ci_high), "num effect"],
      [s.q_value === null || s.q_value === undefined ? "n/a" : fmt(s.q_value), "num"],
      [s.flagged === undefined ? (evidence.has(sliceKey(s.cohort)) ? "yes" : "") : (s.flagged ? "yes" : "no"), "flag"],
      [isCause ? "cause (this alert)" : (s.cause ? "named a cause" : (evidence.has(sliceKey(s.cohort)) ? "evidence" : "")), "role"],
    ];
    for (const [text, cls] of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      tr.append(td);
    }
    return tr;
  }

  function sliceTable(slices, a, evidence) {
    const table = document.createElement("table");
    table.className = "grid-table slice-tree";
    const head = document.createElement("tr");
    for (const h of ["slice", "level", "n / n baseline", "value vs baseline", "effect [95% CI]", "q", "flagged", "role"]) {
      const th = document.createElement("th");
      th.textContent = h;
      head.append(th);
    }
    table.append(head);
    for (const s of slices) table.append(sliceRow(s, a, evidence));
    return table;
  }

  async function loadSlices(a) {
    const box = $("#slice-tree");
    if (!box) return;
    const details = a.details || {};
    const evidenceRows = details.slices || [];
    const evidence = new Set(evidenceRows.map((s) => sliceKey(s.cohort)));
    const note = document.createElement("p");
    note.className = "muted small";
    let family = null;
    const q = new URLSearchParams({ prefix_id: a.prefix_id || "base", metric: a.metric });
    if (a.prefix_version) q.set("prefix_version", a.prefix_version);
    if (a.route) q.set("route", a.route);
    const win = details.window || {};
    if (win.since) q.set("since", win.since);
    if (win.until) q.set("until", win.until);
    try {
      const tree = await api("/api/v1/regressions/slices?" + q);
      family = (tree.families || []).find((f) => f.baseline === a.baseline &&
        (details.base_model === undefined || f.base_model === details.base_model)) || null;
    } catch (e) {
      family = null;
    }
    box.textContent = "";
    let slices;
    if (family) {
      slices = family.slices.slice();
      note.textContent = "Every slice detection tested for " + (a.prefix_id || "base") +
        (a.prefix_version ? "@" + a.prefix_version : "") + " on " + (a.route || "all routes") +
        " against " + a.baseline + ", recomputed over the alert's window" +
        (family.family_q !== null && family.family_q !== undefined ? " (family q " + fmt(family.family_q) + ")" : "") +
        ". Flagged: a significant worsening of at least the minimum effect; the cause is the slice the alert names, " +
        "the other flagged slices around it are its evidence.";
    } else {
      slices = evidenceRows.slice();
      note.textContent = "The slices this alert recorded as its evidence when it was raised (the tested tree " +
        "could not be recomputed now: the data may have aged out of the window).";
    }
    if (!slices.some((s) => sliceKey(s.cohort) === sliceKey(a.cohort))) {
      slices.push(Object.assign({ flagged: true }, {
        cohort: a.cohort || {}, n: a.n, n_baseline: a.n_baseline, value: a.value,
        baseline_value: a.baseline_value, delta: a.delta, ci_low: a.ci_low, ci_high: a.ci_high, q_value: a.q_value,
      }));
    }
    const depth = (s) => Object.keys(s.cohort || {}).length;
    slices.sort((x, y) => depth(x) - depth(y) || (y.flagged === true) - (x.flagged === true) ||
      (x.q_value ?? 1) - (y.q_value ?? 1) || sliceLabel(x.cohort).localeCompare(sliceLabel(y.cohort)));
    // unflagged pairs (up to 200) fold away; every flagged slice and every key stays in view
    const shown = slices.filter((s) => depth(s) < 2 || s.flagged || sliceKey(s.cohort) === sliceKey(a.cohort));
    const folded = slices.filter((s) => !shown.includes(s));
    box.append(note, sliceTable(shown, a, evidence));
    if (folded.length) {
      const more = document.createElement("details");
      const sum = document.createElement("summary");
      sum.textContent = folded.length + " more pair slice(s), none flagged";
      more.append(sum, sliceTable(folded, a, evidence));
      box.append(more);
    }
    box.dataset.slices = String(slices.length);
    box.dataset.source = family ? "tree" : "evidence";
  }

  // The dashboard's overview: every variant's p99 latency and error rate over the window.
  async function loadOverview() {
    const since = ($("#since") || {}).value || "7d";
    const list = await fetch("/api/v1/prefixes", { headers: headers() });
    if (!list.ok) return; // app.js shows the token form on a 401
    const ids = (await list.json()).prefixes.map((p) => p.prefix_id).slice(0, 12);
    const all = [];
    let bucket = 60;
    for (const id of ids) {
      const q = new URLSearchParams({ since: since === "all" ? "" : since, base: "false" });
      if (since === "all") q.delete("since");
      const resp = await fetch("/api/v1/prefixes/" + encodeURIComponent(id) + "/timeseries?" + q, { headers: headers() });
      if (resp.ok) {
        const one = await resp.json();
        all.push(...one.series);
        bucket = Math.max(bucket, one.bucket_seconds || 0);
      }
    }
    const data = { series: all };
    const range = xRange(all, bucket);
    const base = {
      margin: { l: 55, r: 15, t: 10, b: 96 }, height: 300,
      legend: { orientation: "h", yref: "container", y: 0, yanchor: "bottom" },
      xaxis: range ? { type: "date", range: range } : { type: "date" },
    };
    Plotly.react("overview-latency", inBuckets(lineTraces(data, ["latency_p99"], "n"), bucket), Object.assign({}, base, { yaxis: { title: { text: "p99 ms" }, rangemode: "tozero" } }), CONFIG);
    Plotly.react("overview-errors", inBuckets(rateTraces(data, "error_rate"), bucket), Object.assign({}, base, { yaxis: { title: { text: "error rate" }, rangemode: "tozero" } }), CONFIG);
    document.getElementById("overview-card").dataset.loaded = String(all.length);
  }

  function load() {
    if (PAGE === "index") {
      loadOverview().catch(() => {});
      return;
    }
    const run = PAGE === "prefix" ? loadPrefix : loadAlert;
    run().then(() => { $("#auth-needed").hidden = true; document.body.dataset.loaded = "1"; })
      .catch((e) => { const st = $("#status"); if (st) st.textContent = e.message; document.body.dataset.loaded = "error"; });
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (PAGE === "index") {
      // the dashboard's own script owns the token form and the window selector
      for (const sel of ["#since", "#refresh"]) {
        const el = $(sel);
        if (el) el.addEventListener(sel === "#since" ? "change" : "click", load);
      }
      const form = $("#token-form");
      if (form) form.addEventListener("submit", () => setTimeout(load, 100));
      load();
      return;
    }
    $("#token-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const token = $("#token").value.trim();
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      $("#token").value = "";
      load();
    });
    const filters = $("#filters");
    if (filters) filters.addEventListener("submit", (ev) => { ev.preventDefault(); load(); });
    load();
  });
})();
