// nbflow's live DAG: the SVG comes laid out from Python once per graph shape;
// state changes only set data-state attributes (CSS colours them) and tooltips.

function fmtSeconds(s) {
  if (s === undefined || s === null) return "";
  return s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(1)} s`;
}

function describe(name, state, info, labels) {
  const d = info || {};
  const lines = [`${name}: ${labels[state] || state}`];
  if (d.duration !== undefined) lines.push(`duration: ${fmtSeconds(d.duration)}`);
  if (d.attempts !== undefined) lines.push(`attempts: ${d.attempts}`);
  if (d.reason) lines.push(`why: ${d.reason}`);
  if (d.instances) {
    const counts = {};
    for (const s of Object.values(d.instances)) counts[s] = (counts[s] || 0) + 1;
    const parts = Object.entries(counts).map(([s, n]) => `${n} ${labels[s] || s}`);
    lines.push(`mapped instances: ${Object.keys(d.instances).length} (${parts.join(", ")})`);
  }
  if (d.error) lines.push(`error: ${d.error}`);
  if (d.metadata) lines.push(`metadata: ${JSON.stringify(d.metadata).slice(0, 400)}`);
  return lines.join("\n");
}

function render({ model, el }) {
  el.classList.add("nbflow-dag");
  el.innerHTML = `
    <div class="nbflow-head"><span class="nbflow-title"></span><span class="nbflow-progress"></span></div>
    <div class="nbflow-legend"></div>
    <div class="nbflow-fallback-box"></div>
    <div class="nbflow-graph"></div>
    <div class="nbflow-panel" hidden>
      <div class="nbflow-detail"></div>
      <button data-action="run">Run</button>
      <button data-action="run_downstream">Run with downstream</button>
      <button data-action="invalidate">Invalidate</button>
      <button data-action="explain">Explain</button>
      <div class="nbflow-history"></div>
    </div>
    <div class="nbflow-message"></div>`;
  const $ = (sel) => el.querySelector(sel);
  let nodes = {};      // task name -> <g> element
  let selected = null;
  let timer = null;
  const labels = {};

  const colours = {};

  function drawLegend() {
    const items = model.get("legend") || [];
    const legend = $(".nbflow-legend");
    legend.innerHTML = "";
    let group = null;
    for (const [state, colour, label, heading] of items) {
      labels[state] = label;
      colours[state] = colour;
      if (heading && heading !== group) {
        group = heading;
        const head = document.createElement("span");
        head.className = "nbflow-group";
        head.textContent = `${heading}:`;
        legend.appendChild(head);
      }
      const key = document.createElement("span");
      key.className = "nbflow-key";
      key.dataset.state = state;
      key.innerHTML = `<i style="background:${colour}"></i>`;
      key.appendChild(document.createTextNode(label));
      legend.appendChild(key);
    }
    for (const g of Object.values(nodes)) delete g.dataset.state;  // repaint with new colours
    recolour();
  }

  function drawGraph() {
    $(".nbflow-graph").innerHTML = model.get("svg") || "";
    nodes = {};
    const ids = model.get("node_ids") || {};
    for (const [name, id] of Object.entries(ids)) {
      const g = $(".nbflow-graph").querySelector(`g[id="${id}"]`);
      if (!g) continue;
      g.dataset.task = name;
      nodes[name] = g;
      g.addEventListener("click", () => select(name));
    }
    recolour();
  }

  function recolour() {
    const states = model.get("states") || {};
    const info = model.get("info") || {};
    for (const [name, g] of Object.entries(nodes)) {
      const state = states[name] || "never-run";
      if (g.dataset.state !== state) {
        g.dataset.state = state;
        // The colours come from Python's one table (render.STATES), like the static SVG's.
        for (const shape of g.querySelectorAll("path, polygon, ellipse")) {
          shape.style.fill = colours[state] || "#ffffff";
        }
      }
      let title = g.querySelector("title");
      if (!title) {
        title = document.createElementNS("http://www.w3.org/2000/svg", "title");
        g.prepend(title);
      }
      title.textContent = describe(name, state, info[name], labels);
    }
    $(".nbflow-fallback-box").innerHTML = model.get("fallback") || "";
    if (selected) showDetail();
  }

  // The selected task's last runs and output, from the run history (asked of the kernel).
  function showHistory() {
    const h = model.get("task_history") || {};
    const box = $(".nbflow-history");
    box.innerHTML = "";
    if (!selected || h.task !== selected) return;
    const head = document.createElement("div");
    head.className = "nbflow-history-head";
    head.textContent = "last runs";
    box.appendChild(head);
    const list = document.createElement("ul");
    list.className = "nbflow-runs";
    for (const r of h.runs || []) {
      const item = document.createElement("li");
      item.dataset.state = r.state;
      const when = new Date(r.started * 1000).toISOString().slice(0, 19).replace("T", " ");
      item.textContent = `${when} UTC  ${labels[r.state] || r.state}  ${fmtSeconds(r.duration)}  run ${r.run}`;
      list.appendChild(item);
    }
    if (!(h.runs || []).length) list.textContent = h.error ? `history: ${h.error}` : "no runs recorded";
    box.appendChild(list);
    const out = document.createElement("pre");
    out.className = "nbflow-output";
    if (h.output) {
      out.textContent = (h.output.more ? "…\n" : "") + h.output.lines.join("\n");
      out.title = `output of run ${h.output.run}`;
    } else {
      out.textContent = "printed nothing";
    }
    box.appendChild(out);
  }

  function askHistory() {
    if (selected) model.send({ action: "history", task: selected });
  }

  let wasActive = false;
  function progress() {
    const p = model.get("progress") || {};
    if (wasActive && !p.active) askHistory();  // a run ended: the selected task's runs changed
    wasActive = !!p.active;
    $(".nbflow-title").textContent = `pipeline ${model.get("pipeline")}`;
    let text;
    // p.text is worded in Python (widget.progress_text): "4/4 done (2 cached)", "4 cached".
    if (p.active) {
      const elapsed = p.started ? Date.now() / 1000 - p.started : 0;
      text = `running: ${p.text} · ${fmtSeconds(elapsed)}`;
    } else if (p.started) {
      text = `last run: ${p.text} in ${fmtSeconds(p.elapsed)}`;
    } else {
      text = `${p.total} tasks, ${p.stale || 0} would run`;
    }
    $(".nbflow-progress").textContent = text;
    if (p.active && !timer) timer = setInterval(progress, 250);
    if (!p.active && timer) { clearInterval(timer); timer = null; }
  }

  function showDetail() {
    const states = model.get("states") || {};
    const info = model.get("info") || {};
    $(".nbflow-panel").hidden = false;
    $(".nbflow-detail").textContent = describe(selected, states[selected] || "never-run", info[selected], labels);
  }

  function select(name) {
    if (selected && nodes[selected]) nodes[selected].classList.remove("nbflow-selected");
    selected = name;
    if (nodes[name]) nodes[name].classList.add("nbflow-selected");
    showDetail();
    showHistory();
    askHistory();
  }

  for (const button of el.querySelectorAll(".nbflow-panel button")) {
    button.addEventListener("click", () => {
      if (!selected) return;
      $(".nbflow-message").textContent = `${button.textContent} ${selected}…`;
      model.send({ action: button.dataset.action, task: selected });
    });
  }

  drawLegend();
  drawGraph();
  progress();
  $(".nbflow-message").textContent = model.get("message") || "";
  model.on("change:svg", drawGraph);
  model.on("change:node_ids", drawGraph);
  model.on("change:states", recolour);
  model.on("change:info", recolour);
  model.on("change:fallback", recolour);
  model.on("change:progress", progress);
  model.on("change:legend", drawLegend);
  model.on("change:task_history", showHistory);
  model.on("change:message", () => { $(".nbflow-message").textContent = model.get("message"); });
  return () => { if (timer) clearInterval(timer); };
}

export default { render };
