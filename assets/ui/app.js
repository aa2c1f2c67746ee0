// The dashboard: a jobs table, a job page and a compare view (runs picked
// in the table, or a sweep, overlaid), kept live by the daemon's
// Server-Sent Events. Hand-written, no dependencies; served from the binary.
"use strict";

const API = "/api/v1/training";

// A `?token=` that opened the page is in the cookie now (the server set
// it): take it out of the address bar, history and bookmarks at once.
(() => {
  const url = new URL(location.href);
  if (url.searchParams.has("token")) {
    url.searchParams.delete("token");
    history.replaceState(history.state, "", url.pathname + url.search + url.hash);
  }
})();
const TERMINAL = new Set(["completed", "failed", "cancelled"]);
// Most useful first (the CLI's order, src/cli/metrics.rs).
const PRIORITY = ["loss", "val_loss", "accuracy", "val_accuracy", "mAP50-95", "mAP50", "mAP",
  "precision", "recall", "f1", "lr"];
const MAX_SERIES = 4000; // points per chart before it is thinned in place

const $ = (sel, root = document) => root.querySelector(sel);
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

async function api(path) {
  // Paths outside the jobs API (`/api/v1/sweeps/…`) are given whole.
  const r = await fetch(path.startsWith("/api/") ? path : API + path, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (r.status === 401) { location.reload(); throw new Error("not signed in"); }
  if (!r.ok) throw Object.assign(new Error(`${r.status} ${r.statusText}`), { status: r.status });
  return r;
}

// Who is signed in (`/api/v1/whoami`): shown in the header, and it decides
// where the cancel button appears (admins: every job; members: their own).
let me = null;

async function loadMe() {
  try {
    const r = await fetch("/api/v1/whoami", { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (r.ok) me = await r.json();
  } catch (_) { /* an old server: no users, everyone may cancel */ }
  const who = $("#who");
  if (!me || !me.user) return;
  who.append(el("span", { id: "signed-in", text: `${me.user} (${me.role})` }));
  if (me.auth_required) {
    const out = el("form", { method: "post", action: "/ui/logout", class: "logout" },
      el("button", { type: "submit", text: "Sign out" }));
    who.append(out);
  }
}

function mayCancel(job) {
  return !me || me.role === "admin" || me.user === job.user_id;
}

function setConn(state, text) {
  const c = $("#conn");
  c.className = "conn " + state;
  c.textContent = text;
}

// Opens an EventSource and reflects its state in the header.
function stream(path) {
  const es = new EventSource(API + path);
  es.onopen = () => setConn("live", "live");
  es.onerror = () => { if (es.readyState !== EventSource.CLOSED) setConn("down", "reconnecting…"); };
  return es;
}

function on(es, name, fn) {
  es.addEventListener(name, (e) => fn(JSON.parse(e.data)));
}

const pct = (p) => `${Math.round(Math.max(0, Math.min(1, p)) * 100)}%`;
function fmt(v) {
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e6) ? v.toExponential(3) : String(+v.toFixed(4));
}
function ago(t) {
  const s = Math.max(0, (Date.now() - Date.parse(t)) / 1000);
  if (s < 2) return "just now";
  if (s < 60) return `${Math.floor(s)}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}
function duration(secs) {
  secs = Math.max(0, Math.round(secs));
  if (secs < 60) return `${secs}s`;
  if (secs < 3600) return `${Math.floor(secs / 60)}m ${String(secs % 60).padStart(2, "0")}s`;
  return `${Math.floor(secs / 3600)}h ${String(Math.floor((secs % 3600) / 60)).padStart(2, "0")}m`;
}
// -1: lower is better (losses), 1: higher is better (scores), 0: unknown (as the CLI guesses).
function direction(key) {
  if (/loss|err|perplexity|wer|cer/i.test(key)) return -1;
  if (/acc|map|precision|recall|f1|iou|dice|auc|score|bleu/i.test(key)) return 1;
  return 0;
}
// Well-known metrics first, then other losses, other scores, the rest (as the CLI orders them).
function rank(keys) {
  const cls = (k) => {
    const i = PRIORITY.indexOf(k);
    return i >= 0 ? i : PRIORITY.length + [0, 2, 1][direction(k) + 1];
  };
  return [...keys].sort((a, b) => cls(a) - cls(b) || (a < b ? -1 : a > b ? 1 : 0));
}
const metricKeys = (m) => Object.keys(m.metrics || {}).filter((k) => k !== "epoch" && k !== "step");
function summary(m, n = 2) {
  return rank(metricKeys(m)).slice(0, n).map((k) => `${k} ${fmt(m.metrics[k])}`).join(" · ");
}
function statusBadge(s) { return el("span", { class: `status s-${s}`, text: s }); }
// "#42"; the full id for a server that predates job numbers.
const jobNumber = (j) => (j.number > 0 ? `#${j.number}` : j.id);
function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return i ? `${n.toFixed(n < 10 ? 2 : 1)} ${units[i]}` : `${n} B`;
}
// Runners record a trainer killed by a signal as the negated signal number (as the CLI says it).
const SIGNALS = { 1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 6: "SIGABRT", 7: "SIGBUS", 8: "SIGFPE",
  9: "SIGKILL", 11: "SIGSEGV", 13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM" };
function exitText(code) {
  if (code >= 0) return `exit code ${code}`;
  return `killed by ${SIGNALS[-code] || `signal ${-code}`}`;
}
// Each path segment percent-encoded, the slashes kept.
const encodePath = (p) => p.split("/").map(encodeURIComponent).join("/");
function progressBar(p, big) {
  const fill = el("div");
  fill.style.width = pct(p);
  return el("span", { class: "progress" }, el("div", { class: big ? "bar big" : "bar" }, fill),
    el("span", { class: "pct", text: pct(p) }));
}

// ---------------------------------------------------------------- jobs table

async function jobsPage(root) {
  document.title = "platform · jobs";
  const tbody = el("tbody");
  // Runs picked for the compare view (kept across a row's re-render).
  const picked = new Set();
  const compare = el("button", { type: "button", id: "compare", class: "plain", text: "Compare selected" });
  compare.disabled = true;
  compare.addEventListener("click", () => { location.href = `/ui/compare?jobs=${[...picked].join(",")}`; });
  root.replaceChildren(el("div", { class: "head" }, el("h1", { text: "Jobs" }), compare),
    el("table", { class: "jobs", id: "jobs" },
      el("thead", {}, el("tr", {}, ...["", "ID", "Status", "Progress", "Latest metrics", "Message", "Model",
        "Framework", "User", "Queue", "Priority", "Created"].map((h) => el("th", { text: h })))),
      tbody));
  const rows = new Map();

  function render(job) {
    let tr = rows.get(job.id);
    if (!tr) {
      tr = el("tr", { "data-job-id": job.id });
      rows.set(job.id, tr);
      // Newest first: a job created now goes on top.
      const before = [...tbody.children].find((r) => r.dataset.created < job.created_at);
      tbody.insertBefore(tr, before || null);
    }
    tr.dataset.created = job.created_at;
    tr.dataset.status = job.status;
    const latest = tr.querySelector(".latest")?.textContent || "";
    const pick = el("input", { type: "checkbox", class: "pick", title: "compare" });
    pick.checked = picked.has(job.id);
    pick.addEventListener("change", () => {
      if (pick.checked) picked.add(job.id); else picked.delete(job.id);
      compare.disabled = picked.size < 2;
    });
    tr.replaceChildren(
      el("td", {}, pick),
      el("td", { class: "mono" }, el("a", { href: `/ui/jobs/${job.id}`, title: job.id, text: jobNumber(job) })),
      el("td", {}, statusBadge(job.status), ...conditions(job)),
      el("td", {}, progressBar(job.progress)),
      el("td", { class: "latest mono", text: latest }),
      el("td", { class: "msg", text: job.error ? job.error.split("\n")[0] : job.message || "" }),
      el("td", { text: job.model_name }),
      el("td", { text: job.framework }),
      el("td", { text: job.user_id }),
      el("td", { class: "queue", text: job.queue || "default" }),
      el("td", { class: "priority num", text: String(job.priority ?? 50) }),
      el("td", { class: "ago", "data-t": job.created_at, text: ago(job.created_at) }));
  }
  // What the status alone does not say: a retry's attempt, a silent trainer.
  function conditions(job) {
    const out = [];
    if (job.attempt > 1) out.push(el("span", { class: "muted attempt", text: ` attempt ${job.attempt}` }));
    if (job.stalled_at) out.push(el("span", { class: "status stalled", text: "stalled", title: `silent since before ${ago(job.stalled_at)}` }));
    return out;
  }
  function latest(m) {
    const cell = rows.get(m.job_id)?.querySelector(".latest");
    if (cell) cell.textContent = summary(m);
  }

  // Subscribe first so no change between the list and the stream is lost.
  const es = stream("/events");
  on(es, "job", render);
  on(es, "metric", latest);
  const jobs = await (await api("/jobs?limit=100")).json();
  for (const j of jobs) if (!rows.has(j.id)) render(j);
  if (!jobs.length) tbody.append(el("tr", {}, el("td", { colspan: 12, class: "muted", text: "No jobs yet: platform job create …" })));
  // Latest point of the most recent jobs (the stream brings newer ones).
  await Promise.all(jobs.slice(0, 20).map(async (j) => {
    const [m] = await (await api(`/jobs/${j.id}/metrics?limit=1`)).json();
    const cell = rows.get(j.id)?.querySelector(".latest");
    if (m && cell && !cell.textContent) cell.textContent = summary(m);
  }));
  setInterval(() => document.querySelectorAll("td.ago").forEach((td) => { td.textContent = ago(td.dataset.t); }), 10000);
}

// ------------------------------------------------------------------ job page

// Keeps at most `max` points: first, last and each bucket's extremes (as the server does).
function thin(points, max) {
  if (points.length <= max) return points;
  const inner = points.slice(1, -1), buckets = Math.max(1, Math.floor((max - 2) / 2));
  const size = Math.ceil(inner.length / buckets), out = [points[0]];
  for (let i = 0; i < inner.length; i += size) {
    const chunk = inner.slice(i, i + size);
    let lo = chunk[0], hi = chunk[0];
    for (const p of chunk) { if (p[1] < lo[1]) lo = p; if (p[1] > hi[1]) hi = p; }
    if (lo === hi) out.push(lo); else out.push(...(lo[0] <= hi[0] ? [lo, hi] : [hi, lo]));
  }
  out.push(points[points.length - 1]);
  return out;
}

// An SVG line chart of `lines` ([{pts: [[x, y]…], color?}]) on shared axes,
// each line ending in a dot; one line's colour comes from the stylesheet.
function svgChart(lines, xLabel) {
  const W = 480, H = 200, L = 52, R = 10, T = 10, B = 24;
  const all = lines.flatMap((l) => l.pts);
  let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  if (y0 === y1) { const d = Math.abs(y0) * 0.05 || 1; y0 -= d; y1 += d; }
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const add = (tag, attrs, text) => {
    const n = document.createElementNS(NS, tag);
    for (const [a, v] of Object.entries(attrs)) n.setAttribute(a, v);
    if (text != null) n.textContent = text;
    svg.append(n);
    return n;
  };
  add("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B });
  add("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B });
  for (const y of [y0, (y0 + y1) / 2, y1]) {
    add("text", { x: L - 4, y: sy(y) + 3, "text-anchor": "end" }, fmt(+y.toPrecision(4)));
  }
  add("text", { x: L, y: H - 6 }, fmt(x0));
  add("text", { x: W - R, y: H - 6, "text-anchor": "end" }, fmt(x1));
  add("text", { x: (L + W) / 2, y: H - 6, "text-anchor": "middle" }, xLabel);
  for (const { pts, color } of lines) {
    if (!pts.length) continue;
    const line = add("polyline", { class: "line", points: pts.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ") });
    const last = pts[pts.length - 1];
    const dot = add("circle", { class: "dot", cx: sx(last[0]), cy: sy(last[1]), r: 2.5 });
    // Through the CSSOM: the stylesheet's colour would win over an attribute.
    if (color) { line.style.stroke = color; dot.style.fill = color; }
  }
  return svg;
}

// One chart per metric key: x is the step when every point of the series has one, else the epoch.
class Charts {
  // opts.xLabel names the x axis when points carry `step`; opts.empty is
  // the id of the "no points yet" note this set of charts hides.
  constructor(root, opts = {}) {
    this.root = root; this.series = new Map(); this.pending = new Set();
    this.xLabel = opts.xLabel || "step"; this.empty = opts.empty || "charts-empty";
  }
  add(m) {
    for (const k of metricKeys(m)) {
      let s = this.series.get(k);
      if (!s) {
        s = { raw: [], useStep: true, node: null };
        this.series.set(k, s);
      }
      s.raw.push({ step: m.step, epoch: m.epoch, v: m.metrics[k] });
      if (m.step == null) s.useStep = false;
      if (s.raw.length > MAX_SERIES) {
        const pts = thin(s.raw.map((p, i) => [i, p.v, p]), MAX_SERIES / 2);
        s.raw = pts.map((p) => p[2]);
      }
      this.pending.add(k);
    }
    if (this.pending.size && !this.frame) this.frame = requestAnimationFrame(() => this.flush());
  }
  flush() {
    this.frame = null;
    const order = rank(this.series.keys());
    for (const k of order) if (this.pending.has(k)) this.draw(k, this.series.get(k));
    // Keep the cards in priority order.
    for (const k of order) this.root.append(this.series.get(k).node);
    this.pending.clear();
    const empty = $(`#${this.empty}`);
    if (empty) empty.hidden = this.series.size > 0;
  }
  draw(key, s) {
    const pts = s.raw.map((p) => [s.useStep ? p.step : p.epoch, p.v]);
    const svg = svgChart([{ pts }], s.useStep ? this.xLabel : "epoch");
    const last = pts[pts.length - 1];
    const dir = direction(key);
    let note = `last ${fmt(last[1])}`;
    if (dir) {
      const best = pts.reduce((b, p) => ((dir < 0 ? p[1] < b[1] : p[1] > b[1]) ? p : b));
      note += ` · best ${fmt(best[1])}`;
    }
    const card = el("div", { class: "card chart", "data-key": key, "data-points": String(pts.length) },
      el("h3", {}, el("b", { text: key }), el("span", { text: note })));
    card.append(svg);
    if (s.node) s.node.replaceWith(card);
    s.node = card;
  }
}

async function jobPage(root, id) {
  const head = el("div", { class: "head" });
  const fields = el("dl", { class: "fields" });
  const charts = el("div", { class: "charts", id: "charts" });
  const artifacts = el("div", { id: "artifacts" }, el("p", { class: "muted", text: "loading…" }));
  const logs = el("pre", { class: "logs", id: "logs", text: "loading…" });
  // GPU telemetry (the job's system metrics), shown for jobs given GPUs.
  const gpuCharts = el("div", { class: "charts", id: "gpu-charts" });
  const gpuPanel = el("div", { id: "gpus", hidden: "" }, el("h2", { text: "GPUs" }),
    el("p", { class: "muted", id: "gpu-charts-empty", text: "No GPU samples yet." }), gpuCharts);
  root.replaceChildren(head,
    el("div", { class: "grid2" },
      el("div", {}, el("h2", { text: "Job" }), el("div", { class: "card" }, fields),
        el("h2", { text: "Artifacts" }), artifacts),
      el("div", {}, el("h2", { text: "Metrics" }),
        el("p", { class: "muted", id: "charts-empty", text: "No metric points yet." }), charts, gpuPanel)),
    el("h2", { text: "Logs (tail)" }), logs);
  const plot = new Charts(charts);
  let job;
  let cancelling = false;
  let cancelError = "";

  // DELETE with the page's credentials (the API token cookie when one is set).
  async function cancel() {
    if (!confirm(`Cancel job ${jobNumber(job)} (${job.model_name})? Its trainer is stopped.`)) return;
    cancelling = true;
    cancelError = "";
    show(job);
    try {
      const r = await fetch(`${API}/jobs/${id}`, { method: "DELETE", credentials: "same-origin",
        headers: { Accept: "application/json" } });
      if (!r.ok) {
        let detail = `${r.status} ${r.statusText}`;
        try { detail = (await r.json()).detail || detail; } catch (_) { /* keep the status */ }
        throw new Error(detail);
      }
      // The event stream brings the cancelled job; this read covers a stream that is down.
      show(await (await api(`/jobs/${id}`)).json());
    } catch (e) {
      cancelError = `Cannot cancel: ${e.message}`;
    } finally {
      cancelling = false;
      show(job);
    }
  }

  function show(j) {
    job = j;
    document.title = `platform · ${jobNumber(j)} ${j.model_name} ${j.status}`;
    head.replaceChildren(el("h1", { text: `Job ${jobNumber(j)}` }),
      el("span", { class: "muted mono", id: "job-id", text: j.id }), statusBadge(j.status),
      progressBar(j.progress, true), el("span", { class: "muted", text: j.message || "" }));
    if (!TERMINAL.has(j.status) && mayCancel(j)) {
      const button = el("button", { class: "danger", id: "cancel", type: "button",
        text: cancelling ? "Cancelling…" : "Cancel job" });
      button.disabled = cancelling;
      button.addEventListener("click", cancel);
      head.append(button);
    }
    if (cancelError) head.append(el("span", { class: "error", id: "cancel-error", text: cancelError }));
    const when = (t) => (t ? `${new Date(t).toLocaleString()} (${ago(t)})` : "–");
    const rows = [
      ["User", j.user_id], ["Model", j.model_name], ["Framework", j.framework],
      ["Dataset", j.dataset_s3_uri], ["Config", j.config ? JSON.stringify(j.config) : "–"],
      ["Checkpoint", j.checkpoint_s3_uri || "–"], ["Runner", j.runner ? `${j.runner}${j.exit_code != null ? ` (${exitText(j.exit_code)})` : ""}` : "–"],
      ["Created", when(j.created_at)], ["Started", when(j.started_at)], ["Completed", when(j.completed_at)],
      ["Queue", j.queue || "default"], ["Priority", String(j.priority ?? 50)],
    ];
    if (j.name) rows.push(["Name", j.name]);
    const tags = Object.entries(j.tags || {}).map(([k, v]) => `${k}=${v}`).join(", ");
    if (tags) rows.push(["Tags", tags]);
    if (j.note) rows.push(["Note", j.note]);
    if (j.attempt) rows.push(["Attempt", String(j.attempt)]);
    if (j.stalled_at) rows.push(["Condition", `stalled (silent since before ${ago(j.stalled_at)})`]);
    if (j.gpus) rows.push(["GPUs", (j.assigned_gpus || []).length
      ? j.assigned_gpus.map((g) => `${g.index}${g.uuid ? ` (${g.uuid})` : ""}`).join(", ") : `${j.gpus} (not assigned yet)`]);
    if (j.gpu_idle) rows.push(["Condition", "gpu idle (a GPU it holds has been at 0 % for a long time)"]);
    if (j.next_attempt_at) rows.push(["Next attempt", when(j.next_attempt_at)]);
    if (j.termination_reason) rows.push(["Ended by", j.termination_reason]);
    if (j.started_at) {
      const end = j.completed_at ? Date.parse(j.completed_at) : Date.now();
      rows.push(["Duration", duration((end - Date.parse(j.started_at)) / 1000)]);
    }
    fields.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { class: k === "Config" || k === "Dataset" || k === "Checkpoint" ? "mono" : "", text: v })]));
    if (j.sweep_id) {
      fields.append(el("dt", { text: "Sweep" }), el("dd", {},
        el("a", { href: `/ui/compare?sweep=${j.sweep_id}`, id: "sweep-link", text: "compare its runs" })));
    }
    if (j.error) fields.append(el("dt", { text: "Error" }), el("dd", { class: "error-text mono", text: j.error }));
  }

  // Re-read whole (downsampled), x = seconds since the first sample.
  async function refreshGpus() {
    if (!job || !(job.assigned_gpus || []).length) return;
    gpuPanel.hidden = false;
    try {
      const pts = await (await api(`/jobs/${id}/metrics?system=true&max_points=500&order=asc`)).json();
      const t0 = pts.length ? Date.parse(pts[0].created_at) : 0;
      const c = new Charts(gpuCharts, { xLabel: "seconds", empty: "gpu-charts-empty" });
      gpuCharts.replaceChildren();
      for (const p of pts) c.add({ ...p, step: Math.round((Date.parse(p.created_at) - t0) / 1000) });
      c.flush();
    } catch (_) { /* the next refresh tries again */ }
  }

  let logTimer = null;
  async function refreshLogs() {
    try {
      const r = await fetch(`${API}/jobs/${id}/logs?tail=200`, { credentials: "same-origin" });
      if (r.status === 404) { logs.textContent = "no logs"; return; }
      if (!r.ok) { logs.textContent = `logs unavailable (${r.status})`; return; }
      let text = await r.text();
      if ((r.headers.get("content-type") || "").includes("json")) {
        try { const v = JSON.parse(text); text = Array.isArray(v.lines) ? v.lines.join("\n") : JSON.stringify(v, null, 2); } catch (_) { /* keep raw */ }
      }
      const lines = text.split("\n");
      const atBottom = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 4;
      logs.textContent = lines.slice(-200).join("\n") || "(empty)";
      if (atBottom) logs.scrollTop = logs.scrollHeight;
    } catch (e) { logs.textContent = `logs unavailable: ${e.message}`; }
  }

  // The job's outputs, each a download link (the browser sends the page's credentials).
  let artifactsShown = 0;
  async function refreshArtifacts() {
    artifactsShown = Date.now();
    try {
      const files = await (await api(`/jobs/${id}/artifacts`)).json();
      if (!files.length) {
        artifacts.replaceChildren(el("p", { class: "muted", text: "No artifacts yet." }));
        return;
      }
      artifacts.replaceChildren(el("table", { class: "jobs artifacts" },
        el("thead", {}, el("tr", {}, ...["Path", "Size", "Modified"].map((h) => el("th", { text: h })))),
        el("tbody", {}, ...files.map((f) => el("tr", { "data-path": f.path },
          el("td", { class: "mono" }, el("a", { href: `${API}/jobs/${id}/artifacts/${encodePath(f.path)}`,
            download: f.path.split("/").pop(), text: f.path })),
          el("td", { text: bytes(f.size) }),
          el("td", { class: "ago", "data-t": f.last_modified, text: ago(f.last_modified) }))))));
    } catch (e) {
      artifacts.replaceChildren(el("p", { class: "muted", text: `artifacts unavailable: ${e.message}` }));
    }
  }

  try {
    show(await (await api(`/jobs/${id}`)).json());
  } catch (e) {
    root.replaceChildren(el("h1", { text: "Job not found" }), el("p", { class: "muted", text: `${id}: ${e.message}` }));
    return;
  }
  // History downsampled server-side, then the stream from the last point on.
  const history = await (await api(`/jobs/${id}/metrics?max_points=1000&order=asc`)).json();
  for (const m of history) plot.add(m);
  plot.flush();
  const lastId = history.length ? history[history.length - 1].id : 0;
  refreshLogs();
  refreshArtifacts();
  refreshGpus();
  if (!TERMINAL.has(job.status)) {
    logTimer = setInterval(() => { refreshLogs(); refreshGpus(); }, 3000);
    const es = stream(`/jobs/${id}/events?last_event_id=m${lastId}-j0`);
    on(es, "metric", (m) => plot.add(m));
    on(es, "job", (j) => {
      show(j);
      // Trainers upload outputs as they go: look again now and then, and at the end.
      if (TERMINAL.has(j.status) || Date.now() - artifactsShown > 5000) refreshArtifacts();
      if (TERMINAL.has(j.status)) {
        es.close();
        setConn("", "finished");
        clearInterval(logTimer);
        refreshLogs();
      }
    });
  } else {
    setConn("", "finished");
  }
}

// -------------------------------------------------------------- compare view

// Line colours of compared runs, in legend order.
const PALETTE = ["#2f6feb", "#e8590c", "#2f9e44", "#d6336c", "#7048e8", "#c69200", "#0c8599", "#868e96"];

// `a.b.c` → value for every leaf of a config (as `platform job compare` flattens it).
function flatten(v, prefix = "", out = {}) {
  if (v && typeof v === "object" && !Array.isArray(v) && Object.keys(v).length) {
    for (const [k, x] of Object.entries(v)) flatten(x, prefix ? `${prefix}.${k}` : k, out);
  } else if (prefix) out[prefix] = v;
  return out;
}

// Each run's legend: its values of the config keys that differ between the
// runs (as the CLI's overlay labels them), else its name.
function legends(jobs) {
  const flat = jobs.map((j) => flatten(j.config || {}));
  const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
  const keys = [...new Set(flat.flatMap((f) => Object.keys(f)))].sort();
  const differ = keys.filter((k) => flat.some((f) => !same(f[k], flat[0][k])));
  const plain = (v) => (typeof v === "string" ? v : JSON.stringify(v));
  return jobs.map((j, i) => {
    const vals = differ.filter((k) => k in flat[i]).map((k) => `${k}=${plain(flat[i][k])}`);
    return `${jobNumber(j)} ${vals.length ? vals.join(",") : j.name || ""}`.trim();
  });
}

// Runs picked in the table (`?jobs=ID,ID`) or a sweep's (`?sweep=ID`): one
// chart per metric with a line per run, live while they run.
async function comparePage(root, params) {
  document.title = "platform · compare";
  const sweep = params.get("sweep");
  let jobs;
  if (sweep) {
    jobs = (await (await api(`/api/v1/sweeps/${encodeURIComponent(sweep)}`)).json()).jobs;
  } else {
    const ids = (params.get("jobs") || "").split(",").filter((x) => /^[0-9a-fA-F-]{36}$/.test(x));
    jobs = await Promise.all(ids.map(async (id) => (await api(`/jobs/${id}`)).json()));
  }
  const legend = el("ul", { class: "legend", id: "legend" });
  const charts = el("div", { class: "charts", id: "charts" });
  const empty = el("p", { class: "muted", id: "charts-empty",
    text: jobs.length ? "No metric points yet." : "No runs to compare: pick them in the jobs table." });
  root.replaceChildren(el("div", { class: "head" }, el("h1", { text: sweep ? "Compare a sweep's runs" : "Compare runs" })),
    legend, empty, charts);
  const labels = legends(jobs);
  const runs = new Map(jobs.map((j, i) => [j.id,
    { job: j, label: labels[i], color: PALETTE[i % PALETTE.length], points: [], seen: new Set(), item: null }]));
  function showRun(r) {
    const swatch = el("span", { class: "swatch" });
    swatch.style.background = r.color;
    const item = el("li", { "data-job-id": r.job.id }, swatch,
      el("a", { href: `/ui/jobs/${r.job.id}`, class: "label", text: r.label }), " ", statusBadge(r.job.status));
    if (r.item) r.item.replaceWith(item); else legend.append(item);
    r.item = item;
  }
  for (const r of runs.values()) showRun(r);
  let frame = null;
  function draw() {
    frame = null;
    const all = [...runs.values()];
    const keys = rank(new Set(all.flatMap((r) => r.points.flatMap(metricKeys))));
    const cards = keys.map((k) => {
      const withKey = all.map((r) => r.points.filter((p) => typeof p.metrics[k] === "number"));
      const useStep = withKey.every((ps) => ps.every((p) => p.step != null));
      const lines = all.map((r, i) => ({
        color: r.color,
        pts: withKey[i].map((p) => [useStep ? p.step : p.epoch, p.metrics[k]]),
      }));
      const drawn = lines.filter((l) => l.pts.length);
      const total = drawn.reduce((n, l) => n + l.pts.length, 0);
      const card = el("div", { class: "card chart", "data-key": k, "data-runs": String(drawn.length), "data-points": String(total) },
        el("h3", {}, el("b", { text: k }), el("span", { text: `${drawn.length} of ${all.length} runs` })));
      card.append(svgChart(lines, useStep ? "step" : "epoch"));
      return card;
    });
    charts.replaceChildren(...cards);
    empty.hidden = cards.length > 0;
  }
  function add(r, m) {
    if (r.seen.has(m.id)) return;
    r.seen.add(m.id);
    r.points.push(m);
    if (!frame) frame = requestAnimationFrame(draw);
  }
  // Subscribe first so no point between the history and the stream is lost.
  const es = stream("/events");
  on(es, "metric", (m) => { const r = runs.get(m.job_id); if (r) add(r, m); });
  on(es, "job", (j) => { const r = runs.get(j.id); if (r) { r.job = j; showRun(r); } });
  await Promise.all([...runs.values()].map(async (r) => {
    const points = await (await api(`/jobs/${r.job.id}/metrics?order=asc&max_points=1000`)).json();
    for (const m of points) add(r, m);
    // Keep each run's points in training order whatever arrived first.
    r.points.sort((a, b) => a.epoch - b.epoch || (a.step ?? -1) - (b.step ?? -1) || a.id - b.id);
  }));
}

// -------------------------------------------------------------------- router

const root = $("#app");
const m = location.pathname.match(/^\/ui\/jobs\/([0-9a-fA-F-]{36})\/?$/);
const page = () => {
  if (m) return jobPage(root, m[1].toLowerCase());
  if (/^\/ui\/compare\/?$/.test(location.pathname)) return comparePage(root, new URLSearchParams(location.search));
  return jobsPage(root);
};
loadMe().then(page).catch((e) => {
  root.append(el("p", { class: "error", text: `Error: ${e.message}` }));
});
