// Kith's page: search, classify and browse an index through the server's own API (/v1).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { index: "", image: null, token: sessionStorage.getItem("kith-token") || "", label: null, next: null };

/// Calls the API; asks once for the bearer token on a 401 (kept for this tab only).
async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401) {
    const token = window.prompt("This Kith server needs its token:");
    if (token && token !== state.token) {
      state.token = token;
      sessionStorage.setItem("kith-token", token);
      return api(path, options);
    }
    throw new Error("the server refused the request: it needs its token (401 unauthorized)");
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { const body = await response.json(); if (body.error) message = `${body.error.code}: ${body.error.message}`; } catch (_) {}
    throw new Error(message);
  }
  return response;
}

const json = async (path, options) => (await api(path, options)).json();
const post = (path, body) => json(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });

function show(error) {
  const box = $("message");
  box.textContent = error.message || String(error);
  box.hidden = false;
  clearTimeout(show.timer);
  show.timer = setTimeout(() => { box.hidden = true; }, 8000);
}

/// An <img> of an item's thumbnail: fetched with the token when there is one (an <img> alone cannot send it).
function thumbnail(id) {
  const img = document.createElement("img");
  img.alt = `item ${id}`;
  img.loading = "lazy";
  const path = `/v1/indexes/${encodeURIComponent(state.index)}/items/${id}/thumbnail`;
  if (!state.token) { img.src = path; return img; }
  api(path).then((r) => r.blob()).then((blob) => { img.src = URL.createObjectURL(blob); }).catch(show);
  return img;
}

/// A grid tile: thumbnail, then id, label and score; activating it searches for its neighbours.
function tile(item, score) {
  const li = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.dataset.id = item.id;
  button.appendChild(thumbnail(item.id));
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.textContent = `id:${item.id}${item.label ? ` · ${item.label}` : ""}${score === undefined ? "" : ` · ${score.toFixed(4)}`}`;
  button.appendChild(meta);
  button.title = item.source || "";
  button.addEventListener("click", () => searchItem(item.id));
  li.appendChild(button);
  return li;
}

function filters() {
  const list = (id) => $(id).value.split(",").map((s) => s.trim()).filter(Boolean);
  return { labels: list("labels"), exclude: list("exclude") };
}

function showResults(hits, note) {
  const grid = $("results");
  grid.replaceChildren(...hits.map((hit) => tile(hit, hit.score)));
  $("results-note").textContent = hits.length ? note : "No neighbours.";
}

function queryString(extra) {
  const params = new URLSearchParams({ k: $("k").value });
  const { labels, exclude } = filters();
  if (labels.length) params.set("labels", labels.join(","));
  if (exclude.length) params.set("exclude_labels", exclude.join(","));
  for (const [key, value] of Object.entries(extra || {})) params.set(key, value);
  return params.toString();
}

/// Forgets the query and its answers: on another index, or when an upload failed.
function resetQuery() {
  state.image = null;
  $("classify").disabled = true;
  $("query-preview").replaceChildren();
  $("probabilities").replaceChildren();
  $("classify-note").textContent = "";
  $("results").replaceChildren();
  $("results-note").textContent = "Choose an image, or click any item to see its neighbours.";
}

async function searchImage(file) {
  resetQuery();
  const preview = document.createElement("img");
  preview.alt = "the query image";
  preview.src = URL.createObjectURL(file);
  $("query-preview").replaceChildren(preview);
  try {
    const body = await json(`/v1/indexes/${encodeURIComponent(state.index)}/search?${queryString()}`,
      { method: "POST", headers: { "Content-Type": file.type || "application/octet-stream" }, body: file });
    showResults(body.results[0], `Neighbours of ${file.name}, ${body.space} space`);
    state.image = file;
    $("classify").disabled = false;
  } catch (error) {
    resetQuery();  // nothing of a failed upload stays on screen, and there is nothing to classify
    throw error;
  }
}

async function searchItem(id) {
  const { labels, exclude } = filters();
  const request = { ids: [id], k: Number($("k").value) };
  if (labels.length) request.labels = labels;
  if (exclude.length) request.exclude_labels = exclude;
  const body = await post(`/v1/indexes/${encodeURIComponent(state.index)}/search`, request);
  showResults(body.results[0], `Neighbours of item ${id} (never itself), ${body.space} space`);
}

async function classify() {
  if (!state.image) return;
  const head = $("head").value;
  const body = await json(`/v1/indexes/${encodeURIComponent(state.index)}/classify?head=${encodeURIComponent(head)}&top=5`,
    { method: "POST", headers: { "Content-Type": state.image.type || "application/octet-stream" }, body: state.image });
  const prediction = body.predictions[0];
  $("probabilities").replaceChildren(...prediction.top.map((c) => {
    const li = document.createElement("li");
    const name = document.createElement("span"); name.textContent = c.label;
    const bar = document.createElement("span"); bar.className = "bar"; bar.style.width = `${Math.max(1, c.probability * 100)}%`;
    const value = document.createElement("span"); value.textContent = c.probability.toFixed(3);
    li.append(name, bar, value);
    return li;
  }));
  $("classify-note").textContent = answeredBy(body);
}

/// The adapted head, if any: which space queries use by default, and the figures that decided it.
function adaptedNote(adapted) {
  if (!adapted) return "";
  const c = adapted.comparison;
  if (!c) return ` · adapted head not measured: queries use the backbone space`;
  if (!c.measures.length) return ` · adapted head not measured (${c.unmeasured}): queries use the backbone space`;
  const figures = c.measures.map((x) => x.name === "views"
    ? `views recall@1 ${x.backbone.toFixed(3)} → ${x.adapted.toFixed(3)}`
    : `${x.name} ${(100 * x.backbone).toFixed(1)}% → ${(100 * x.adapted).toFixed(1)}%`);
  const stale = adapted.stale ? ` (stale: ${adapted.stale})` : "";
  return ` · adapted head (backbone → adapted: ${figures.join(", ")}): queries use the ${adapted.default_space} space${stale}`;
}

/// Which head and space answered, and for auto what it measured on the labelled items.
function answeredBy(body) {
  const v = body.validation;
  let note = `Head ${body.head}, ${body.space} space.`;
  if (v && v.accuracy !== null) {
    note += ` auto chose it: ${(100 * v.accuracy).toFixed(1)}% on ${v.held_out} held-out labelled examples, logreg ${(100 * v.baseline).toFixed(1)}%.`;
  } else if (v) {
    note += ` auto could not validate (${v.fallback}), so ${v.head}.`;
  }
  return note;
}

async function loadLabels() {
  const body = await json(`/v1/indexes/${encodeURIComponent(state.index)}/labels`);
  $("label-list").replaceChildren(...body.labels.map(({ label, count }) => {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = `${label} (${count})`;
    button.setAttribute("aria-pressed", "false");
    button.addEventListener("click", () => {
      for (const b of $("label-list").querySelectorAll("button")) b.setAttribute("aria-pressed", "false");
      button.setAttribute("aria-pressed", "true");
      state.label = label;
      state.next = 0;
      $("label-items").replaceChildren();
      loadItems().catch(show);
    });
    li.appendChild(button);
    return li;
  }));
}

async function loadItems() {
  const params = new URLSearchParams({ from: state.next, limit: 24, label: state.label });
  const page = await json(`/v1/indexes/${encodeURIComponent(state.index)}/items?${params}`);
  $("label-items").append(...page.items.map((item) => tile(item)));
  state.next = page.next;
  $("more").hidden = page.next === null || page.next === undefined;
}

async function selectIndex(name) {
  state.index = name;
  state.label = null;
  state.next = null;
  resetQuery();
  $("label-list").replaceChildren();
  $("label-items").replaceChildren();
  $("more").hidden = true;
  $("eval-chart").replaceChildren();
  $("eval-progress").hidden = true;
  $("evaluate").disabled = false;
  const info = await json(`/v1/indexes/${encodeURIComponent(name)}`);
  const m = info.metadata, s = info.stats;
  $("summary").textContent = `${s.items} items, ${s.labels} labels, ${s.queue_entries} in the queue · ${m.dimension}-d ${m.model || "vectors of your own"}`
    + adaptedNote(info.adapted);
  const images = Boolean(m.model);
  $("file").disabled = !images;
  $("drop").querySelector("span").textContent = images ? "Drop an image here, or choose one" : "This index holds vectors of your own: no image search";
  await loadLabels();
}

/// Streams an evaluation's progress lines and draws mean ± 95% CI per head.
async function evaluate() {
  if (!state.index) return;
  const request = { way: Number($("way").value), shot: Number($("shot").value), queries: Number($("queries").value), episodes: Number($("episodes").value) };
  const bar = $("eval-progress");
  bar.hidden = false; bar.value = 0; bar.max = request.episodes;
  $("evaluate").disabled = true;
  try {
    const response = await api(`/v1/indexes/${encodeURIComponent(state.index)}/eval/fewshot`,
      { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(request) });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffered = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      let newline;
      while ((newline = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, newline).trim();
        buffered = buffered.slice(newline + 1);
        if (!line) continue;
        const event = JSON.parse(line);
        if (event.done !== undefined) bar.value = event.done;
        if (event.results) chart(event.results, request);
        if (event.error) throw new Error(`${event.error.code}: ${event.error.message}`);
      }
    }
  } finally {
    $("evaluate").disabled = false;
  }
}

function chart(results, request) {
  const ns = "http://www.w3.org/2000/svg";
  const width = 480, row = 36, height = row * results.length + 34, left = 110, right = 110;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", results.map((r) => `${r.head} ${(100 * r.mean).toFixed(1)}% ± ${(100 * r.ci95).toFixed(1)}`).join(", "));
  const x = (v) => left + v * (width - left - right);
  const add = (name, attributes, text) => {
    const e = document.createElementNS(ns, name);
    for (const [k, v] of Object.entries(attributes)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    svg.appendChild(e);
  };
  results.forEach((r, i) => {
    const y = 10 + i * row;
    add("text", { x: 0, y: y + 17, "font-size": 15 }, r.head);
    add("rect", { x: left, y: y + 4, width: x(r.mean) - left, height: 16, fill: "#2563eb" });
    add("line", { x1: x(Math.max(0, r.mean - r.ci95)), x2: x(Math.min(1, r.mean + r.ci95)), y1: y + 12, y2: y + 12, stroke: "#18181b", "stroke-width": 2 });
    add("text", { x: width - right + 6, y: y + 17, "font-size": 15 }, `${(100 * r.mean).toFixed(1)}% ± ${(100 * r.ci95).toFixed(1)}`);
  });
  add("text", { x: 0, y: height - 4, "font-size": 14, fill: "#52525b" },
    `${request.way}-way ${request.shot}-shot, ${request.episodes} episodes, mean ± 95% CI`);
  $("eval-chart").replaceChildren(svg);
}

async function start() {
  const body = await json("/v1/indexes");
  const select = $("index");
  select.replaceChildren(...body.indexes.map((i) => new Option(`${i.name} (${i.stats ? i.stats.items : 0})`, i.name)));
  if (!body.indexes.length) {
    // Nothing to search, classify or evaluate until there is an index.
    $("summary").textContent = "No indexes yet: kith index create NAME, then kith index add NAME FOLDER.";
    for (const id of ["file", "classify", "evaluate"]) $(id).disabled = true;
    return;
  }
  await selectIndex(body.indexes[0].name);
}

$("index").addEventListener("change", (e) => selectIndex(e.target.value).catch(show));
$("file").addEventListener("change", (e) => { if (e.target.files[0]) searchImage(e.target.files[0]).catch(show); });
$("classify").addEventListener("click", () => classify().catch(show));
$("evaluate").addEventListener("click", () => evaluate().catch(show));
$("more").addEventListener("click", () => loadItems().catch(show));
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files[0]) searchImage(e.dataTransfer.files[0]).catch(show);
});
drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("file").click(); } });
start().catch(show);
