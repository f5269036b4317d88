// llm-tuning board: the Data, Evaluate, Chat & mix and SDE tabs.
function options(list, selected) { return list.map((v) => `<option ${v === selected ? "selected" : ""}>${esc(v)}</option>`).join(""); }

// ---- Data: a file as the CLI reads it, rendered with the template, the trained span marked
async function loadDataFiles(selected) {
  const files = (await api("/api/files?kind=data")).files;
  $("data-file").innerHTML = options(files, selected);
}
async function previewData() {
  fail("data-error");
  const body = { path: $("data-file").value, model: $("data-model").value, prompt_key: $("data-prompt").value,
    target_key: $("data-target").value, template: $("data-template").value, max_seq_length: +$("data-maxlen").value };
  $("data-summary").textContent = "reading…";
  let r;
  try { r = await api("/api/data/preview", body); } catch (e) { $("data-summary").textContent = ""; return fail("data-error", e); }
  if (r.error) { $("data-summary").textContent = ""; return fail("data-error", r.error); }
  for (const [id, value] of [["data-prompt", body.prompt_key], ["data-target", body.target_key]])
    $(id).innerHTML = options([...new Set([value, ...r.fields])], value);
  const formats = Object.entries(r.formats).map(([k, v]) => `${k}: ${v}`).join(", ") || "none";
  $("data-summary").innerHTML = `${r.rows} rows; format ${esc(formats)}; ${r.bad_count} bad; longest ${r.longest} tokens; ` +
    `<b id="data-overlength">${r.overlength}</b> over --max_seq_length ${r.max_seq_length}` + (r.file_error ? `; stopped at: ${esc(r.file_error)}` : "");
  $("data-samples").innerHTML = r.samples.map((s) => `<div class="sample"><span class="meta">row ${s.row}, ${s.tokens} tokens</span>\n` +
    s.segments.map((g) => g.trained ? `<mark>${esc(g.text)}</mark>` : esc(g.text)).join("") + "</div>").join("");
  const h = r.histogram, max = Math.max(1, ...h.map((b) => b.count)), W = 300, bw = h.length ? W / h.length : W;
  $("data-hist").innerHTML = `<svg width="${W + 10}" height="130"><text x="0" y="10">tokens per row</text>` + h.map((b, i) =>
    `<rect x="${i * bw}" y="${115 - (100 * b.count) / max}" width="${bw - 1}" height="${(100 * b.count) / max}" fill="${b.from > r.max_seq_length ? "#dc2626" : "#2563eb"}"><title>${b.from}-${b.to}: ${b.count}</title></rect>`).join("") +
    (h.length ? `<text x="0" y="127">${h[0].from}</text><text x="${W - 30}" y="127">${h[h.length - 1].to}</text>` : "") + "</svg>";
  $("data-bad").innerHTML = r.bad.length ? "<h4>bad rows</h4>" + r.bad.map((b) => `<div class="error">${esc(b.error)}</div>`).join("") : "";
}
$("data-preview").onclick = previewData;
$("data-file").onchange = previewData;
$("data-upload").onchange = async (ev) => {
  const file = ev.target.files[0];
  if (!file) return;
  try { const r = await api("/api/upload", { name: file.name, text: await file.text() }); await loadDataFiles(r.path); previewData(); }
  catch (e) { fail("data-error", e); }
};
$("data-use").onclick = () => {
  setFormValues("train-form", { data: [$("data-file").value], prompt_key: $("data-prompt").value, target_key: $("data-target").value,
    model: $("data-model").value, template: $("data-template").value });
  show("train");
};

// ---- Evaluate: `llm-tuning eval` as a job, its table and a bar chart
function markdown(text) {
  const out = [];
  let table = null;
  for (const line of text.split("\n")) {
    if (line.trim().startsWith("|")) {
      const cells = line.trim().replace(/^\||\|$/g, "").split("|").map((c) => c.trim());
      if (cells.every((c) => /^:?-+:?$/.test(c))) continue;
      (table = table || []).push(cells);
      continue;
    }
    if (table) { out.push("<table>" + table.map((r, i) => "<tr>" + r.map((c) => `<${i ? "td" : "th"}>${esc(c).replace(/&lt;br&gt;/g, "<br>")}</${i ? "td" : "th"}>`).join("") + "</tr>").join("") + "</table>"); table = null; }
    if (/^#+ /.test(line)) out.push(`<h4>${esc(line.replace(/^#+ /, ""))}</h4>`); else if (line.trim()) out.push(`<p>${esc(line)}</p>`);
  }
  if (table) out.push("<table>" + table.map((r, i) => "<tr>" + r.map((c) => `<${i ? "td" : "th"}>${esc(c)}</${i ? "td" : "th"}>`).join("") + "</tr>").join("") + "</table>");
  return out.join("");
}
async function images(list) {
  const tags = [];
  for (const path of list) {
    const r = await fetch("/api/file?path=" + encodeURIComponent(path), { headers: headers() });
    if (r.ok) tags.push(`<img class="report" alt="${esc(path)}" src="${URL.createObjectURL(await r.blob())}">`);
  }
  return tags.join("");
}
async function loadReports() {
  const r = await api("/api/reports");
  $("eval-report").innerHTML = options(["", ...r.eval], $("eval-report").value);
  $("sde-report").innerHTML = options(["", ...r.sde], $("sde-report").value);
}
// one small bar panel per metric: each variant's score (eval.json "scores": {variant: {metric: value}})
function scoreChart(scores) {
  const variants = Object.keys(scores || {});
  if (!variants.length) return "";
  const metrics = Object.keys(scores[variants[0]]).filter((m) => variants.every((v) => typeof scores[v][m] === "number"));
  const colors = ["#6b7280", "#2563eb", "#d97706", "#15803d", "#9333ea", "#dc2626"];
  return '<div class="row" id="eval-chart">' + metrics.map((m) => {
    const max = Math.max(1e-9, ...variants.map((v) => Math.abs(scores[v][m])));
    return `<svg width="${40 + 46 * variants.length}" height="130"><text x="2" y="10">${esc(m)}</text>` + variants.map((v, i) =>
      `<rect x="${20 + 46 * i}" y="${112 - (90 * Math.abs(scores[v][m])) / max}" width="36" height="${(90 * Math.abs(scores[v][m])) / max}" fill="${colors[i % colors.length]}"><title>${esc(v)}: ${scores[v][m]}</title></rect>` +
      `<text x="${20 + 46 * i}" y="${108 - (90 * Math.abs(scores[v][m])) / max}">${Number(scores[v][m]).toPrecision(3)}</text><text x="${20 + 46 * i}" y="125">${esc(v.slice(0, 8))}</text>`).join("") + "</svg>";
  }).join("") + "</div>";
}
async function showEval(path) {
  if (!path) return ($("eval-view").innerHTML = "");
  const r = await api("/api/report?path=" + encodeURIComponent(path));
  $("eval-view").innerHTML = scoreChart(r.json?.scores) + markdown(r.markdown || "") + (await images(r.images));
}
$("eval-report").onchange = () => showEval($("eval-report").value);
$("eval-command-pick").onchange = async () => {
  const command = $("eval-command-pick").value;
  $("eval-form").replaceWith(Object.assign(document.createElement("form"), { id: "eval-form" }));
  await buildForm(command, "eval-form", () => showCommand(command, "eval-form", "eval-command", "eval-error"));
  setFormValues("eval-form", { model: board.info.model });
};
$("eval-start").onclick = () => { const c = $("eval-command-pick").value; startJob(c, "eval-form", "eval-error", c + " " + (formValues("eval-form").adapter || []).join(" ")); };

// ---- Chat & mix: base model, adapters with weight sliders, side-by-side answers, a streamed chat, save/merge
function selection() {
  const adapters = [...document.querySelectorAll("#chat-adapters .adapter")].filter((d) => d.querySelector("input[type=checkbox]").checked)
    .map((d) => ({ path: d.dataset.path, weight: +d.querySelector("input[type=range]").value }));
  return { model: $("chat-model").value, adapters, max_new_tokens: +$("chat-tokens").value };
}
async function loadAdapters() {
  const list = (await api("/api/adapters")).adapters;
  $("chat-adapters").innerHTML = list.map((p, i) => `<div class="adapter" data-path="${esc(p)}"><input type="checkbox" id="ad-${i}">` +
    `<label for="ad-${i}" style="width:16em">${esc(p)}</label><input type="range" min="0" max="2" step="0.05" value="1" id="w-${i}"><span id="wv-${i}">1.00</span></div>`).join("") || '<span class="meta">no adapter folders under the working folder yet: train one</span>';
  document.querySelectorAll("#chat-adapters input[type=range]").forEach((r) => r.addEventListener("input", () => { $("wv-" + r.id.slice(2)).textContent = (+r.value).toFixed(2); variants(); }));
  $("chat-adapters").onchange = variants;
  variants();
}
function variants() {
  const s = selection(), names = ["base", ...s.adapters.map((a) => a.path.replace(/\W/g, "_"))];
  if (s.adapters.length > 1 || (s.adapters.length === 1 && s.adapters[0].weight !== 1)) names.push("mix");
  $("chat-variant").innerHTML = options(names, names[names.length - 1]);
}
$("chat-refresh").onclick = loadAdapters;
$("chat-compare").onclick = async () => {
  fail("chat-error");
  $("chat-answers").innerHTML = '<span class="meta">generating (the first call loads the model)…</span>';
  try {
    const r = await api("/api/chat/compare", { ...selection(), prompt: $("chat-prompt").value });
    $("chat-answers").innerHTML = r.variants.map((v) => `<div class="card" data-variant="${esc(v)}"><b>${esc(v)}</b>${esc(r.answers[v])}</div>`).join("");
  } catch (e) { $("chat-answers").innerHTML = ""; fail("chat-error", e); }
};
const chatHistory = [];
function bubble(role, text) { const d = document.createElement("div"); d.className = "msg " + role; d.textContent = text; $("chat-log").appendChild(d); return d; }
async function send() {
  const text = $("chat-input").value.trim();
  if (!text) return;
  $("chat-input").value = ""; fail("chat-error");
  chatHistory.push({ role: "user", content: text }); bubble("user", text);
  const out = bubble("assistant", "");
  try {
    const r = await fetch("/api/chat/stream", { method: "POST", headers: headers(), body: JSON.stringify({ ...selection(), variant: $("chat-variant").value, messages: chatHistory }) });
    if (!r.ok) throw new Error((await r.json()).error);
    const reader = r.body.getReader(), dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const event = JSON.parse(buf.slice(0, cut).replace(/^data: /, "")); buf = buf.slice(cut + 2);
        if (event.text) out.textContent += event.text;
        if (event.error) fail("chat-error", event.error);
        if (event.done) out.dataset.done = event.variant;
      }
    }
    chatHistory.push({ role: "assistant", content: out.textContent });
  } catch (e) { out.remove(); chatHistory.pop(); fail("chat-error", e); }
}
$("chat-send").onclick = send;
$("chat-input").addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); send(); } });
$("chat-clear").onclick = () => { chatHistory.length = 0; $("chat-log").innerHTML = ""; };
async function saveMix(command) {
  try { const r = await api("/api/chat/save", { ...selection(), command, output: $("save-output").value }); $("save-status").textContent = `${command} job ${r.id} started (see Train → runs)`; selectJob(r.id); }
  catch (e) { $("save-status").textContent = String(e.message); }
}
$("save-mix").onclick = () => saveMix("mix");
$("save-merge").onclick = () => saveMix("merge");

// ---- SDE: a grid's report.md / report.png and the per-design predictions
$("sde-report").onchange = async () => {
  $("sde-rows").innerHTML = "";
  if (!$("sde-report").value) return ($("sde-view").innerHTML = "");
  const r = await api("/api/report?path=" + encodeURIComponent($("sde-report").value));
  $("sde-view").innerHTML = markdown(r.markdown || "") + (await images(r.images)) +
    "<h4>predictions</h4>" + r.predictions.map((p) => `<button class="pred" data-path="${esc(p)}">${esc(p)}</button>`).join(" ");
  document.querySelectorAll("button.pred").forEach((b) => (b.onclick = async () => {
    const rows = (await api("/api/rows?limit=30&path=" + encodeURIComponent(b.dataset.path))).rows;
    const keys = [...new Set(rows.flatMap((x) => Object.keys(x)))];
    $("sde-rows").innerHTML = `<h4>${esc(b.dataset.path)}</h4><table><tr>${keys.map((k) => `<th>${esc(k)}</th>`).join("")}</tr>` +
      rows.map((x) => "<tr>" + keys.map((k) => `<td>${esc(typeof x[k] === "object" ? JSON.stringify(x[k]) : x[k])}</td>`).join("") + "</tr>").join("") + "</table>";
  }));
};

async function initTabs() {
  $("data-model").value = $("chat-model").value = board.info.model;
  await loadDataFiles($("data-file").value);
  if (!board.forms["eval-form"]) {
    await buildForm("eval", "eval-form", () => showCommand("eval", "eval-form", "eval-command", "eval-error"));
    setFormValues("eval-form", { model: board.info.model });
  }
  board.onShow = { chat: loadAdapters, eval: loadReports, sde: loadReports, data: () => loadDataFiles($("data-file").value) };
}
init();
