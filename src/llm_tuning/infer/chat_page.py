"""The chat page `llm-tuning serve` shows at `/`: plain HTML and JavaScript, nothing fetched from a CDN.

It lists /v1/models, streams /v1/chat/completions with fetch, and keeps the API key in localStorage.
Query parameters fill the form: `/?model=math&temperature=0&q=What+is+2+%2B+3%3F` asks at once.
"""

CHAT_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>llm-tuning chat</title>
<style>
  body { font: 15px/1.45 system-ui, sans-serif; margin: 0; display: flex; flex-direction: column; height: 100vh; }
  header, footer { padding: 8px 12px; background: #f3f4f6; display: flex; gap: 10px; flex-wrap: wrap; align-items: center; }
  header label { font-size: 13px; color: #374151; }
  input, select, textarea, button { font: inherit; }
  #log { flex: 1; overflow-y: auto; padding: 12px; }
  .msg { max-width: 46em; margin: 6px 0; padding: 8px 12px; border-radius: 10px; white-space: pre-wrap; }
  .user { background: #dbeafe; margin-left: auto; }
  .assistant { background: #f3f4f6; }
  .error { background: #fee2e2; }
  .meta { font-size: 12px; color: #6b7280; }
  textarea { flex: 1; min-height: 3em; }
</style>
</head>
<body>
<header>
  <label>model <select id="model"></select></label>
  <label>temperature <input id="temperature" type="number" min="0" max="2" step="0.1" value="0.7" style="width:4em"></label>
  <label>max tokens <input id="max_tokens" type="number" min="1" value="256" style="width:5em"></label>
  <label>system <input id="system" placeholder="(the template's own)" style="width:14em"></label>
  <label>API key <input id="key" type="password" style="width:9em"></label>
  <button id="clear" type="button">clear</button>
  <span id="status" class="meta"></span>
</header>
<div id="log"></div>
<footer>
  <textarea id="input" placeholder="Message (Enter sends, Shift+Enter for a new line)"></textarea>
  <button id="send" type="button">send</button>
  <button id="stop" type="button" disabled>stop</button>
</footer>
<script>
const $ = (id) => document.getElementById(id);
const history = [];
let controller = null;
$("key").value = localStorage.getItem("llm-tuning-key") || "";
$("key").addEventListener("change", () => { localStorage.setItem("llm-tuning-key", $("key").value); loadModels(); });

function headers() {
  const h = { "Content-Type": "application/json" };
  if ($("key").value) h["Authorization"] = "Bearer " + $("key").value;
  return h;
}

function bubble(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  div.textContent = text;
  $("log").appendChild(div);
  $("log").scrollTop = $("log").scrollHeight;
  return div;
}

async function errorText(response) {
  try { return (await response.json()).error.message; } catch (e) { return response.status + " " + response.statusText; }
}

async function loadModels() {
  const response = await fetch("/v1/models", { headers: headers() });
  if (!response.ok) { $("status").textContent = await errorText(response); return; }
  const wanted = new URLSearchParams(location.search).get("model") || $("model").value;
  $("model").innerHTML = "";
  for (const m of (await response.json()).data) {
    const option = document.createElement("option");
    option.value = option.textContent = m.id;
    $("model").appendChild(option);
  }
  if (wanted) $("model").value = wanted;
  $("status").textContent = "";
}

async function send() {
  const text = $("input").value.trim();
  if (!text || controller) return;
  $("input").value = "";
  history.push({ role: "user", content: text });
  bubble("user", text);
  const reply = bubble("assistant", "");
  const messages = $("system").value ? [{ role: "system", content: $("system").value }, ...history] : history;
  controller = new AbortController();
  $("send").disabled = true; $("stop").disabled = false;
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), signal: controller.signal,
      body: JSON.stringify({ model: $("model").value, messages, stream: true,
        temperature: Number($("temperature").value), max_tokens: Number($("max_tokens").value),
        stream_options: { include_usage: true } }),
    });
    if (!response.ok) throw new Error(await errorText(response));
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      const events = buffer.split("\\n\\n");
      buffer = events.pop();
      for (const event of events) {
        const data = event.replace(/^data: /, "");
        if (data === "[DONE]") continue;
        const parsed = JSON.parse(data);
        if (parsed.error) throw new Error(parsed.error.message);
        if (parsed.usage) $("status").textContent = parsed.usage.prompt_tokens + " prompt + " + parsed.usage.completion_tokens + " reply tokens";
        for (const choice of parsed.choices) reply.textContent += choice.delta.content || "";
      }
    }
    history.push({ role: "assistant", content: reply.textContent });
    reply.dataset.done = "true";
  } catch (err) {
    if (err.name !== "AbortError") { reply.className = "msg error"; reply.textContent = String(err.message || err); }
    history.pop();
  } finally {
    controller = null;
    $("send").disabled = false; $("stop").disabled = true;
  }
}

$("send").addEventListener("click", send);
$("stop").addEventListener("click", () => controller && controller.abort());
$("clear").addEventListener("click", () => { history.length = 0; $("log").innerHTML = ""; });
$("input").addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); send(); } });

(async () => {
  const params = new URLSearchParams(location.search);
  for (const name of ["temperature", "max_tokens", "system"]) if (params.has(name)) $(name).value = params.get(name);
  await loadModels();
  if (params.get("q")) { $("input").value = params.get("q"); await send(); }
})();
</script>
</body>
</html>
"""
