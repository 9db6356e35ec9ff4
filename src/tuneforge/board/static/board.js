// The board's pages: plain JavaScript, no framework, no network beyond this server.
"use strict";
const Board = (() => {
  const COLORS = ["#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989"];

  function draw(svg, series) {
    // series: [{name, points: [[x, y], ...]}]; one polyline each, scaled to the box, with min/max labels
    const W = 600, H = 260, P = 36;
    const all = series.flatMap((s) => s.points).filter((p) => Number.isFinite(p[1]));
    svg.innerHTML = "";
    if (!all.length) return;
    const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
    const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1), y0 = Math.min(...ys), y1 = Math.max(...ys, y0 + 1e-9);
    const sx = (x) => P + ((x - x0) / (x1 - x0)) * (W - 2 * P);
    const sy = (y) => H - P - ((y - y0) / (y1 - y0)) * (H - 2 * P);
    const ns = "http://www.w3.org/2000/svg";
    const text = (x, y, s) => { const t = document.createElementNS(ns, "text"); t.setAttribute("x", x); t.setAttribute("y", y); t.setAttribute("font-size", "11"); t.textContent = s; svg.appendChild(t); return t; };
    text(2, P, y1.toPrecision(3)); text(2, H - P, y0.toPrecision(3)); text(P, H - 8, String(x0)); text(W - P - 20, H - 8, String(x1));
    series.forEach((s, i) => {
      const pts = s.points.filter((p) => Number.isFinite(p[1]));
      if (!pts.length) return;
      const path = document.createElementNS(ns, "path");
      path.setAttribute("d", pts.map((p, j) => `${j ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" "));
      path.setAttribute("stroke", COLORS[i % COLORS.length]);
      path.setAttribute("class", "series");
      path.dataset.points = String(pts.length);
      svg.appendChild(path);
      if (series.length > 1) text(W - 150, 14 + 13 * i, s.name).setAttribute("fill", COLORS[i % COLORS.length]);
    });
  }

  async function post(url, body) {
    const reply = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: body === undefined ? undefined : JSON.stringify(body) });
    return { status: reply.status, data: await reply.json().catch(() => ({})) };
  }

  function runPage(id) {
    document.body.dataset.run = id;
    const loss = [], lr = [];
    const log = document.getElementById("log");
    const status = document.getElementById("run-status");
    const source = new EventSource(`/api/runs/${id}/events`);
    const refresh = document.getElementById("synth-rows") ? setInterval(() => synthRows(id), 3000) : undefined;
    synthRows(id);
    source.addEventListener("metric", (e) => {
      const m = JSON.parse(e.data);
      if (m.loss === undefined) return;
      loss.push([m.step, m.loss]); lr.push([m.step, m.learning_rate]);
      draw(document.getElementById("loss-chart"), [{ name: "loss", points: loss }]);
      draw(document.getElementById("lr-chart"), [{ name: "learning_rate", points: lr }]);
      stageCharts(m);
    });
    source.addEventListener("log", (e) => { log.textContent += JSON.parse(e.data) + "\n"; log.scrollTop = log.scrollHeight; });
    source.addEventListener("status", (e) => {
      const s = JSON.parse(e.data);
      status.textContent = JSON.parse(status.dataset.labels || "{}")[s.status] || s.status; status.className = `status status-${s.status}`;
      if (s.reason) document.getElementById("run-reason").textContent = s.reason;
      if (["done", "failed", "stopped"].includes(s.status)) source.close();
      if (s.status === "done") { exportFiles(id); evalResults(id); if (Object.keys(stageSeries).length) showSamples(id); }
      if (["done", "failed", "stopped"].includes(s.status)) { clearInterval(refresh); synthRows(id); }
    });
    document.getElementById("stop").onclick = () => post(`/api/runs/${id}/stop`);
    document.getElementById("resume").onclick = async () => { await post(`/api/runs/${id}/resume`); location.reload(); };
  }

  // what the online stages log besides the loss: one chart per group, made when the first value arrives
  const STAGE_CHARTS = {
    reward: ["reward", "reward_std"], kl: ["kl"], completion_length: ["completion_length"],
    score: ["score/chosen", "score/rejected"], margins: ["rewards/margins"], ties: ["ties"],
  };
  const stageSeries = {};
  let samplesStep = -1, samplesAsked = 0;

  function stageCharts(m) {
    for (const [chart, keys] of Object.entries(STAGE_CHARTS)) {
      const present = keys.filter((k) => m[k] !== undefined);
      if (!present.length) continue;
      for (const k of present) (stageSeries[k] ||= []).push([m.step, m[k]]);
      let svg = document.getElementById(`chart-${chart}`);
      if (!svg) {
        const box = document.getElementById("stage-charts");
        const title = document.createElement("h2"); title.textContent = chart.replace("_", " ");
        svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
        svg.setAttribute("id", `chart-${chart}`); svg.setAttribute("class", "chart"); svg.setAttribute("viewBox", "0 0 600 260");
        box.append(title, svg);
      }
      draw(svg, keys.filter((k) => stageSeries[k]).map((k) => ({ name: k, points: stageSeries[k] })));
    }
    const online = ["reward", "score/chosen"].some((k) => m[k] !== undefined);
    const id = document.body.dataset.run;
    if (online && id && m.step !== samplesStep && Date.now() - samplesAsked > 2000) { samplesStep = m.step; samplesAsked = Date.now(); showSamples(id); }
  }

  async function showSamples(id) {
    const reply = await fetch(`/api/runs/${id}/samples?last=1`);
    if (reply.status !== 200) return;
    const lines = await reply.json();
    if (!lines.length) return;
    const { step, samples } = lines[lines.length - 1];
    const cell = (tag, text) => { const el = document.createElement(tag); el.textContent = text; return el; };
    const columns = Object.keys(samples[0] || {});
    const table = document.createElement("table");
    const head = document.createElement("tr");
    for (const c of ["step", ...columns]) head.appendChild(cell("th", c));
    table.appendChild(head);
    for (const row of samples) {
      const tr = document.createElement("tr");
      tr.appendChild(cell("td", String(step)));
      for (const c of columns) tr.appendChild(cell("td", String(row[c])));
      table.appendChild(tr);
    }
    document.getElementById("samples").replaceChildren(table);
    document.getElementById("samples-box").hidden = false;
  }

  function runsPage() {
    const button = document.getElementById("compare");
    if (!button) return;
    button.onclick = async () => {
      const ids = [...document.querySelectorAll(".compare:checked")].map((c) => c.value);
      const series = await Promise.all(ids.map(async (id) => {
        const records = await (await fetch(`/api/runs/${id}/metrics`)).json();
        return { name: id, points: records.filter((r) => r.loss !== undefined).map((r) => [r.step, r.loss]) };
      }));
      draw(document.getElementById("compare-chart"), series);
    };
  }

  function formValues(form) {
    const flat = {};
    for (const el of form.querySelectorAll("[name]")) {
      const kind = el.dataset.kind;
      if (kind === "bool") { flat[el.name] = el.checked; continue; }
      const raw = el.value.trim();
      if (raw === "") { flat[el.name] = null; continue; }
      if (kind === "int" || kind === "float") flat[el.name] = Number(raw);
      else if (kind === "list") flat[el.name] = raw.split(",").map((s) => s.trim()).filter(Boolean);
      else flat[el.name] = raw;
    }
    return flat;
  }

  function fill(form, flat) {
    for (const [key, value] of Object.entries(flat)) {
      const el = form.querySelector(`[name="${CSS.escape(key)}"]`);
      if (!el) continue;
      if (el.dataset.kind === "bool") el.checked = Boolean(value);
      else el.value = value === null ? "" : Array.isArray(value) ? value.join(",") : String(value);
    }
  }

  function trainPage() {
    const form = document.getElementById("train-form");
    const yaml = document.getElementById("yaml");
    const problems = document.getElementById("problems");
    const refresh = async () => {
      const { data } = await post("/api/yaml", formValues(form));
      yaml.textContent = data.yaml || "";
      document.getElementById("download-yaml").href = "data:text/yaml;charset=utf-8," + encodeURIComponent(yaml.textContent);
    };
    form.addEventListener("input", refresh);
    refresh();
    document.getElementById("copy-yaml").onclick = () => navigator.clipboard?.writeText(yaml.textContent);
    document.getElementById("load-yaml").onclick = async () => {
      const { status, data } = await post("/api/parse-yaml", { yaml: document.getElementById("yaml-input").value });
      if (status === 200) { fill(form, data.config); refresh(); } else show(data.problems || ["not valid YAML"]);
    };
    const show = (list) => {
      problems.hidden = !list.length;
      problems.querySelector("ul").innerHTML = "";
      for (const el of form.querySelectorAll("label")) el.classList.remove("invalid");
      for (const p of list) {
        const li = document.createElement("li"); li.textContent = p; problems.querySelector("ul").appendChild(li);
        const key = (p.match(/key '([^']+)'/) || [])[1];
        const field = key && form.querySelector(`[name="${CSS.escape(key)}"]`);
        if (field) field.closest("label").classList.add("invalid");
      }
    };
    datasetPicker(form);
    memoryEstimate(form);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const flat = Object.fromEntries(Object.entries(formValues(form)).filter(([, v]) => v !== null));
      const { status, data } = await post("/api/runs", flat);
      if (status === 201) location.href = `/runs/${data.id}`;
      else show(data.problems || [data.detail || "error"]);
    });
  }

  function datasetPicker(form) {
    // dataset names from dataset_dir's dataset_info.json; the preview shows rows as training sees them
    const names = document.getElementById("dataset-names");
    const dirField = form.querySelector('[name="dataset_dir"]');
    form.querySelector('[name="dataset"]')?.setAttribute("list", "dataset-names");
    const loadNames = async () => {
      const reply = await fetch(`/api/datasets?dataset_dir=${encodeURIComponent(dirField.value || "data")}`);
      names.innerHTML = "";
      if (reply.status !== 200) return;
      for (const name of (await reply.json()).datasets) {
        const option = document.createElement("option"); option.value = name; names.appendChild(option);
      }
    };
    dirField.addEventListener("change", loadNames);
    loadNames();
    const out = document.getElementById("preview-output"), problems = document.getElementById("preview-problems");
    const add = (parent, tag, text, className) => {
      const el = document.createElement(tag); el.textContent = text; if (className) el.className = className; parent.appendChild(el); return el;
    };
    document.getElementById("preview-button").onclick = async () => {
      const flat = Object.fromEntries(Object.entries(formValues(form)).filter(([, v]) => v !== null));
      flat.rows = Number(document.getElementById("preview-rows").value) || 3;
      out.textContent = out.dataset.loading; problems.textContent = "";
      const { status, data } = await post("/api/preview", flat);
      out.textContent = "";
      if (status !== 200) { problems.textContent = (data.problems || [data.detail || "error"]).join("; "); return; }
      for (const row of data.rows) {
        const cut = row.truncated ? `, ${out.dataset.truncated}` : "";
        add(out, "h4", `${row.source}: ${row.tokens} ${out.dataset.tokens}, ${row.trained} ${out.dataset.trained}${cut}`);
        const pre = add(out, "pre", "", "preview-row");
        for (const [text, trained] of row.segments) add(pre, trained ? "mark" : "span", text);
      }
      for (const message of data.problems) add(out, "p", `${out.dataset.bad}: ${message}`, "problems");
      for (const source of data.dropped) add(out, "p", `${out.dataset.dropped}: ${source}`, "problems");
    };
  }

  function chatPage() {
    const transcript = document.getElementById("transcript");
    const history = [];
    const active = document.getElementById("chat-active"), pathsField = document.getElementById("chat-adapter-paths");
    const adapterPaths = () => pathsField.value.split(",").map((s) => s.trim()).filter(Boolean);
    pathsField.addEventListener("change", () => {  // typed adapter folders can answer too
      for (const option of [...active.querySelectorAll("option.typed")]) option.remove();
      for (const path of adapterPaths()) {
        const option = document.createElement("option"); option.value = path; option.textContent = path; option.className = "typed";
        active.appendChild(option);
      }
    });
    const line = (who, text) => { const p = document.createElement("p"); p.className = `turn turn-${who}`; p.textContent = text; transcript.appendChild(p); return p; };
    document.getElementById("chat-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const input = document.getElementById("chat-input");
      const text = input.value.trim();
      if (!text) return;
      input.value = "";
      const picker = document.getElementById("chat-image"), file = picker.files[0];
      const images = file ? [await new Promise((done) => { const r = new FileReader(); r.onload = () => done(r.result); r.readAsDataURL(file); })] : [];
      picker.value = "";
      history.push({ role: "user", content: text, images });
      const turn = line("user", text);
      for (const url of images) { const img = document.createElement("img"); img.src = url; img.className = "turn-image"; turn.prepend(img); }
      const answer = line("assistant", "");
      const body = {
        model: document.getElementById("chat-model").value,
        adapters: [...document.querySelectorAll(".chat-adapter:checked")].map((c) => c.value).concat(adapterPaths()),
        adapter: document.getElementById("chat-active").value || null,
        messages: history,
      };
      const number = (id) => { const v = document.getElementById(id).value.trim(); return v === "" ? null : Number(v); };
      for (const [key, id] of [["max_new_tokens", "chat-max-new-tokens"], ["temperature", "chat-temperature"], ["top_p", "chat-top-p"]]) body[key] = number(id);
      const reply = await fetch("/api/chat", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      if (reply.status !== 200) { document.getElementById("chat-problems").textContent = ((await reply.json()).problems || []).join("; "); return; }
      const reader = reply.body.getReader(), decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const data = buffer.slice(0, cut).replace(/^data: /, "");
          buffer = buffer.slice(cut + 2);
          if (data === "[DONE]") continue;
          const piece = JSON.parse(data);
          if (piece.text) answer.textContent += piece.text;
          if (piece.error) document.getElementById("chat-problems").textContent = piece.error;
        }
      }
      answer.classList.add("finished");
      history.push({ role: "assistant", content: answer.textContent });
    });
  }

  function memoryEstimate(form) {
    const box = document.getElementById("estimate");
    if (!box) return;
    const words = box.dataset;
    const gib = (bytes) => `${(bytes / 2 ** 30).toFixed(2)} GiB`;
    const cell = (tag, text) => { const el = document.createElement(tag); el.textContent = text; return el; };
    let timer, asked = 0;
    const update = async () => {
      const mine = ++asked;
      const flat = Object.fromEntries(Object.entries(formValues(form)).filter(([, v]) => v !== null));
      const { status, data } = await post("/api/estimate", flat);
      if (mine !== asked) return;  // the form changed again meanwhile
      if (status !== 200) { box.replaceChildren(cell("small", (data.problems || [data.detail || "error"]).join("; "))); box.className = "estimate-unknown"; return; }
      const table = document.createElement("table");
      for (const [name, bytes] of [...Object.entries(data.parts), [words.total, data.total]]) {
        const tr = document.createElement("tr"); tr.appendChild(cell("td", name)); tr.appendChild(cell("td", gib(bytes))); table.appendChild(tr);
      }
      const verdict = data.fits === null ? "" : `${data.fits ? words.fits : words.notFit}: ${gib(data.available)} ${words.available} (${data.device}, ${data.processes})`;
      const offloaded = Object.entries(data.offloaded).map(([k, v]) => `${words.offloaded}: ${k} ${gib(v)}`);
      const notes = document.createElement("ul");
      for (const a of [...offloaded, ...data.assumptions]) notes.appendChild(cell("li", a));
      box.replaceChildren(cell("strong", verdict), table, notes);
      box.dataset.config = JSON.stringify(flat);  // what the shown estimate is of
      box.className = data.fits === false ? "estimate-too-big" : "estimate-fits";
    };
    form.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(update, 600); });
    update();
  }

  function showProblems(box, list) {
    box.hidden = !list.length;
    box.querySelector("ul").innerHTML = "";
    for (const p of list) { const li = document.createElement("li"); li.textContent = p; box.querySelector("ul").appendChild(li); }
  }

  function jobPage(formId, url, adjust) {
    const form = document.getElementById(formId);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const flat = Object.fromEntries(Object.entries(formValues(form)).filter(([, v]) => v !== null));
      adjust(flat);
      const { status, data } = await post(url, flat);
      if (status === 201) location.href = `/runs/${data.id}`;
      else showProblems(document.getElementById("problems"), data.problems || [data.detail || "error"]);
    });
  }

  function exportPage() {
    jobPage("export-form", "/api/exports", (flat) => { if (flat.export_format !== "gguf") delete flat.export_gguf_type; });
  }

  function evaluatePage() {
    jobPage("evaluate-form", "/api/evaluations", (flat) => { if (!flat.compare_base) delete flat.compare_base; });
  }

  function dataPage() {
    jobPage("synth-form", "/api/synth", () => {});
  }

  const synthView = { offset: 0, size: 50 };

  async function synthRows(id, offset) {
    const box = document.getElementById("synth-rows");
    if (!box) return;
    if (offset !== undefined) synthView.offset = Math.max(0, offset);
    const reply = await fetch(`/api/runs/${id}/rows?offset=${synthView.offset}&limit=${synthView.size}`);
    if (reply.status !== 200) return;
    const data = await reply.json();
    const cell = (tag, text) => { const el = document.createElement(tag); el.textContent = text; return el; };
    const report = document.getElementById("synth-report");
    const summary = [`${data.total} rows`];
    if (data.report) {
      const rejected = Object.entries(data.report.rejected).map(([k, v]) => `${k} ${v}`).join(", ");
      summary.push(`rejected: ${rejected || "none"}`, `failed requests: ${data.report.requests_failed}`);
    }
    report.replaceChildren(cell("p", summary.join(" · ")));
    if (data.report) { const img = document.createElement("img"); img.src = `/api/runs/${id}/report.png`; img.alt = "report"; img.className = "report"; report.appendChild(img); }
    const table = document.createElement("table");
    const columns = data.rows.length ? Object.keys(data.rows[0]) : [];
    const head = document.createElement("tr");
    head.appendChild(cell("th", "#"));
    for (const c of columns) head.appendChild(cell("th", c));
    table.appendChild(head);
    data.rows.forEach((row, i) => {
      const tr = document.createElement("tr");
      tr.appendChild(cell("td", String(data.offset + i + 1)));
      for (const c of columns) tr.appendChild(cell("td", String(row[c] ?? "")));
      table.appendChild(tr);
    });
    box.replaceChildren(table);
    document.getElementById("rows-previous").onclick = () => synthRows(id, synthView.offset - synthView.size);
    document.getElementById("rows-next").onclick = () => { if (synthView.offset + synthView.size < data.total) synthRows(id, synthView.offset + synthView.size); };
  }

  async function evalResults(id) {
    const box = document.getElementById("eval-results");
    if (!box) return;
    const reply = await fetch(`/api/runs/${id}/results`);
    if (reply.status !== 200) return;
    const report = await reply.json();
    const labels = Object.keys(report.results);
    const rows = ["STEM", "Social Sciences", "Humanities", "Other"].filter((c) => labels.some((l) => c in report.results[l].categories));
    const table = document.createElement("table");
    const cell = (tag, text) => { const el = document.createElement(tag); el.textContent = text; return el; };
    const head = document.createElement("tr");
    head.appendChild(cell("th", report.task));
    for (const l of labels) head.appendChild(cell("th", l));
    if (labels.length === 2) head.appendChild(cell("th", "diff"));
    table.appendChild(head);
    for (const row of [...rows, "Average"]) {
      const tr = document.createElement("tr");
      tr.appendChild(cell("td", row));
      const values = labels.map((l) => row === "Average" ? report.results[l].average : report.results[l].categories[row]?.accuracy);
      for (const v of values) tr.appendChild(cell("td", v === undefined ? "-" : (100 * v).toFixed(2)));
      if (values.length === 2 && values.every((v) => v !== undefined)) tr.appendChild(cell("td", (100 * (values[0] - values[1])).toFixed(2)));
      table.appendChild(tr);
    }
    box.replaceChildren(table);
  }

  async function exportFiles(id) {
    const list = document.getElementById("export-files");
    if (!list) return;
    const reply = await fetch(`/api/runs/${id}/files`);
    if (reply.status !== 200) return;
    list.innerHTML = "";
    for (const f of await reply.json()) {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = `/api/runs/${id}/files/${encodeURIComponent(f.name)}`; a.textContent = f.name;
      li.appendChild(a); li.append(` (${(f.bytes / 1e6).toFixed(1)} MB)`); list.appendChild(li);
    }
  }

  return { draw, runPage, runsPage, trainPage, chatPage, exportPage, exportFiles, evaluatePage, evalResults, dataPage, synthRows };
})();
