// llm-tuning board: shared helpers, generated forms, the Train tab and the job list (no framework, no build).
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
const board = { forms: {}, jobId: localStorage.getItem("board-job"), info: {} };
$("key").value = localStorage.getItem("board-key") || "";
$("key").addEventListener("change", () => { localStorage.setItem("board-key", $("key").value); init(); });

function headers() {
  const h = { "Content-Type": "application/json" };
  if ($("key").value) h["Authorization"] = "Bearer " + $("key").value;
  return h;
}
async function api(path, body) {
  const opts = body === undefined ? { headers: headers() } : { method: "POST", headers: headers(), body: JSON.stringify(body) };
  const r = await fetch(path, opts);
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data.error?.message || data.error || r.statusText);
  return data;
}
function fail(id, err) { $(id).textContent = err ? String(err.message || err) : ""; }

// tabs: the hash remembers the tab across reloads
function show(tab) {
  document.querySelectorAll("nav button").forEach((b) => b.classList.toggle("on", b.dataset.tab === tab));
  document.querySelectorAll("main section").forEach((s) => s.classList.toggle("on", s.id === "tab-" + tab));
  location.hash = tab;
  $(tab === "eval" ? "eval-job-slot" : "train-job-slot").appendChild($("job-detail"));  // one job view, where it is needed
  (board.onShow[tab] || (() => {}))();
}
board.onShow = {};
document.querySelectorAll("nav button").forEach((b) => b.addEventListener("click", () => show(b.dataset.tab)));

// a form generated from the command's config dataclass (GET /api/form/COMMAND): every flag, grouped as --help
function fieldInput(f) {
  const id = `${f.form}-${f.name}`, def = f.default ?? "";
  if (f.kind === "bool") return `<input type="checkbox" id="${id}" ${f.default ? "checked" : ""}>`;
  if (f.choices) return `<select id="${id}">${f.choices.map((c) => `<option ${c === f.default ? "selected" : ""}>${esc(c)}</option>`).join("")}</select>`;
  if (f.kind === "dict") return `<textarea id="${id}" rows="1" disabled placeholder="in a YAML recipe"></textarea>`;
  const value = f.kind === "list" ? (def || []).join(", ") : def;
  return `<input type="text" id="${id}" list="files" value="${esc(value)}" placeholder="${f.optional ? "(none)" : ""}">`;
}
async function buildForm(command, formId, onChange) {
  const spec = await api("/api/form/" + command);
  board.forms[formId] = spec;
  $(formId).innerHTML = spec.groups.map((g, i) => `<details ${i === 0 ? "open" : ""}><summary>${esc(g.title)} (${g.fields.length})</summary>` +
    g.fields.map((f) => { f.form = formId; return `<div class="field" title="${esc(f.help)}"><label for="${formId}-${f.name}">--${esc(f.name)}</label>${fieldInput(f)}<span class="help">${esc(f.help)} (default: ${esc(JSON.stringify(f.default))})</span></div>`; }).join("") +
    "</details>").join("");
  $(formId).addEventListener("input", onChange);
  $(formId).addEventListener("change", onChange);
}
function formFields(formId) { return board.forms[formId].groups.flatMap((g) => g.fields); }
function formValues(formId) {
  const values = {};
  for (const f of formFields(formId)) {
    const el = $(`${formId}-${f.name}`);
    if (f.kind === "dict") continue;
    if (f.kind === "bool") { if (el.checked !== f.default) values[f.name] = el.checked; continue; }
    const text = el.value.trim();
    if (f.kind === "list") { const items = text ? text.split(",").map((s) => s.trim()).filter(Boolean) : []; if (JSON.stringify(items) !== JSON.stringify(f.default || [])) values[f.name] = items; continue; }
    if (text !== String(f.default ?? "")) values[f.name] = text;
  }
  return values;
}
function setFormValues(formId, values) {
  for (const f of formFields(formId)) {
    if (!(f.name in values)) continue;
    const el = $(`${formId}-${f.name}`), v = values[f.name];
    if (f.kind === "bool") el.checked = !!v; else el.value = Array.isArray(v) ? v.join(", ") : (v ?? "");
  }
  $(formId).dispatchEvent(new Event("change"));
}
let commandTimer = {};
function showCommand(command, formId, outId, errId) {
  clearTimeout(commandTimer[formId]);
  commandTimer[formId] = setTimeout(async () => {
    try { $(outId).textContent = (await api("/api/command", { command, values: formValues(formId) })).shell; fail(errId); }
    catch (e) { $(outId).textContent = ""; fail(errId, e); }
  }, 250);
}
async function startJob(command, formId, errId, label) {
  try { const r = await api("/api/jobs", { command, values: formValues(formId), label }); fail(errId); selectJob(r.id); refreshJobs(); }
  catch (e) { fail(errId, e); }
}

// charts: one SVG line per series, drawn from the logged records
function chart(records, key, color, title) {
  const pts = records.filter((r) => typeof r[key] === "number");
  if (pts.length < 1) return "";
  const W = 420, H = 150, P = 34, xs = pts.map((r) => r.step), ys = pts.map((r) => r[key]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const X = (x) => P + (x1 > x0 ? (x - x0) / (x1 - x0) : 0.5) * (W - P - 8), Y = (y) => H - 18 - (y1 > y0 ? (y - y0) / (y1 - y0) : 0.5) * (H - 30);
  const line = pts.map((r) => `${X(r.step).toFixed(1)},${Y(r[key]).toFixed(1)}`).join(" ");
  return `<svg class="chart" data-key="${key}" width="${W}" height="${H}"><text x="${P}" y="10">${esc(title)} (${pts.length} points)</text>` +
    `<line x1="${P}" y1="${H - 18}" x2="${W - 8}" y2="${H - 18}" stroke="#9ca3af"/><line x1="${P}" y1="12" x2="${P}" y2="${H - 18}" stroke="#9ca3af"/>` +
    `<text x="2" y="${Y(y1) + 4}">${y1.toPrecision(3)}</text><text x="2" y="${Y(y0)}">${y0.toPrecision(3)}</text>` +
    `<text x="${P}" y="${H - 4}">step ${x0}</text><text x="${W - 60}" y="${H - 4}">step ${x1}</text>` +
    `<polyline fill="none" stroke="${color}" stroke-width="2" points="${line}"/>${pts.map((r) => `<circle cx="${X(r.step)}" cy="${Y(r[key])}" r="2" fill="${color}"/>`).join("")}</svg>`;
}
const clock = (s) => s == null ? "?" : `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, "0")}s`;

// jobs: the list and the selected job (kept in localStorage, so a reload reattaches to it)
async function refreshJobs() {
  let jobs = [];
  try { jobs = (await api("/api/jobs")).jobs; } catch (e) { return; }
  const row = (j) => `<tr class="job ${j.id === board.jobId ? "sel" : ""}" data-id="${j.id}"><td>${esc(j.label)}</td><td class="status-${j.status}">${j.status}${j.rc != null && j.rc !== 0 ? " (" + j.rc + ")" : ""}</td>` +
    `<td>${j.final_loss != null ? Number(j.final_loss).toFixed(4) : ""}</td><td>${esc(j.output_dir || "")}</td></tr>`;
  const table = (list) => `<table><tr><th>run</th><th>status</th><th>final loss</th><th>output folder</th></tr>${list.map(row).join("")}</table>`;
  $("jobs").innerHTML = table(jobs.filter((j) => !["eval", "forgetting"].includes(j.command)));
  $("eval-jobs").innerHTML = table(jobs.filter((j) => ["eval", "forgetting"].includes(j.command)));
  document.querySelectorAll("tr.job").forEach((tr) => tr.addEventListener("click", () => selectJob(tr.dataset.id)));
}
function selectJob(id) { board.jobId = id; localStorage.setItem("board-job", id); refreshJob(); }
async function refreshJob() {
  if (!board.jobId) return;
  let j;
  try { j = await api("/api/jobs/" + board.jobId); } catch (e) { $("job-detail").textContent = ""; return; }
  const p = j.progress, pct = p ? Math.round((100 * p.step) / p.total) : 0;
  $("job-detail").innerHTML = `<h3>${esc(j.label)} <span class="status-${j.status}" id="job-status">${j.status}</span></h3>` +
    `<pre class="command">${esc(j.shell)}</pre>` +
    (p ? `<div class="bar"><div style="width:${pct}%"></div></div><div class="meta" id="job-progress">step ${p.step}/${p.total} (${pct}%), elapsed ${clock(p.elapsed_s)}, ETA ${j.status === "running" ? clock(p.eta_s) : "-"}</div>` : "") +
    `<div class="row">${j.status === "running" ? '<button id="job-stop">Stop</button>' : ""}${["stopped", "failed", "lost"].includes(j.status) && j.command === "train" ? '<button id="job-resume">Resume from the last checkpoint</button>' : ""}` +
    `${j.adapter ? `<span class="meta" id="job-adapter">adapter: ${esc(j.output_dir)}</span>` : ""}</div>` +
    `<div class="row">${chart(j.records, "loss", "#2563eb", "training loss")}${chart(j.records, "learning_rate", "#d97706", "learning rate")}${chart(j.records, "eval_loss", "#15803d", "eval loss")}</div>` +
    `<pre class="log">${esc(j.log_tail)}</pre>`;
  if (j.command === "eval" && j.status === "done" && board.evalShown !== j.id && j.output_dir) {
    board.evalShown = j.id;  // a finished evaluation: show its table and chart in the Evaluate tab
    if (![...$("eval-report").options].some((o) => o.value === j.output_dir)) $("eval-report").add(new Option(j.output_dir, j.output_dir));
    $("eval-report").value = j.output_dir; showEval(j.output_dir);
  }
  const log = document.querySelector("#job-detail pre.log");
  log.scrollTop = log.scrollHeight;  // the newest lines, as a terminal shows them
  if ($("job-stop")) $("job-stop").onclick = () => api(`/api/jobs/${j.id}/stop`, {}).then(refreshJob);
  if ($("job-resume")) $("job-resume").onclick = () => api(`/api/jobs/${j.id}/resume`, {}).then((r) => selectJob(r.id));
}

async function init() {
  try { board.info = await api("/api/info"); } catch (e) { $("workdir").textContent = "API key needed: " + e.message; return; }
  $("workdir").textContent = board.info.workdir;
  const files = (await api("/api/files?kind=all")).files;
  document.body.insertAdjacentHTML("beforeend", `<datalist id="files">${files.map((f) => `<option value="${esc(f)}">`).join("")}</datalist>`);
  if (!board.forms["train-form"]) {
    await buildForm("train", "train-form", () => showCommand("train", "train-form", "train-command", "train-error"));
    setFormValues("train-form", { model: board.info.model });
  }
  const recipes = (await api("/api/files?kind=yaml")).files;
  $("recipe-file").innerHTML = recipes.map((f) => `<option>${esc(f)}</option>`).join("");
  refreshJobs(); refreshJob();
  await initTabs();
  show((location.hash || "#train").slice(1));
}
$("train-start").onclick = () => startJob("train", "train-form", "train-error", "train " + (formValues("train-form").output_dir || "weights/lora"));
$("recipe-load").onclick = async () => { try { setFormValues("train-form", (await api("/api/recipe/load", { path: $("recipe-file").value })).values); fail("train-error"); } catch (e) { fail("train-error", e); } };
$("recipe-save").onclick = async () => { try { const r = await api("/api/recipe/save", { path: $("recipe-name").value, values: formValues("train-form") }); fail("train-error", "saved " + r.path); } catch (e) { fail("train-error", e); } };
setInterval(() => { if (document.visibilityState === "visible") { refreshJobs(); refreshJob(); } }, 1500);
