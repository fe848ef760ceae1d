// PrefixScope dashboard: fetches server-rendered panels and the trace view, runs SQL.
// The API token (if the server needs one) is kept in sessionStorage for this tab only.
"use strict";
(function () {
  const TOKEN_KEY = "prefixscope.token";
  const $ = (sel) => document.querySelector(sel);
  const state = { metric: null, cohort: null };

  function headers(extra) {
    const h = Object.assign({ Accept: "text/html, application/json" }, extra || {});
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) h.Authorization = "Bearer " + token;
    return h;
  }

  function setStatus(text) { $("#status").textContent = text; }

  function needToken(show) {
    $("#token-form").hidden = !show && !sessionStorage.getItem(TOKEN_KEY);
    $("#auth-needed").hidden = !show;
  }

  async function api(path, opts) {
    const resp = await fetch(path, Object.assign({}, opts, { headers: headers((opts || {}).headers) }));
    if (resp.status === 401 || resp.status === 403) {
      needToken(true);
      throw new Error("token required");
    }
    return resp;
  }

  function panelsUrl() {
    const params = new URLSearchParams();
    params.set("since", $("#since").value);
    if (state.metric) params.set("metric", state.metric);
    if (state.cohort) params.set("cohort", state.cohort);
    return "/api/v1/dashboard?" + params.toString();
  }

  async function loadPanels() {
    setStatus("loading…");
    try {
      const resp = await api(panelsUrl());
      const html = await resp.text();
      if (!resp.ok) throw new Error(errorText(html, resp.status));
      $("#panels").innerHTML = html;
      needToken(false);
      setStatus("updated " + new Date().toLocaleTimeString());
    } catch (err) {
      setStatus(err.message);
    }
  }

  function errorText(body, status) {
    try {
      const j = JSON.parse(body);
      return (j.error || status) + ": " + (j.message || "");
    } catch (_) {
      return "HTTP " + status;
    }
  }

  async function loadTrace(id) {
    $("#trace-id").value = id;
    const target = $("#trace");
    target.textContent = "loading…";
    try {
      const resp = await api("/api/v1/dashboard/trace/" + encodeURIComponent(id));
      const html = await resp.text();
      if (!resp.ok) { target.innerHTML = ""; target.append(errorBox(errorText(html, resp.status))); return; }
      target.innerHTML = html;
      $("#trace-card").scrollIntoView({ behavior: "smooth", block: "start" });
    } catch (err) {
      target.textContent = err.message;
    }
  }

  function errorBox(text) {
    const div = document.createElement("div");
    div.className = "error";
    div.textContent = text;
    return div;
  }

  async function runSql(ev) {
    ev.preventDefault();
    const box = $("#sql-error");
    const out = $("#sql-result");
    box.hidden = true;
    out.textContent = "";
    $("#sql-meta").textContent = "running…";
    try {
      const resp = await api("/api/v1/sql", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ sql: $("#sql").value }),
      });
      const body = await resp.json();
      if (!resp.ok) {
        let msg = (body.code || body.error) + ": " + body.message;
        if (typeof body.position === "number") {
          const sql = $("#sql").value;
          msg += "\n" + sql.slice(Math.max(0, body.position - 40), body.position) + " ⟨here⟩ " + sql.slice(body.position, body.position + 40);
        }
        box.textContent = msg;
        box.hidden = false;
        $("#sql-meta").textContent = "";
        return;
      }
      out.append(resultTable(body));
      $("#sql-meta").textContent = body.rows.length + " row(s)" + (body.truncated ? " (truncated)" : "") + " · " + body.elapsed_ms.toFixed(1) + " ms";
    } catch (err) {
      $("#sql-meta").textContent = err.message;
    }
  }

  function resultTable(body) {
    const table = document.createElement("table");
    const head = table.createTHead().insertRow();
    body.columns.forEach((c, i) => {
      const th = document.createElement("th");
      th.textContent = c;
      th.title = body.types[i] || "";
      head.append(th);
    });
    const tbody = table.createTBody();
    body.rows.forEach((row) => {
      const tr = tbody.insertRow();
      row.forEach((v) => {
        tr.insertCell().textContent = v === null ? "NULL" : (typeof v === "object" ? JSON.stringify(v) : String(v));
      });
    });
    return table;
  }

  async function ack(id, button) {
    button.disabled = true;
    try {
      const resp = await api("/api/v1/alerts/" + encodeURIComponent(id) + "/ack", { method: "POST" });
      if (!resp.ok) throw new Error(errorText(await resp.text(), resp.status));
      await loadPanels();
    } catch (err) {
      button.disabled = false;
      setStatus(err.message);
    }
  }

  async function runDetection(button) {
    button.disabled = true;
    setStatus("running detection…");
    try {
      const resp = await api("/api/v1/regressions/run", { method: "POST" });
      if (!resp.ok) throw new Error(errorText(await resp.text(), resp.status));
      await loadPanels();
    } catch (err) {
      button.disabled = false;
      setStatus(err.message);
    }
  }

  function traceFromHash() {
    const m = /^#trace=([0-9a-fA-F]{32})$/.exec(location.hash);
    if (m) loadTrace(m[1]);
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (sessionStorage.getItem(TOKEN_KEY)) $("#token-form").hidden = false;
    $("#refresh").addEventListener("click", loadPanels);
    $("#since").addEventListener("change", loadPanels);
    $("#token-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const token = $("#token").value.trim();
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      $("#token").value = "";
      loadPanels();
      traceFromHash();
    });
    $("#forget-token").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); loadPanels(); });
    $("#trace-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      location.hash = "trace=" + $("#trace-id").value.trim();
    });
    $("#sql-form").addEventListener("submit", runSql);
    document.addEventListener("click", (ev) => {
      const target = ev.target instanceof Element ? ev.target : null;
      if (!target) return;
      const ackBtn = target.closest("button[data-ack]");
      if (ackBtn) { ack(ackBtn.dataset.ack, ackBtn); return; }
      if (target.closest("#run-detection")) { runDetection(target.closest("#run-detection")); }
    });
    document.addEventListener("change", (ev) => {
      const sel = ev.target instanceof Element ? ev.target.closest("select[data-param]") : null;
      if (!sel) return;
      state[sel.dataset.param] = sel.value;
      loadPanels();
    });
    window.addEventListener("hashchange", traceFromHash);
    loadPanels();
    traceFromHash();
  });
})();
