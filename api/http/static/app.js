// The ResKD dashboard: one page, hash routes (#/jobs, #/job/ID, #/pareto, #/sweeps,
// #/sweep/ID, #/submit), reading only the service's own /v1 API. With a token configured the
// page asks once per tab for an API key or the service's token and sends it as the
// Authorization header (never in a URL), so event streams, images and downloads are fetched,
// not linked. Who signed in (GET /v1/me) is shown in the header; what their role may not do
// (a viewer's submit, a member's cancel of another's job) is not offered.
"use strict";

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const $main = () => document.getElementById("main");
let cleanup = []; // what the current page must stop (streams, timers, charts) when it is left
let me = null; // who the service takes this tab for (GET /v1/me): name, role, quotas

// -- the API -----------------------------------------------------------------------------------

function token() { return sessionStorage.getItem("reskd-token"); }

function headers(extra = {}) {
  const t = token();
  return t ? { ...extra, Authorization: `Bearer ${t}` } : extra;
}

let asking = null; // one prompt for a key or token at a time, every request waits on it
let note = ""; // said in the next prompt ("Signed out.")
function askToken(message) {
  if (asking) return asking;
  const dialog = document.getElementById("token-dialog");
  document.getElementById("token-error").textContent = message || note;
  note = "";
  asking = new Promise((resolve) => {
    const done = () => { asking = null; resolve(); };
    document.getElementById("token-form").onsubmit = () => {
      sessionStorage.setItem("reskd-token", document.getElementById("token-input").value.trim());
      done();
    };
    dialog.oncancel = done; // Escape: the request goes on as it was (asked again if it must)
  });
  dialog.showModal();
  return asking;
}

// Why the tab's credential is refused (wrong, revoked, expired, of a disabled user), or null
// when a 403 is the role's (a viewer's cancel): only then does /v1/me answer.
async function refusal(r, path) {
  const check = path === "/v1/me" ? r : await fetch("/v1/me", { headers: headers() });
  if (check.status !== 401 && check.status !== 403) return null;
  const body = await check.json().catch(() => ({}));
  return body.detail || check.statusText;
}

async function api(path, options = {}) {
  for (;;) {
    const r = await fetch(path, { ...options, headers: headers(options.headers || {}) });
    if (r.status === 401) {
      await askToken("");
      continue;
    }
    if (r.status === 403) {
      const why = await refusal(r, path);
      if (why) {
        await askToken(`That key or token was refused: ${why}.`);
        continue;
      }
    }
    return r;
  }
}

// -- who is signed in --------------------------------------------------------------------------

const mayWrite = () => !me || me.role !== "viewer";
// cancel or delete what owner owns: an admin anything, a member their own (as the service rules)
const mayChange = (owner) => !me || me.role === "admin" || (me.role === "member" && owner === me.name);

async function whoami() {
  me = await json("/v1/me").catch(() => null);
  const box = document.getElementById("me");
  box.innerHTML = me ? `signed in as <b>${esc(me.name)}</b> (${esc(me.role)}) ·
    <a href="#" id="sign-out">${token() ? "sign out" : "sign in with a key"}</a>` : "";
  const link = document.getElementById("sign-out");
  if (link) link.onclick = (e) => { e.preventDefault(); switchUser(); };
  document.querySelector("header nav a[data-page=submit]").hidden = !mayWrite();
}

// Sign out (forget the tab's key or token; a service with a token asks again) or, on a service
// without a token, sign in with a key; then the page is drawn again for whoever it is now.
async function switchUser() {
  cleanup.forEach((f) => f());
  cleanup = [];
  $main().innerHTML = "";
  if (token()) {
    sessionStorage.removeItem("reskd-token");
    note = "Signed out.";
  } else {
    await askToken("This service needs no key: without one you are its local admin.");
  }
  await whoami();
  await route();
}

async function json(path, options) {
  const r = await api(path, options);
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw Object.assign(new Error(body.detail || r.statusText), { status: r.status, body });
  return body;
}

// Server-Sent Events over fetch (EventSource cannot send a header); calls onEvent(name, data).
function stream(path, onEvent) {
  const ctrl = new AbortController();
  (async () => {
    const r = await api(path, { signal: ctrl.signal });
    if (!r.ok || !r.body) return;
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value;
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        let name = "message", data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event: ")) name = line.slice(7);
          else if (line.startsWith("data: ")) data += line.slice(6);
        }
        if (data) onEvent(name, JSON.parse(data));
      }
    }
  })().catch(() => {});
  return () => ctrl.abort();
}

async function blobUrl(path) {
  const r = await api(path);
  if (!r.ok) throw new Error(`${path}: ${r.status}`);
  const url = URL.createObjectURL(await r.blob());
  cleanup.push(() => URL.revokeObjectURL(url));
  return url;
}

// -- formatting: one convention wherever a person reads a number (tables, tooltips, axes) ----

const esc = (s) => String(s ?? "").replace(/[&<>"']/g,
  (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const absent = (x) => x == null || !isFinite(x);
// x to n significant digits, never in exponent notation: sig(0.24234, 3) = "0.242", sig(40.84, 3) = "40.8"
function sig(x, n) {
  if (absent(x)) return "";
  const r = Number(Number(x).toPrecision(n));
  return r === 0 ? "0" : r.toFixed(Math.max(0, n - 1 - Math.floor(Math.log10(Math.abs(r)))));
}
const pct = (x) => (absent(x) ? "" : `${(100 * x).toFixed(2)}%`); // a fraction: "97.25%"
const mflops = (x) => sig(x, 3);
const energy = (x) => sig(x, 4);
const fixed = (x, d) => (absent(x) ? "" : Number(x).toFixed(d));
// a count to 3 significant digits: 812, 24.6k, 1.23M (on an axis without trailing zeros: 50k)
const trim = (t) => (t.includes(".") ? t.replace(/\.?0+$/, "") : t);
function count(x, axis = false) {
  if (absent(x)) return "";
  const [scaled, unit] = Math.abs(x) >= 1e6 ? [x / 1e6, "M"] : Math.abs(x) >= 1e3 ? [x / 1e3, "k"] : [x, ""];
  const t = unit ? sig(scaled, 3) : String(Math.round(x));
  return (axis ? trim(t) : t) + unit;
}
// "42 s", "3 min 36 s", "1 h 5 min"
function duration(s) {
  if (absent(s)) return "";
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60, r = s % 60;
  if (h) return m ? `${h} h ${m} min` : `${h} h`;
  if (m) return r ? `${m} min ${r} s` : `${m} min`;
  return `${r} s`;
}
// a cost as its kind reads: parameters counted, MFLOPs to 3 significant digits
const costText = (kind, x) => (kind === "params" ? count(x) : mflops(x));

const badge = (state) => `<span class="badge ${esc(state)}">${esc(state)}</span>`;
function epochText(p) {
  if (!p || p.epochs == null) return "";
  let t = p.phase && !(p.stage || "").includes(p.phase) ? `${p.phase} ` : "";
  t += `${p.epoch ?? 0}/${p.epochs}`;
  if (p.batch != null && p.batches) t += ` (batch ${p.batch}/${p.batches})`;
  if (p.eta_seconds) t += `, ETA ${duration(p.eta_seconds)}`;
  return t;
}

// -- charts ------------------------------------------------------------------------------------

// The fewest decimals (at most 6) that write every tick's step exactly and no two ticks alike.
function tickDecimals(values) {
  const gaps = values.slice(1).map((v, i) => Math.abs(v - values[i])).filter((g) => g > 1e-12);
  let d = 0;
  if (gaps.length) {
    const step = Math.min(...gaps);
    while (d < 6 && Math.abs(step * 10 ** d - Math.round(step * 10 ** d)) > 1e-6 * step * 10 ** d) d++;
  }
  while (d < 6 && new Set(values.map((v) => v.toFixed(d))).size < values.length) d++;
  return d;
}
// a linear axis's tick labels with the decimals its step needs; unit "%" or "" (count: 24.6k)
const linearTicks = (unit = "") => (value, _, ticks) => (unit === "count" ? count(value, true)
  : `${Number(value).toFixed(tickDecimals(ticks.map((t) => t.value)))}${unit}`);

// The range of some values with a small margin, kept within [lo, hi].
function around(values, lo = -Infinity, hi = Infinity) {
  const v = values.filter((x) => isFinite(x));
  if (!v.length) return {};
  const min = Math.min(...v), max = Math.max(...v);
  const margin = max > min ? 0.05 * (max - min) : Math.max(0.5, 0.01 * Math.abs(max));
  return { suggestedMin: Math.max(lo, min - margin), suggestedMax: Math.min(hi, max + margin) };
}

// A percent axis (values 0 to 100) fitted to its data and never past 0 or 100.
function percentAxis(values, title) {
  return { ...around(values, 0, 100), title: { display: true, text: title }, ticks: { callback: linearTicks("%") },
    afterBuildTicks: (scale) => {
      scale.ticks = scale.ticks.filter((t) => t.value >= 0 && t.value <= 100);
      scale.min = Math.max(scale.min, 0); scale.max = Math.min(scale.max, 100);
    } };
}

// Epochs: whole numbers only.
const epochAxis = (title) => ({ type: "linear", title: { display: true, text: title },
  ticks: { precision: 0, callback: linearTicks() } });

// A cost axis: logarithmic when the costs span more than 1.5 decades, labelled 1-2-5 per decade.
function costAxis(values, kind, title) {
  const v = values.filter((x) => x > 0);
  const spread = v.length ? Math.log10(Math.max(...v) / Math.min(...v)) : 0;
  if (spread <= 1.5) {
    return { type: "linear", title: { display: true, text: title },
      ticks: { callback: linearTicks(kind === "params" ? "count" : "") } };
  }
  return { type: "logarithmic", title: { display: true, text: `${title}, log scale` },
    ticks: { callback: (value) => (kind === "params" ? count(value, true) : String(Number(Number(value).toPrecision(3)))) },
    afterBuildTicks: (scale) => {
      const lead = (x) => x / 10 ** Math.floor(Math.log10(x) + 1e-9); // 1 to 9.99
      const kept = scale.ticks.filter((t) => t.value > 0 && [1, 2, 5].some((k) => Math.abs(lead(t.value) - k) < 1e-6));
      if (kept.length >= 3) scale.ticks = kept;
    } };
}

// One tooltip line per point: of items drawn at the same place (a front point is also one of
// all the points) the first is kept.
const onePerPoint = (item, i, items) => items.findIndex((o) =>
  o.parsed.x === item.parsed.x && o.parsed.y === item.parsed.y) === i;

function chart(canvas, config) {
  const options = config.options || {}, plugins = options.plugins || {};
  const c = new Chart(canvas, { ...config,
    options: { animation: false, responsive: true, maintainAspectRatio: false,
      interaction: { mode: "nearest", intersect: true }, ...options,
      plugins: { legend: { labels: { boxWidth: 14, boxHeight: 8, font: { size: 11 } } }, ...plugins,
        tooltip: { filter: onePerPoint, ...plugins.tooltip } } } });
  cleanup.push(() => c.destroy());
  return c;
}

// -- jobs --------------------------------------------------------------------------------------

// why a queued job waits (its owner's quota, ...), muted under its state
const heldText = (j) => (j.held ? `<div class="held muted">held: ${esc(j.held)}</div>` : "");
const ownerText = (owner) => (owner ? esc(owner) : `<span class="muted" title="submitted before jobs had owners">—</span>`);

function jobRow(j) {
  const p = j.progress || {};
  const live = !TERMINAL.has(j.state);
  const mine = me && j.owner === me.name;
  return `<tr id="job-${j.id}" data-state="${esc(j.state)}"${mine ? ` class="mine"` : ""}>
    <td><a href="#/job/${j.id}">${j.id}</a></td><td>${esc(j.name)}</td><td>${esc(j.kind)}</td>
    <td>${esc(j.dataset)}</td><td class="state">${badge(j.state)}${heldText(j)}</td>
    <td>${esc(live ? p.stage : "")}</td><td>${esc(live ? epochText(p) : "")}</td>
    <td class="num">${j.best ? `${pct(j.best.val_accuracy)} <span class="muted">${esc(j.best.model)}</span>` : ""}</td>
    <td class="num">${j.best ? pct(j.best.accuracy) : ""}</td>
    <td class="num">${j.best ? mflops(j.best.mflops) : ""}</td>
    <td class="owner">${ownerText(j.owner)}</td>
    <td>${live && mayChange(j.owner) ? `<button data-cancel="${j.id}">Cancel</button>` : ""}</td></tr>`;
}

async function jobsPage(params) {
  const q = new URLSearchParams(params);
  const sel = (name, values) => `<label>${name} <select name="${name}"><option value="">any</option>${
    values.map((v) => `<option ${q.get(name) === v ? "selected" : ""}>${v}</option>`).join("")}</select></label>`;
  $main().innerHTML = `<h2>Jobs</h2><form class="filters" id="filters">
      ${sel("state", ["queued", "running", "succeeded", "failed", "cancelled"])}
      ${sel("kind", ["reskd", "search", "finetune", "distill"])}
      <label>dataset <input name="dataset" size="12" value="${esc(q.get("dataset") || "")}"></label>
    </form>
    <table id="jobs"><thead><tr><th>id</th><th>name</th><th>kind</th><th>dataset</th><th>state</th>
      <th>stage</th><th>epoch / ETA</th><th class="num" title="the student best on D_v (what the export ships)">best, D_v accuracy</th>
      <th class="num" title="reported beside, never chosen on">its test accuracy</th><th class="num">MFLOPs</th>
      <th title="who submitted it; yours are listed first">owner</th><th></th>
    </tr></thead><tbody></tbody></table><p id="jobs-total" class="muted"></p>`;
  const form = document.getElementById("filters");
  form.onchange = () => {
    const f = new URLSearchParams([...new FormData(form)].filter(([, v]) => v));
    location.hash = `#/jobs${f.toString() ? "?" + f : ""}`;
  };
  const tbody = $main().querySelector("tbody");
  tbody.onclick = async (e) => {
    const id = e.target.dataset && e.target.dataset.cancel;
    if (!id) return;
    e.target.disabled = true;
    await json(`/v1/jobs/${id}/cancel`, { method: "POST" }).catch(() => {});
  };
  const watched = new Map();
  const watch = (j) => {
    if (TERMINAL.has(j.state) || watched.has(j.id) || watched.size >= 6) return;
    watched.set(j.id, stream(`/v1/jobs/${j.id}/events`, (name, job) => {
      if (name !== "job") return;
      const row = document.getElementById(`job-${job.id}`);
      if (row) row.outerHTML = jobRow(job); // the job carries its best, chosen on D_v
      if (TERMINAL.has(job.state)) { watched.get(job.id)?.(); watched.delete(job.id); }
    }));
  };
  cleanup.push(() => watched.forEach((stop) => stop()));
  // the signed-in user's jobs first, then everyone else's, newest first in each
  const load = async () => {
    const f = new URLSearchParams([...q].filter(([k, v]) => v && ["state", "kind", "dataset"].includes(k)));
    f.set("limit", "1000");
    const own = me ? new URLSearchParams([...f, ["owner", me.name]]) : null;
    const [list, mine] = await Promise.all([json(`/v1/jobs?${f}`), own ? json(`/v1/jobs?${own}`) : { jobs: [], total: 0 }]);
    const ids = new Set(mine.jobs.map((j) => j.id));
    const jobs = [...mine.jobs, ...list.jobs.filter((j) => !ids.has(j.id))].slice(0, 1000);
    tbody.innerHTML = jobs.map(jobRow).join("");
    document.getElementById("jobs-total").textContent =
      `${jobs.length} of ${list.total} jobs` + (mine.total ? `, yours (${mine.total}) first` : "")
      + (list.total ? "" : mayWrite() ? " — submit one on the Submit page" : "");
    jobs.forEach(watch);
  };
  await load();
  const timer = setInterval(() => { if (!document.hidden) load().catch(() => {}); }, 5000);
  cleanup.push(() => clearInterval(timer));
}

// -- one job -----------------------------------------------------------------------------------

const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"];

function timeline(job) {
  const secs = job.stages.map((s) => s.finished_at ? (new Date(s.finished_at) - new Date(s.started_at)) / 1000
    : (Date.now() - new Date(s.started_at)) / 1000);
  const longest = Math.max(1, ...secs);
  return job.stages.map((s, i) => {
    const how = s.reused ? "reused" : s.resumed_from_epoch ? `resumed from epoch ${s.resumed_from_epoch}`
      : s.state === "running" ? "training" : "trained";
    const cls = s.reused ? "reused" : s.resumed_from_epoch ? "resumed" : s.state === "failed" ? "failed" : "";
    return `<div class="bar"><span class="label">${esc(s.name)}</span>
      <span class="fill ${cls}" style="width:${Math.max(0.5, 40 * secs[i] / longest)}%"></span>
      <span>${badge(s.state)} ${how}, ${duration(secs[i])}${s.state === "running" ? " · " + esc(epochText(s.progress)) : ""}</span></div>`;
  }).join("") || `<p class="muted">No stage has started.</p>`;
}

function reportTable(rows) {
  if (!rows.length) return `<p class="muted">The report appears when the job has succeeded.</p>`;
  return `<table id="report"><thead><tr><th>model</th><th>arch</th><th class="num">D_v accuracy</th><th class="num">test accuracy</th>
    <th class="num">MFLOPs</th><th class="num">adaptive MFLOPs</th><th class="num">% of T</th>
    <th class="num">Energy</th><th class="num">params (M)</th></tr></thead><tbody>${rows.map((r) => `<tr>
    <td>${esc(r.model)}</td><td>${esc(r.arch)}</td><td class="num">${pct(r.val_accuracy)}</td><td class="num">${pct(r.accuracy)}</td>
    <td class="num">${mflops(r.mflops)}</td><td class="num">${mflops(r.adaptive_mflops)}</td>
    <td class="num">${fixed(r.pct_of_T, 1)}</td><td class="num">${energy(r.energy)}</td>
    <td class="num">${sig(r.mparams, 3)}</td></tr>`).join("")}</tbody></table>`;
}

async function jobPage(id) {
  $main().innerHTML = `<h2>Job ${esc(id)}</h2><div id="job-head"></div>
    <h3>Stages</h3><div class="timeline card" id="timeline"></div>
    <h3>Training curves</h3><div id="curves"><p class="muted">Loading…</p></div>
    <h3>Report</h3><div id="report-box"></div>
    <h3>Searched cells and architecture weights</h3><div id="images" class="images"></div>
    <h3>Artifacts</h3><ul id="artifacts"></ul>`;
  let lastEpochs = -1, imagesShown = false, loss = null, acc = null;
  const epochTitle = (items) => `epoch ${items[0].parsed.x} (stages in order)`;
  // the two charts, once there is an epoch to draw (a job that failed before any has none)
  const charts = () => {
    document.getElementById("curves").innerHTML = `<div class="grid2"><div class="card chart curves"><canvas id="loss"></canvas></div>
      <div class="card chart curves"><canvas id="acc"></canvas></div></div>`;
    loss = chart(document.getElementById("loss"), { type: "line", data: { datasets: [] },
      options: { parsing: false, plugins: { title: { display: true, text: "loss per epoch" },
        tooltip: { callbacks: { title: epochTitle, label: (c) => `${c.dataset.label}: ${sig(c.parsed.y, 3)}` } } },
        scales: { x: epochAxis("epoch (stages in order)"), y: { title: { display: true, text: "loss" }, ticks: { callback: linearTicks() } } } } });
    acc = chart(document.getElementById("acc"), { type: "line", data: { datasets: [] },
      options: { parsing: false, plugins: { title: { display: true, text: "accuracy per epoch: training batches (solid), D_v (dashed)" },
        tooltip: { callbacks: { title: epochTitle, label: (c) => `${c.dataset.label}: ${pct(c.parsed.y / 100)}` } } },
        scales: { x: epochAxis("epoch (stages in order)"), y: percentAxis([], "accuracy (%)") } } });
  };
  const drawCurves = async () => {
    const m = await json(`/v1/jobs/${id}/metrics`);
    let offset = 0;
    const L = [], A = [];
    for (const [i, s] of m.stages.entries()) {
      const pts = (f, scale = 1) => s.epochs.filter((e) => e[f] != null).map((e) => ({ x: offset + e.epoch, y: scale * e[f] }));
      const name = s.phase && s.phase.startsWith("search") ? `${s.name}: ${s.phase.slice(7)}` : s.name;
      const color = PALETTE[i % PALETTE.length]; // a stage's training and D_v curves share it
      L.push({ label: name, data: pts("loss"), pointRadius: 2, borderColor: color, backgroundColor: color });
      A.push({ label: `${name} train`, data: pts("train_accuracy", 100), pointRadius: 2, borderColor: color, backgroundColor: color });
      const ev = pts("eval_accuracy", 100);
      if (ev.length) A.push({ label: `${name} D_v`, data: ev, borderDash: [4, 3], pointRadius: 2, borderColor: color, backgroundColor: color });
      offset += s.epochs.length ? s.epochs[s.epochs.length - 1].epoch : 0;
    }
    if (!L.some((d) => d.data.length)) {
      document.getElementById("curves").innerHTML = `<p class="muted" id="no-epochs">No epochs recorded.</p>`;
      return;
    }
    if (!loss) charts();
    loss.data.datasets = L; acc.data.datasets = A;
    Object.assign(acc.options.scales.y, around(A.flatMap((d) => d.data.map((p) => p.y)), 0, 100));
    loss.update(); acc.update();
  };
  const render = async (job) => {
    document.getElementById("job-head").innerHTML = `<p>${badge(job.state)} ${esc(job.kind)} on
      <b>${esc(job.dataset)}</b>${job.name ? ` · ${esc(job.name)}` : ""} · owner ${ownerText(job.owner)} · attempts ${job.attempts}
      ${TERMINAL.has(job.state) || !mayChange(job.owner) ? "" : `<button id="cancel">Cancel</button>`}</p>
      ${job.held ? `<p class="held muted">held: ${esc(job.held)}</p>` : ""}
      ${job.error ? `<p class="error">${esc(job.error)}</p>` : ""}
      ${job.teacher && job.teacher.val_accuracy != null ? `<p id="teacher-gate">Teacher <code>${esc(job.teacher.id)}</code>: <b>${pct(job.teacher.val_accuracy)}</b> on D_v</p>` : ""}
      ${(job.warnings || []).length ? `<ul class="warnings" id="warnings">${job.warnings.map((w) => `<li class="warning">${esc(w)}</li>`).join("")}</ul>` : ""}`;
    const cancel = document.getElementById("cancel");
    if (cancel) cancel.onclick = () => json(`/v1/jobs/${id}/cancel`, { method: "POST" }).then(render);
    document.getElementById("timeline").innerHTML = timeline(job);
    document.getElementById("report-box").innerHTML = reportTable(job.metrics || []);
    const done = job.stages.reduce((n, s) => n + (s.progress?.epoch || 0), 0);
    if (done !== lastEpochs) { lastEpochs = done; await drawCurves(); }
    const list = document.getElementById("artifacts");
    list.innerHTML = job.artifacts.map((a) =>
      `<li><a href="#" data-url="${esc(a.url)}" data-name="${esc(a.name)}">${esc(a.name)}</a>
       <span class="muted">${(a.size / 1024).toFixed(1)} KiB</span></li>`).join("")
      || `<li class="muted">none yet</li>`;
    list.onclick = async (e) => {
      const a = e.target.closest("a[data-url]");
      if (!a) return;
      e.preventDefault();
      const link = Object.assign(document.createElement("a"), { href: await blobUrl(a.dataset.url), download: a.dataset.name });
      link.click();
    };
    const pngs = job.artifacts.filter((a) => /(cells|alphas)\.png$/.test(a.name));
    if (!imagesShown && pngs.length) {
      imagesShown = true;
      const box = document.getElementById("images");
      for (const a of pngs) {
        const url = await blobUrl(a.url), fig = document.createElement("figure");
        fig.innerHTML = `<a href="${url}" target="_blank" rel="noopener" title="open full size in a new tab"><img alt="${esc(a.name)}" src="${url}"></a>
          <figcaption>${esc(a.name)}</figcaption><a class="full" href="${url}" target="_blank" rel="noopener">open full size</a>`;
        box.append(fig);
      }
    } else if (!pngs.length) {
      document.getElementById("images").innerHTML = `<p class="muted">No search in this job${TERMINAL.has(job.state) ? "" : " yet"}.</p>`;
    }
  };
  const job = await json(`/v1/jobs/${id}`);
  await render(job);
  if (!TERMINAL.has(job.state)) {
    cleanup.push(stream(`/v1/jobs/${id}/events`, (name, j) => { if (name === "job") render(j); }));
  }
}

// -- Pareto ------------------------------------------------------------------------------------

const COSTS = { mflops: "MFLOPs", adaptive_mflops: "adaptive MFLOPs (mean per sample)", params: "parameters" };
const COST_UNITS = { mflops: "MFLOPs", adaptive_mflops: "MFLOPs", params: "parameters" };

// The (dataset, teacher identity) a Pareto page shows: the one named in the address, else the
// newest of the named dataset, else the latest job's (the service's default). Never a mixture.
function pickGroup(groups, q) {
  const d = q.get("dataset"), t = q.get("teacher"), dflt = groups.default;
  if (!d && !t) return groups.groups.find((g) => dflt && g.dataset === dflt.dataset && g.teacher === dflt.teacher) || null;
  return groups.groups.find((g) => (!d || g.dataset === d) && (!t || g.teacher === t)) || null;
}

async function paretoPage(params) {
  const q = new URLSearchParams(params);
  const cost = q.get("cost") || "mflops";
  const groups = await json("/v1/architectures/groups");
  const group = pickGroup(groups, q);
  const label = (g) => `${g.dataset} · teacher ${g.teacher} (${g.ranked} with D_v accuracy)`;
  $main().innerHTML = `<h2>Pareto front: D_v accuracy against cost</h2>
    <form class="filters" id="pf"><label>dataset and teacher <select name="group">${groups.groups.map((g, i) =>
        `<option value="${i}" ${g === group ? "selected" : ""}>${esc(label(g))}</option>`).join("")
        || `<option value="">no architectures yet</option>`}</select></label>
      <label>cost <select name="cost">${Object.entries(COSTS).map(([k, v]) =>
        `<option value="${k}" ${k === cost ? "selected" : ""}>${v}</option>`).join("")}</select></label></form>
    <p id="pareto-info" class="muted"></p><div class="card chart tall"><canvas id="pareto"></canvas></div>
    <p class="muted">One dataset and one teacher at a time: accuracies of different teachers or datasets are not compared.
      The front ranks on D_v accuracy (drawn from the training set); test accuracy is shown beside it, never ranked on.
      Hover a point for its job, architecture and both accuracies; click it to open the job.</p>`;
  document.getElementById("pf").onchange = (e) => {
    const f = new FormData(e.currentTarget), g = groups.groups[+f.get("group")];
    const to = new URLSearchParams(g ? { dataset: g.dataset, teacher: g.teacher } : {});
    to.set("cost", f.get("cost"));
    location.hash = `#/pareto?${to}`;
  };
  const info = document.getElementById("pareto-info");
  if (!group) {
    info.textContent = groups.groups.length
      ? `No architectures of ${[q.get("dataset"), q.get("teacher")].filter(Boolean).join(" with teacher ")}; choose another above.`
      : "No architectures yet: a finished job stores its students here.";
    return;
  }
  const f = new URLSearchParams({ dataset: group.dataset, teacher: group.teacher, cost });
  const [all, front] = await Promise.all([
    json(`/v1/architectures/points?${f}`),
    json(`/v1/pareto?${f}`),
  ]);
  const points = [];
  all.id.forEach((id, i) => {
    if (all.val_accuracy[i] == null) return; // stored before D_v accuracy was recorded
    points.push({ x: all.cost[i], y: 100 * all.val_accuracy[i], a: { job_id: all.job_id[i], stage: all.stage[i],
      arch: all.arch[i], val_accuracy: all.val_accuracy[i], accuracy: all.accuracy[i] } });
  });
  const frontPts = front.front.map((a) => ({ x: a[cost], y: 100 * a.val_accuracy, a })).sort((p, r) => p.x - r.x);
  const unranked = all.id.length - points.length;
  info.textContent = `${group.dataset}, teacher ${group.teacher}: ${points.length} architectures (the teacher left out), `
    + `${frontPts.length} on the front` + (unranked ? `; ${unranked} stored before D_v accuracy was recorded are not drawn` : "")
    + (groups.groups.length > 1 ? `; ${groups.groups.length - 1} other dataset or teacher to choose above` : "");
  chart(document.getElementById("pareto"), {
    type: "scatter",
    data: { datasets: [
      { label: "front (D_v)", data: frontPts, showLine: true, stepped: "before", borderColor: "#dc2626",
        backgroundColor: "#dc2626", pointRadius: 4 },
      { label: "architectures", data: points, backgroundColor: "rgba(37,99,235,.45)", pointRadius: 2.5 },
    ] },
    options: {
      scales: { x: costAxis(points.map((p) => p.x), cost, COSTS[cost]), y: percentAxis(points.map((p) => p.y), "D_v accuracy (%)") },
      plugins: { tooltip: { callbacks: { label: (c) => {
        const a = c.raw.a;
        return `job ${a.job_id ?? "-"} · ${a.stage} · ${a.arch}: D_v ${pct(a.val_accuracy)}, test ${pct(a.accuracy)} at ${costText(cost, c.raw.x)} ${COST_UNITS[cost]}`;
      } } } },
      onClick: (_, els, ch) => {
        if (!els.length) return;
        const a = ch.data.datasets[els[0].datasetIndex].data[els[0].index].a;
        if (a.job_id != null) location.hash = `#/job/${a.job_id}`;
      },
    },
  });
}

// -- sweeps ------------------------------------------------------------------------------------

async function sweepsPage() {
  const list = await json("/v1/sweeps");
  $main().innerHTML = `<h2>Sweeps</h2>${list.sweeps.length ? `<table id="sweeps"><thead><tr><th>id</th><th>name</th>
    <th>state</th><th>dataset</th><th>cost</th><th>sampler</th><th class="num">trials</th><th>trial states</th></tr></thead><tbody>
    ${list.sweeps.map((s) => `<tr><td><a href="#/sweep/${s.id}">${s.id}</a></td><td>${esc(s.name)}</td><td>${badge(s.state)}</td>
      <td>${esc(s.dataset)}</td><td>${esc(s.cost)}</td><td>${esc(s.sampler)}</td><td class="num">${s.trials}</td>
      <td>${esc(Object.entries(s.trial_states).map(([k, v]) => `${k} ${v}`).join(", "))}</td></tr>`).join("")}
    </tbody></table>` : `<p class="muted">No sweep yet: <code>reskd sweep configs/digits-sweep.yaml</code> starts one.</p>`}`;
}

async function sweepPage(id) {
  const [s, front] = await Promise.all([json(`/v1/sweeps/${id}`), json(`/v1/sweeps/${id}/pareto`)]);
  const params = [...new Set(s.trial_list.flatMap((t) => Object.keys(t.params)))];
  $main().innerHTML = `<h2>Sweep ${s.id}${s.name ? ` · ${esc(s.name)}` : ""}</h2>
    <p>${badge(s.state)} ${esc(s.dataset)}, ${s.trials} trials, ${esc(s.sampler)}, cost ${esc(s.cost)}.
      Optuna study <code>${esc(s.study_name)}</code>: ${s.optuna_dashboard
        ? `<a id="optuna-link" href="${esc(s.optuna_dashboard)}" target="_blank" rel="noopener">open it in optuna-dashboard</a>`
        : `<code>optuna-dashboard &lt;the service's database URL&gt;</code> opens it in optuna-dashboard
           (with <code>RESKD_OPTUNA_DASHBOARD_URL</code> set, this is a link)`}.</p>
    <div class="grid2"><div class="card chart"><canvas id="sweep-front"></canvas></div>
    <div><table id="trials"><thead><tr><th>#</th><th>state</th>${params.map((p) => `<th>${esc(p)}</th>`).join("")}
      <th class="num" title="the objective">D_v accuracy</th><th class="num" title="reported, never an objective">test accuracy</th>
      <th class="num">${esc(s.cost)}</th><th>job</th></tr></thead><tbody>
      ${s.trial_list.map((t) => `<tr><td>${t.number}</td><td>${badge(t.state)}</td>${params.map((p) =>
        `<td>${esc(typeof t.params[p] === "number" ? +t.params[p].toPrecision(4) : t.params[p])}</td>`).join("")}
        <td class="num">${pct(t.val_accuracy)}</td><td class="num">${pct(t.accuracy)}</td><td class="num">${costText(s.cost, t.cost)}</td>
        <td>${t.job_id ? `<a href="#/job/${t.job_id}">${t.job_id}</a> ${esc(t.job_state)}` : ""}</td></tr>`).join("")}
      </tbody></table><p class="muted">The front ranks trials on the D_v accuracy of S_n (the sweep's objective);
        test accuracy is shown beside it, never ranked on.${front.unranked ? ` ${front.unranked} complete trials without a D_v accuracy are not ranked.` : ""}</p></div></div>`;
  // in order of cost: with parsing off, Chart.js takes the data as sorted on x (its range, its hover)
  const pts = (ts) => ts.filter((t) => t.val_accuracy != null).map((t) => ({ x: t.cost, y: 100 * t.val_accuracy, t }))
    .sort((a, b) => a.x - b.x);
  chart(document.getElementById("sweep-front"), { type: "scatter", data: { datasets: [
    { label: "front (D_v)", data: pts(front.front), showLine: true, stepped: "before",
      borderColor: "#dc2626", backgroundColor: "#dc2626", pointRadius: 4 },
    { label: "trials", data: pts(s.trial_list), backgroundColor: "rgba(37,99,235,.5)", pointRadius: 3 },
  ] }, options: { parsing: false, scales: { x: costAxis(pts(s.trial_list).map((p) => p.x), s.cost, COSTS[s.cost] || s.cost),
      y: percentAxis(pts(s.trial_list).map((p) => p.y), "D_v accuracy of S_n (%)") },
    plugins: { tooltip: { callbacks: { label: (c) => `trial ${c.raw.t.number}: D_v ${pct(c.raw.t.val_accuracy)}, test ${pct(c.raw.t.accuracy)} at ${costText(s.cost, c.raw.x)} ${COST_UNITS[s.cost] || ""}` } } } } });
}

// -- submit ------------------------------------------------------------------------------------

function lineOf(text, loc) {
  // the line of a field given as a path of keys (list indices skipped), in JSON ("key":) or
  // YAML (key:): each key searched after the previous one's line
  const lines = text.split("\n");
  let at = 0;
  for (const key of loc.filter((k) => typeof k === "string")) {
    const k = key.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    const field = new RegExp(`"${k}"\\s*:|(^|[\\s{,-])${k}\\s*:`);
    const i = lines.findIndex((l, n) => n >= at && field.test(l));
    if (i < 0) break;
    at = i;
  }
  return at;
}

// The config in the editor, YAML or JSON (JSON is YAML); a syntax error carries its 0-based line.
function parseConfig(text) {
  try {
    return { config: jsyaml.load(text) };
  } catch (e) {
    const line = e.mark ? e.mark.line : null;
    return { error: e.reason || e.message, line };
  }
}

async function submitPage() {
  const examples = await json("/v1/examples").catch(() => ({ examples: [] }));
  $main().innerHTML = `<h2>Submit a job</h2>
    <div class="filters"><label>start from <select id="example">${examples.examples.map((e, i) =>
      `<option value="${i}">${esc(e.name)}</option>`).join("")}<option value="-1">empty</option></select></label>
      <label>kind <select id="kind"><option>reskd</option><option>search</option><option>finetune</option><option>distill</option></select></label>
      <label>name <input id="job-name" size="24"></label>
      <label title="claims take higher priorities first, then the user who used least device time">priority
        <input id="priority" type="number" min="-100" max="100" step="1" value="0"></label>
      <button class="primary" id="submit" ${mayWrite() ? "" : "disabled"}>Submit</button>
      ${mayWrite() ? "" : `<span class="muted" id="read-only">${esc(me.name)} is a viewer: a viewer may only read</span>`}</div>
    <div class="grid2"><div class="editor"><div class="gutter" id="gutter"></div><textarea id="config" spellcheck="false"></textarea></div>
      <div><p class="muted">The run config as YAML or JSON: the fields of <code>reskd run</code>'s YAML, so a file
        from <code>configs/</code> can be pasted as it is. Errors appear here and against their line.</p>
        <ul class="field-errors" id="errors"></ul></div></div>`;
  const area = document.getElementById("config"), gutter = document.getElementById("gutter");
  const errors = document.getElementById("errors");
  let bad = new Map();
  const drawGutter = () => {
    const n = area.value.split("\n").length;
    area.rows = n + 1;
    gutter.innerHTML = Array.from({ length: n }, (_, i) =>
      `<div class="${bad.has(i) ? "bad" : ""}" title="${esc(bad.get(i) || "")}">${i + 1}</div>`).join("");
  };
  // select a line of the editor and scroll to it
  const showLine = (line) => {
    const lines = area.value.split("\n");
    const start = lines.slice(0, line).reduce((n, l) => n + l.length + 1, 0);
    area.focus();
    area.setSelectionRange(start, start + (lines[line] || "").length);
    const row = gutter.children[line];
    if (row) row.scrollIntoView({ block: "center" });
  };
  const pick = () => {
    const i = +document.getElementById("example").value;
    area.value = i >= 0 ? JSON.stringify(examples.examples[i].config, null, 2) : "{\n}";
    bad = new Map(); errors.innerHTML = ""; drawGutter();
  };
  document.getElementById("example").onchange = pick;
  area.oninput = drawGutter;
  errors.onclick = (e) => {
    const li = e.target.closest("li[data-line]");
    if (li && li.dataset.line !== "") showLine(+li.dataset.line);
  };
  pick();
  document.getElementById("submit").onclick = async () => {
    bad = new Map(); errors.innerHTML = "";
    const parsed = parseConfig(area.value);
    if (parsed.error) {
      const at = parsed.line != null ? `line ${parsed.line + 1}: ` : "";
      if (parsed.line != null) bad.set(parsed.line, parsed.error);
      errors.innerHTML = `<li class="error" data-line="${parsed.line ?? ""}">Not YAML or JSON: ${esc(at + parsed.error)}</li>`;
      drawGutter();
      if (parsed.line != null) showLine(parsed.line);
      return;
    }
    const config = parsed.config;
    if (config === null || typeof config !== "object" || Array.isArray(config)) {
      errors.innerHTML = `<li class="error" data-line="">The config must be a mapping of fields (dataset: …, teacher: …).</li>`;
      drawGutter(); return;
    }
    const body = { kind: document.getElementById("kind").value, config };
    const name = document.getElementById("job-name").value.trim();
    if (name) body.name = name;
    const priority = Number(document.getElementById("priority").value || 0);
    if (priority) body.priority = priority;
    const r = await api("/v1/jobs", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const out = await r.json().catch(() => ({}));
    if (r.ok) { location.hash = `#/job/${out.id}`; return; }
    const list = Array.isArray(out.detail) ? out.detail : [{ loc: [], msg: out.detail || r.statusText }];
    errors.innerHTML = list.map((e) => {
      const loc = (e.loc || []).filter((k) => k !== "body");
      const inConfig = loc[0] === "config" ? loc.slice(1) : loc;
      const line = loc[0] === "config" ? lineOf(area.value, inConfig) : null;
      if (line != null) bad.set(line, e.msg);
      return `<li class="error" data-line="${line ?? ""}"><code>${esc(loc.join("."))}</code>${line != null ? ` (line ${line + 1})` : ""}: ${esc(e.msg)}</li>`;
    }).join("");
    drawGutter();
  };
}

// -- routing -----------------------------------------------------------------------------------

async function route() {
  cleanup.forEach((f) => f());
  cleanup = [];
  const [path, query] = (location.hash.slice(1) || "/jobs").split("?");
  const parts = path.split("/").filter(Boolean);
  document.querySelectorAll("header nav a[data-page]").forEach((a) =>
    a.classList.toggle("active", a.dataset.page === parts[0] || (parts[0] === "job" && a.dataset.page === "jobs")
      || (parts[0] === "sweep" && a.dataset.page === "sweeps")));
  const params = Object.fromEntries(new URLSearchParams(query || ""));
  try {
    if (parts[0] === "job" && parts[1]) await jobPage(parts[1]);
    else if (parts[0] === "pareto") await paretoPage(params);
    else if (parts[0] === "sweeps") await sweepsPage();
    else if (parts[0] === "sweep" && parts[1]) await sweepPage(parts[1]);
    else if (parts[0] === "submit") await submitPage();
    else await jobsPage(params);
  } catch (e) {
    $main().innerHTML = `<p class="error">${esc(e.message)}</p>`;
  }
  // first paint of the page with its data (the tests read it: performance.getEntriesByName)
  performance.mark("reskd-painted");
  document.body.dataset.painted = parts[0] || "jobs";
}

async function health() {
  const h = await fetch("/v1/health").then((r) => r.json()).catch(() => null);
  document.getElementById("health").textContent = h ? `${h.database} · ${h.queued} queued · ${h.running} running` : "service unreachable";
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", async () => {
  health();
  setInterval(health, 10000);
  await whoami(); // first: who it is decides what the pages offer
  route();
});
