// byzerllm live dashboard: polls dashboard/data, keeps a few minutes of samples in
// memory, and draws its own sparklines on <canvas>. No library, nothing fetched from
// elsewhere. Counters are cumulative in Redis: rates are differences between two
// polls, and recent quantiles come from differences of histogram bucket counts.
"use strict";

(function () {
  const POLL_MS = 2000;
  const HISTORY_S = 300; // what the charts show at most
  const MIN_SPAN_S = 60; // a chart's time axis spans at least this
  const RATE_WINDOW_S = 10; // the figures' requests/s and tokens/s
  const QUANTILE_WINDOW_S = 60; // the figures' p50 / p99
  const KEY_STORE = "byzerllm.dashboard.key";
  const STATE_CLASS = {
    ready: "ok",
    deploying: "warn",
    degraded: "warn",
    undeploying: "warn",
    failed: "bad",
    "not deployed": "bad",
  };

  const el = (id) => document.getElementById(id);
  const samples = new Map(); // alias -> [{t, requests, errors, input, output, latency, firstToken}]
  const cards = new Map(); // alias -> card element
  let timer = null;
  let inFlight = false;
  let waitingForKey = false;

  // -- figures ---------------------------------------------------------------------------

  function sum(values) {
    let total = 0;
    for (const v of values) total += v;
    return total;
  }

  // Prometheus' histogram_quantile on non-cumulative counts: linear inside the bucket,
  // the highest finite bound for the +Inf bucket, null with no observation.
  function quantile(bounds, counts, q) {
    const total = sum(counts);
    if (total <= 0) return null;
    const rank = q * total;
    let seen = 0;
    for (let i = 0; i < counts.length; i++) {
      const n = counts[i];
      if (n > 0 && seen + n >= rank) {
        if (i >= bounds.length) return bounds[bounds.length - 1];
        const lower = i > 0 ? bounds[i - 1] : 0;
        return lower + ((bounds[i] - lower) * Math.max(rank - seen, 0)) / n;
      }
      seen += n;
    }
    return bounds[bounds.length - 1];
  }

  function diffCounts(newer, older) {
    return newer.map((n, i) => Math.max(n - (older[i] || 0), 0));
  }

  function sampleOf(time, m) {
    const r = m.requests || {};
    return {
      t: time,
      requests: sum(Object.values(r)),
      errors: (r.error || 0) + (r.timeout || 0),
      input: m.input_tokens,
      output: m.output_tokens,
      latency: m.latency.counts,
      firstToken: m.first_token.counts,
    };
  }

  // The newest sample at least `seconds` older than the last one (or the oldest kept).
  function baseline(list, seconds) {
    const last = list[list.length - 1];
    let base = null;
    for (let i = list.length - 2; i >= 0; i--) {
      base = list[i];
      if (last.t - list[i].t >= seconds) break;
    }
    return base;
  }

  // Rates between two samples; null when the counters went back (the hash was reset).
  function rates(a, b) {
    const dt = b.t - a.t;
    if (dt <= 0 || b.requests < a.requests) return null;
    return {
      requests: (b.requests - a.requests) / dt,
      errors: Math.max(b.errors - a.errors, 0) / dt,
      input: Math.max(b.input - a.input, 0) / dt,
      output: Math.max(b.output - a.output, 0) / dt,
    };
  }

  function windowQuantiles(m, a, b) {
    const lat = diffCounts(b.latency, a.latency);
    const ft = diffCounts(b.firstToken, a.firstToken);
    return {
      lat50: quantile(m.latency.bounds, lat, 0.5),
      lat99: quantile(m.latency.bounds, lat, 0.99),
      ft50: quantile(m.first_token.bounds, ft, 0.5),
      ft99: quantile(m.first_token.bounds, ft, 0.99),
    };
  }

  // -- formatting ------------------------------------------------------------------------

  function seconds(value) {
    if (value === null || value === undefined) return "–";
    if (value < 0.001) return (value * 1000).toFixed(2) + " ms";
    if (value < 1) return (value * 1000).toFixed(value < 0.01 ? 1 : 0) + " ms";
    if (value < 100) return value.toFixed(2) + " s";
    return value.toFixed(0) + " s";
  }

  function rate(value) {
    if (value === null || value === undefined) return "–";
    if (value === 0) return "0";
    if (value < 10) return value.toFixed(2);
    if (value < 1000) return value.toFixed(1);
    return value.toFixed(0);
  }

  function count(value) {
    return Number(value || 0).toLocaleString("en-US");
  }

  function ago(epochSeconds, now) {
    const s = Math.max(now - epochSeconds, 0);
    if (s < 60) return Math.round(s) + " s ago";
    if (s < 3600) return Math.round(s / 60) + " min ago";
    if (s < 86400) return (s / 3600).toFixed(1) + " h ago";
    return (s / 86400).toFixed(1) + " days ago";
  }

  // -- charts ----------------------------------------------------------------------------

  function cssColor(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
  }

  // points: [{t, values: [number|null, ...]}]; one line per value index; y from 0 to max.
  function drawChart(canvas, points, colors, format, now) {
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(canvas.clientWidth, 1);
    const height = Math.max(canvas.clientHeight, 1);
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const ctx = canvas.getContext("2d");
    if (!ctx) return;
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    ctx.strokeStyle = cssColor("--line");
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(0, height - 0.5);
    ctx.lineTo(width, height - 0.5);
    ctx.stroke();

    let max = 0;
    for (const p of points) for (const v of p.values) if (v !== null && v > max) max = v;
    const top = 12; // room for the labels
    // the time axis ends now and spans what is known: one minute at least, HISTORY_S at most
    const first = points.length ? points[0].t : now;
    const span = Math.min(Math.max(now - first, MIN_SPAN_S), HISTORY_S);
    const x = (t) => ((t - (now - span)) / span) * width;
    const y = (v) => (max > 0 ? height - 1 - (v / max) * (height - 1 - top) : height - 1);
    colors.forEach((color, i) => {
      ctx.strokeStyle = cssColor(color);
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      let drawing = false;
      for (const p of points) {
        const v = p.values[i];
        if (v === null || v === undefined) {
          drawing = false;
          continue;
        }
        if (drawing) ctx.lineTo(x(p.t), y(v));
        else ctx.moveTo(x(p.t), y(v));
        drawing = true;
      }
      ctx.stroke();
    });
    ctx.fillStyle = cssColor("--muted");
    ctx.font = "10px system-ui, sans-serif";
    ctx.textBaseline = "top";
    ctx.textAlign = "left";
    ctx.fillText(max > 0 ? "max " + format(max) : "no data yet", 2, 0);
    ctx.textAlign = "right";
    ctx.fillText("last " + (span < 120 ? Math.round(span) + " s" : Math.round(span / 60) + " min"), width - 2, 0);
  }

  // One point per pair of consecutive polls: rates and that interval's quantiles.
  function series(list, m) {
    const out = { rps: [], latency: [], firstToken: [], tokens: [] };
    for (let i = 1; i < list.length; i++) {
      const a = list[i - 1];
      const b = list[i];
      const r = rates(a, b);
      if (!r) continue;
      const q = windowQuantiles(m, a, b);
      out.rps.push({ t: b.t, values: [r.requests, r.errors] });
      out.latency.push({ t: b.t, values: [q.lat50, q.lat99] });
      out.firstToken.push({ t: b.t, values: [q.ft50, q.ft99] });
      out.tokens.push({ t: b.t, values: [r.input, r.output] });
    }
    return out;
  }

  // -- the page --------------------------------------------------------------------------

  function field(card, name) {
    return card.querySelector('[data-field="' + name + '"]');
  }

  function newCard(alias) {
    const card = el("alias-card").content.firstElementChild.cloneNode(true);
    card.dataset.alias = alias;
    field(card, "alias").textContent = alias;
    return card;
  }

  function renderNodes(container, nodes) {
    container.replaceChildren();
    if (!nodes.length) {
      const none = document.createElement("p");
      none.className = "muted";
      none.textContent = "no live worker";
      container.append(none);
      return;
    }
    for (const node of nodes) {
      const row = document.createElement("div");
      row.className = "node";
      row.dataset.host = node.host;
      const host = document.createElement("span");
      host.className = "host";
      host.textContent = node.host;
      const counts = document.createElement("span");
      counts.className = "counts";
      counts.textContent = node.busy + " busy · " + node.idle + " idle";
      const pills = document.createElement("span");
      pills.className = "pills";
      for (const w of node.workers) {
        const pill = document.createElement("span");
        pill.className = "pill" + (!w.ready ? " starting" : w.busy_slots > 0 ? " busy" : "");
        pill.dataset.worker = w.id;
        pill.title =
          w.id + " (pid " + w.pid + (w.gpu_ids ? ", GPUs " + w.gpu_ids : "") + "): " +
          (w.ready ? w.busy_slots + "/" + w.max_concurrency + " slots busy" : "starting") +
          ", " + count(w.total_requests) + " requests";
        pills.append(pill);
      }
      row.append(host, counts, pills);
      container.append(row);
    }
  }

  function renderLastError(p, m, now) {
    p.replaceChildren();
    if (!m.last_error) {
      p.className = "last-error";
      p.textContent = "none";
      return;
    }
    p.className = "last-error bad";
    if (m.last_error_time) {
      const when = document.createElement("time");
      const date = new Date(m.last_error_time * 1000);
      when.dateTime = date.toISOString();
      when.textContent = date.toLocaleString() + " (" + ago(m.last_error_time, now) + ")";
      p.append(when);
    }
    p.append(document.createTextNode(m.last_error));
  }

  function renderAlias(card, view, now) {
    const m = view.metrics;
    const list = samples.get(view.alias);
    const last = list[list.length - 1];

    const state = field(card, "state");
    state.textContent = view.state;
    state.className = "state " + (STATE_CLASS[view.state] || "");
    field(card, "backend").textContent = view.backend;

    const recent = list.length > 1 ? rates(baseline(list, RATE_WINDOW_S), last) : null;
    field(card, "rps").textContent = recent ? rate(recent.requests) : "–";
    field(card, "requests_total").textContent = count(last.requests);
    field(card, "queue_depth").textContent = count(m.queue_depth);
    field(card, "in_flight").textContent = count(m.in_flight);
    field(card, "tokens_rate").textContent = recent
      ? rate(recent.input) + " / " + rate(recent.output)
      : "–";
    field(card, "tokens_total").textContent = count(m.input_tokens) + " / " + count(m.output_tokens);
    field(card, "retries").textContent = count(m.retries);
    field(card, "dead_letters").textContent = count(m.dead_letters);

    const errors = field(card, "errors");
    errors.textContent = count(last.errors) + (recent ? " (" + rate(recent.errors) + "/s)" : "");
    errors.className = last.errors > 0 ? "bad" : "";
    const r = m.requests || {};
    errors.title =
      "error " + count(r.error) + ", timeout " + count(r.timeout) + ", cancelled " + count(r.cancelled);

    // p50 / p99 over the last minute when requests finished in it, else since the start
    const base = list.length > 1 ? baseline(list, QUANTILE_WINDOW_S) : null;
    const windowed = base && last.requests > base.requests ? windowQuantiles(m, base, last) : null;
    const q = windowed || {
      lat50: m.latency.p50,
      lat99: m.latency.p99,
      ft50: m.first_token.p50,
      ft99: m.first_token.p99,
    };
    field(card, "latency").textContent = seconds(q.lat50) + " / " + seconds(q.lat99);
    field(card, "first_token").textContent = seconds(q.ft50) + " / " + seconds(q.ft99);
    field(card, "window").textContent = windowed
      ? "quantiles of the last " + Math.round(last.t - base.t) + " s"
      : "quantiles since start";

    let busy = 0;
    let total = 0;
    for (const node of view.nodes) {
      busy += node.busy;
      total += node.workers.length;
    }
    field(card, "workers_summary").textContent =
      total + " live on " + view.nodes.length + (view.nodes.length === 1 ? " node" : " nodes") +
      " · " + busy + " busy";
    renderNodes(field(card, "nodes"), view.nodes);
    renderLastError(field(card, "last_error"), m, now);

    const s = series(list, m);
    const charts = {};
    for (const canvas of card.querySelectorAll("canvas[data-chart]")) {
      charts[canvas.dataset.chart] = canvas;
    }
    drawChart(charts.rps, s.rps, ["--c0", "--c3"], (v) => rate(v) + "/s", now);
    drawChart(charts.latency, s.latency, ["--c0", "--c1"], seconds, now);
    drawChart(charts.first_token, s.firstToken, ["--c0", "--c1"], seconds, now);
    drawChart(charts.tokens, s.tokens, ["--c0", "--c2"], (v) => rate(v) + "/s", now);
  }

  function render(data) {
    const now = data.time;
    const main = el("aliases");
    const seen = new Set();
    for (const view of data.aliases) {
      seen.add(view.alias);
      let list = samples.get(view.alias);
      if (!list) {
        list = [];
        samples.set(view.alias, list);
      }
      list.push(sampleOf(now, view.metrics));
      while (list.length > 2 && list[0].t < now - HISTORY_S - RATE_WINDOW_S) list.shift();
      let card = cards.get(view.alias);
      if (!card) {
        card = newCard(view.alias);
        cards.set(view.alias, card);
      }
      main.append(card); // in the server's order (by name); moves an existing card
      renderAlias(card, view, now);
    }
    for (const [alias, card] of cards) {
      if (!seen.has(alias)) {
        card.remove();
        cards.delete(alias);
        samples.delete(alias);
      }
    }
    el("empty").hidden = data.aliases.length > 0;
  }

  // -- talking to the gateway ------------------------------------------------------------

  function setStatus(text, isError) {
    const status = el("status");
    status.textContent = text;
    status.className = isError ? "status error" : "status";
  }

  async function errorMessage(response) {
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) return body.error.message;
    } catch (err) {
      // not JSON: the status says enough
    }
    return "HTTP " + response.status;
  }

  function askForKey(message) {
    waitingForKey = true;
    const hadKey = sessionStorage.getItem(KEY_STORE) !== null;
    sessionStorage.removeItem(KEY_STORE);
    el("forget-key").hidden = true;
    for (const card of cards.values()) card.remove(); // nothing shown without a key
    cards.clear();
    samples.clear();
    el("empty").hidden = true;
    el("key-form").hidden = false;
    const error = el("key-error");
    error.hidden = !hadKey;
    error.textContent = hadKey ? message : "";
    setStatus("API key needed", true);
    el("key-input").focus();
  }

  async function poll() {
    if (inFlight) return; // the poll under way schedules the next one
    inFlight = true;
    timer = null;
    let delay = POLL_MS;
    try {
      if (document.hidden) return; // nothing to look at; visibilitychange polls again
      const key = sessionStorage.getItem(KEY_STORE);
      const headers = key ? { Authorization: "Bearer " + key } : {};
      const response = await fetch("dashboard/data", { headers, cache: "no-store" });
      if (response.status === 401) {
        askForKey(await errorMessage(response));
        return;
      }
      if (!response.ok) {
        setStatus(await errorMessage(response) + " (retrying)", true);
        delay = POLL_MS * 2;
        return;
      }
      render(await response.json());
      el("forget-key").hidden = !key;
      setStatus("updated " + new Date().toLocaleTimeString(), false);
    } catch (err) {
      setStatus("the gateway did not answer (" + err.message + "); retrying", true);
      delay = POLL_MS * 2;
    } finally {
      inFlight = false;
      if (!waitingForKey && timer === null) timer = setTimeout(poll, delay);
    }
  }

  function pollNow() {
    if (timer !== null) clearTimeout(timer);
    timer = null;
    poll();
  }

  function start() {
    el("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const key = el("key-input").value.trim();
      if (!key) return;
      sessionStorage.setItem(KEY_STORE, key);
      el("key-input").value = "";
      el("key-form").hidden = true;
      waitingForKey = false;
      setStatus("connecting…", false);
      pollNow();
    });
    el("forget-key").addEventListener("click", () => {
      sessionStorage.removeItem(KEY_STORE);
      pollNow();
    });
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && !waitingForKey) pollNow();
    });
    pollNow();
  }

  start();
})();
