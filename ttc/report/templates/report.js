// The report's behaviour: tabs, the sortable and filterable problems table, and a problem's detail
// with its search tree drawn as SVG from the trace. Plain DOM, no library: the file must open offline.
"use strict";
const DATA = JSON.parse(document.getElementById("report-data").textContent);
const SVG = "http://www.w3.org/2000/svg";
const PAGE_SIZE = 100;

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}
function svgEl(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}
function verdict(correct) {
  return correct === true ? "yes" : correct === false ? "no" : "—";
}
function showTab(name) {
  document.querySelectorAll("section.tab").forEach(s => s.classList.toggle("active", s.id === name));
  document.querySelectorAll("nav button").forEach(b => b.classList.toggle("active", b.dataset.tab === name));
}
document.querySelectorAll("nav button").forEach(b => b.addEventListener("click", () => showTab(b.dataset.tab)));

// ---- problems table ----------------------------------------------------------------------------
const table = { key: null, dir: 1, page: 0, rows: [] };
DATA.rows.forEach((r, i) => { r.pos = i; });  // ties keep the page's first order

function matches(row) {
  const value = id => (document.getElementById(id) || {}).value || "";
  const config = value("filter-config"), level = value("filter-level"), correct = value("filter-correct");
  const low = value("filter-min-tokens"), high = value("filter-max-tokens");
  const text = value("filter-text").toLowerCase();
  if (config && row.config !== config) return false;
  if (level && String(row.level) !== level) return false;
  if (correct === "yes" && row.correct !== true) return false;
  if (correct === "no" && row.correct !== false) return false;
  if (correct === "unjudged" && row.correct !== null) return false;
  if (low !== "" && row.tokens < Number(low)) return false;
  if (high !== "" && row.tokens > Number(high)) return false;
  if (text && !(row.id.toLowerCase().includes(text) || String(row.answer).toLowerCase().includes(text))) return false;
  return true;
}
function compare(a, b) {
  const x = a[table.key], y = b[table.key];
  if (x === y) return a.pos - b.pos;
  if (x === null || x === undefined) return 1;  // empty cells last, whichever the direction
  if (y === null || y === undefined) return -1;
  if (typeof x === "number" && typeof y === "number") return table.dir * (x - y);
  return table.dir * String(x).localeCompare(String(y), undefined, { numeric: true });
}
function refreshTable() {
  table.rows = DATA.rows.filter(matches);
  if (table.key) table.rows.sort(compare);
  const pages = Math.max(1, Math.ceil(table.rows.length / PAGE_SIZE));
  table.page = Math.min(table.page, pages - 1);
  const body = document.querySelector("#problems-table tbody");
  body.replaceChildren();
  for (const row of table.rows.slice(table.page * PAGE_SIZE, (table.page + 1) * PAGE_SIZE)) {
    const tr = el("tr", { "data-row": row.row });
    if (row.detail === null) tr.classList.add("no-detail");
    for (const key of ["config", "id", "level", "correct", "answer", "reference", "tokens", "verifier_tokens", "candidates"]) {
      const td = el("td", {}, key === "correct" ? verdict(row.correct) : row[key]);
      if (key === "correct") td.className = verdict(row.correct);
      tr.appendChild(td);
    }
    tr.addEventListener("click", () => { if (row.detail !== null) { openDetail(row.detail); showTab("detail"); } });
    body.appendChild(tr);
  }
  document.getElementById("row-count").textContent = `${table.rows.length} of ${DATA.rows.length} rows`;
  document.getElementById("page-label").textContent = `page ${table.page + 1} of ${pages}`;
}
if (document.getElementById("problems-table")) {
  document.querySelectorAll("#problems-table th").forEach(th => th.addEventListener("click", () => {
    table.dir = table.key === th.dataset.key ? -table.dir : 1;
    table.key = th.dataset.key;
    document.querySelectorAll("#problems-table th").forEach(h => h.classList.remove("asc", "desc"));
    th.classList.add(table.dir > 0 ? "asc" : "desc");
    refreshTable();
  }));
  document.querySelectorAll(".filters select, .filters input").forEach(f => f.addEventListener("input", () => {
    table.page = 0;
    refreshTable();
  }));
  document.getElementById("prev-page").addEventListener("click", () => { table.page = Math.max(0, table.page - 1); refreshTable(); });
  document.getElementById("next-page").addEventListener("click", () => { table.page += 1; refreshTable(); });
  refreshTable();
}

// ---- one problem ---------------------------------------------------------------------------------
function fillRows(selector, rows) {
  const body = document.querySelector(selector + " tbody");
  body.replaceChildren();
  for (const cells of rows) {
    const tr = el("tr");
    for (const c of cells) tr.appendChild(c instanceof Node ? c : el("td", {}, c));
    body.appendChild(tr);
  }
  return body;
}
function openDetail(index) {
  const d = DATA.details[index];
  document.getElementById("detail-empty").hidden = true;
  document.getElementById("detail-body").hidden = false;
  document.getElementById("detail-title").textContent = `${d.id} — ${d.config || d.strategy}`;
  document.getElementById("detail-prompt").textContent = d.prompt || "";
  const outcome = document.getElementById("detail-outcome");
  outcome.replaceChildren();
  const usage = d.usage || {};
  const prompt = usage.prompt_tokens === undefined ? null : `${usage.prompt_tokens} (${usage.cached_prompt_tokens || 0})`;
  for (const [k, v] of [["answer", d.answer], ["reference", d.reference], ["correct", verdict(d.correct)],
                        ["generated tokens", usage.generated_tokens], ["verifier tokens", usage.verifier_tokens],
                        ["prompt tokens (cached)", prompt]]) {
    const tr = el("tr");
    tr.appendChild(el("th", {}, k));
    tr.appendChild(el("td", {}, v === null || v === undefined ? "—" : v));
    outcome.appendChild(tr);
  }
  document.getElementById("node-text").textContent = "Click a node.";  // not the last problem's node
  fillRows("#votes", d.votes.map(v => [v.answer, v.votes]));
  const body = fillRows("#candidates", d.candidates.map((c, i) => [
    i + 1, c.answer, verdict(c.correct), c.score === null || c.score === undefined ? "—" : Number(c.score).toFixed(4),
    c.num_tokens, c.finish_reason,
    el("td", { class: "text" }, c.text)]));
  d.candidates.forEach((c, i) => { if (c.chosen) body.children[i].classList.add("chosen"); });
  fillRows("#events", d.events.map((e, i) => [i + 1, e.event, e.fields]));
  document.getElementById("detail-metrics").textContent = d.metrics;
  drawTree(d.tree);
}

// The tree: one column per step, a node's row after its parent's, edges parent to child; the chosen
// answer's path drawn thick. Each node's step text is its <title> (hover) and opens below on click.
function drawTree(tree) {
  const box = document.getElementById("tree-box"), holder = document.getElementById("tree");
  holder.replaceChildren();
  box.hidden = !tree;
  if (!tree) return;
  const byStep = new Map(), place = new Map();
  for (const n of tree.nodes) {
    if (!byStep.has(n.step)) byStep.set(n.step, []);
    byStep.get(n.step).push(n);
  }
  const steps = [...byStep.keys()].sort((a, b) => a - b);
  const colWidth = 110, rowHeight = 24, pad = 30;
  let tallest = 0;
  steps.forEach((step, col) => {
    const nodes = byStep.get(step);
    const parentRow = n => (place.has(n.parent) ? place.get(n.parent).row : -1);
    nodes.sort((a, b) => parentRow(a) - parentRow(b) || a.id - b.id);
    nodes.forEach((n, row) => place.set(n.id, { x: pad + col * colWidth, y: pad + row * rowHeight, row: row }));
    tallest = Math.max(tallest, nodes.length);
  });
  const svg = svgEl("svg", { width: pad * 2 + (steps.length - 1) * colWidth + 60, height: pad * 2 + tallest * rowHeight,
                             "data-nodes": tree.nodes.length });
  steps.forEach((step, col) => {
    const label = svgEl("text", { x: pad + col * colWidth - 12, y: 14 });
    label.textContent = `step ${step}`;
    svg.appendChild(label);
  });
  // Edges off the chosen path first, so the path is drawn over them.
  const edges = [...tree.nodes].sort((a, b) => Number(a.on_path) - Number(b.on_path));
  for (const n of edges) {
    if (n.parent === null || !place.has(n.parent)) continue;
    const a = place.get(n.parent), b = place.get(n.id);
    const line = svgEl("line", { x1: a.x, y1: a.y, x2: b.x, y2: b.y });
    if (n.on_path && tree.chosen_path.includes(n.parent)) line.classList.add("on-path");
    svg.appendChild(line);
  }
  for (const n of tree.nodes) {
    const p = place.get(n.id);
    const g = svgEl("g", { class: "node", "data-id": n.id, "data-status": n.status });
    if (n.on_path) g.classList.add("on-path");
    const circle = svgEl("circle", { cx: p.x, cy: p.y, r: 7, class: n.status });
    const title = svgEl("title");
    title.textContent = `node ${n.id}, step ${n.step}, ${n.status}, score ${n.score}\n${n.text || ""}`;
    circle.appendChild(title);
    g.appendChild(circle);
    const score = svgEl("text", { x: p.x + 10, y: p.y + 3 });
    score.textContent = (n.score === null ? "no score" : Number(n.score).toFixed(2)) + (n.answer ? ` → ${n.answer}` : "");
    g.appendChild(score);
    g.addEventListener("click", () => {
      svg.querySelectorAll("g.node.selected").forEach(s => s.classList.remove("selected"));
      g.classList.add("selected");
      document.getElementById("node-text").textContent =
        `node ${n.id} (parent ${n.parent === null ? "none" : n.parent}), step ${n.step}, ${n.status}` +
        (n.copies > 1 ? ` ×${n.copies}` : "") + `, score ${n.score}` + (n.answer ? `, answer ${n.answer}` : "") +
        (n.on_path ? ", on the chosen path" : "") + `\n\n${n.text || ""}`;
    });
    svg.appendChild(g);
  }
  holder.appendChild(svg);
}

if (DATA.kind !== "run" && DATA.details.length) openDetail(0);
