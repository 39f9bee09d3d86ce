// musicsearch web page: search box, results with playback at the matched segment, "more like this", and a
// map of the collection drawn on a canvas from /api/map. Plain JS, no build step, no external resources.
// Every value from the server is inserted with textContent (never innerHTML), so metadata cannot inject markup.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  results: [],
  playingId: null,
  mapPoints: [],
  mapGroups: [], // legend of the current colouring: [{name, tags, count, ...}], indexed by each point's `group`
  mapColours: [], // each group's CSS colour
  mapColour: "clusters",
  highlight: new Set(),
  lastResponse: null,
};
window.musicsearch = state; // for tests and the curious

const player = $("player");

function fmtTime(seconds) {
  if (seconds == null || !isFinite(seconds)) return "";
  const s = Math.max(0, Math.round(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "text") node.textContent = v;
    else if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

// A server started with an API key answers 401: ask for the key once and keep it in a SameSite=Strict cookie for
// this site, so that fetch() and the <audio> element (which cannot send headers) both carry it.
function askForKey() {
  const key = window.prompt("This server needs an API key (ask whoever runs it):");
  if (!key) return false;
  const secure = location.protocol === "https:" ? "; Secure" : "";
  document.cookie = `musicsearch_key=${encodeURIComponent(key.trim())}; Path=/; SameSite=Strict${secure}`;
  return true;
}

async function getJSON(url, retried = false) {
  const resp = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
  if (resp.status === 401 && !retried && askForKey()) return getJSON(url, true);
  let body = null;
  try {
    body = await resp.json();
  } catch (e) {
    body = null;
  }
  if (!resp.ok) throw new Error((body && body.error) || `${resp.status} ${resp.statusText}`);
  return body;
}

// Split "artist=Nina Simone year>=1960 tag=jazz" into conditions: a new one starts at each KEY OP.
function splitFilters(text) {
  const t = text.trim();
  if (!t) return [];
  return t.split(/\s+(?=-?[A-Za-z_]+\s*(?:>=|<=|!=|==|=|>|<|:))/).map((s) => s.trim()).filter(Boolean);
}

// ---------------------------------------------------------------------------------------------- search

async function runSearch(params, description) {
  showError("");
  $("understood").textContent = "searching…";
  try {
    const resp = await getJSON(`/api/search?${params.toString()}`);
    renderResponse(resp, description);
  } catch (err) {
    $("understood").textContent = "";
    showError(err.message);
  }
}

function searchFromForm(event) {
  if (event) event.preventDefault();
  const q = $("q").value.trim();
  if (!q) {
    showError("Type what you want to hear, e.g. “calm piano, no vocals”.");
    return;
  }
  const params = new URLSearchParams({ q, k: $("k").value });
  for (const f of splitFilters($("filters").value)) params.append("filter", f);
  history.replaceState(null, "", `?q=${encodeURIComponent(q)}`);
  runSearch(params, null);
}

async function moreLikeThis(result) {
  showError("");
  $("understood").textContent = "searching…";
  try {
    const resp = await getJSON(`/api/tracks/${result.id}/similar?k=${$("k").value}`);
    renderResponse(resp, `tracks like “${result.title || result.track_id}”`);
  } catch (err) {
    $("understood").textContent = "";
    showError(err.message);
  }
}

function renderUnderstood(resp, description) {
  const box = $("understood");
  box.textContent = "";
  if (description) {
    box.append(el("span", { text: description }));
  } else if (resp.query) {
    box.append(el("span", { text: `searching for “${resp.query.positive || "…"}”` }));
    if (resp.query.negatives.length) {
      box.append(el("span", { class: "neg", text: ` without ${resp.query.negatives.join(", ")}` }));
    }
  }
  const f = Object.entries(resp.filters || {});
  if (f.length) box.append(el("span", { text: ` · filters: ${f.map(([k, v]) => `${k}=${v}`).join(", ")}` }));
  if (resp.no_good_match) {
    box.append(el("span", { class: "warn", text: " · no good match in this collection" }));
  }
}

function renderResponse(resp, description) {
  state.lastResponse = resp;
  state.results = resp.results;
  renderUnderstood(resp, description);
  const list = $("results");
  list.textContent = "";
  if (!resp.results.length) {
    list.append(el("li", { class: "muted", text: "No tracks match these filters." }));
  }
  for (const r of resp.results) list.append(renderResult(r));
  state.highlight = new Set(resp.results.map((r) => r.id));
  drawMap();
}

function renderResult(r) {
  const li = el("li", { class: "result", "data-id": String(r.id) });
  if (r.id === state.playingId) li.classList.add("playing");
  const play = el("button", {
    class: "play",
    type: "button",
    title: `play from ${fmtTime(r.segment.start)}`,
    "aria-label": `play ${r.title || r.track_id}`,
    text: r.id === state.playingId && !player.paused ? "❚❚" : "▶",
    onclick: () => togglePlay(r),
  });
  const who = [r.artist, r.album, r.year].filter((x) => x != null && x !== "").join(" · ");
  const meta = [who, r.duration != null ? fmtTime(r.duration) : ""].filter(Boolean).join(" · ");
  const tags = el("div", { class: "tags" });
  for (const t of r.tags) {
    tags.append(
      el("span", {
        class: "tag",
        text: t,
        title: `search “${t}”`,
        onclick: () => {
          $("q").value = t;
          searchFromForm(null);
        },
      }),
    );
  }
  const actions = el("div", { class: "actions" }, [
    el("span", { class: "muted", text: `best match at ${fmtTime(r.segment.start)} · ` }),
    el("a", { class: "more", href: "#", text: "more like this", onclick: (e) => { e.preventDefault(); moreLikeThis(r); } }),
  ]);
  const body = el("div", {}, [
    el("div", { class: "title", text: r.title || r.track_id, title: r.track_id }),
    el("div", { class: "meta", text: meta }),
    tags,
    actions,
  ]);
  const rel = Math.max(0, Math.min(1, r.relevance));
  const bar = el("div", { class: rel < 0.5 ? "bar low" : "bar" }, [el("span", { style: `width:${(rel * 100).toFixed(0)}%` })]);
  const score = el("div", { class: "score" }, [
    el("div", { text: `relevance ${(rel * 100).toFixed(0)}%` }),
    bar,
    el("div", { text: `cosine ${r.score.toFixed(3)}` }),
  ]);
  li.append(play, body, score);
  return li;
}

// -------------------------------------------------------------------------------------------- playback

function markPlaying() {
  for (const li of document.querySelectorAll(".result")) {
    const mine = Number(li.dataset.id) === state.playingId;
    li.classList.toggle("playing", mine);
    const btn = li.querySelector(".play");
    if (btn) btn.textContent = mine && !player.paused ? "❚❚" : "▶";
  }
  drawMap();
}

function playTrack(id, start, label) {
  state.playingId = id;
  const begin = Math.max(0, start || 0);
  player.src = `/api/audio/${id}#t=${begin.toFixed(2)}`;
  player.addEventListener(
    "loadedmetadata",
    () => {
      if (Math.abs(player.currentTime - begin) > 0.25) player.currentTime = begin;
    },
    { once: true },
  );
  $("now-playing").textContent = `▶ ${label} (from ${fmtTime(begin)})`;
  player.play().catch((err) => showError(`cannot play: ${err.message}`));
  markPlaying();
}

function togglePlay(r) {
  if (state.playingId === r.id && player.src) {
    if (player.paused) player.play();
    else player.pause();
    return;
  }
  playTrack(r.id, r.segment.start, r.title || r.track_id);
}

player.addEventListener("play", markPlaying);
player.addEventListener("pause", markPlaying);
player.addEventListener("error", () => {
  if (player.src) showError("this track cannot be played (file missing or format not supported by the browser)");
});

// ------------------------------------------------------------------------------------------------- map

const canvas = $("map");
const ctx = canvas.getContext("2d");
const PAD = 14;

// Group colours: a qualitative palette (Tableau 10) in legend order; "other ..." and "no ... tag" groups grey.
const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
  "#9c755f", "#6b8e23"];
const OTHER_COLOUR = "#9a9aa2";
const NO_TAG_COLOUR = "#d2d2d8";

function groupColours(groups) {
  let next = 0;
  return groups.map((g) => {
    if (g.kind === "none") return NO_TAG_COLOUR;
    if (g.kind === "other") return OTHER_COLOUR;
    return PALETTE[next++ % PALETTE.length];
  });
}

function pointXY(p, w, h) {
  return [PAD + p.x * (w - 2 * PAD), PAD + (1 - p.y) * (h - 2 * PAD)];
}

function resizeCanvas() {
  const ratio = window.devicePixelRatio || 1;
  const size = canvas.clientWidth || 520;
  canvas.width = Math.round(size * ratio);
  canvas.height = Math.round(size * ratio);
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
}

function drawMap() {
  const w = canvas.clientWidth || 520;
  const h = w;
  ctx.clearRect(0, 0, w, h);
  ctx.fillStyle = "#fbfbf9";
  ctx.fillRect(0, 0, w, h);
  const n = state.mapPoints.length;
  const r = n > 2000 ? 2 : n > 200 ? 3.5 : 5;
  const colours = state.mapColours || [];
  ctx.globalAlpha = n > 2000 ? 0.7 : 1; // opaque dots while few: a dot's centre shows its group's colour
  for (const p of state.mapPoints) {
    const [x, y] = pointXY(p, w, h);
    ctx.beginPath();
    ctx.arc(x, y, r, 0, 2 * Math.PI);
    ctx.fillStyle = colours[p.group] || OTHER_COLOUR;
    ctx.fill();
  }
  ctx.globalAlpha = 1;
  for (const p of state.mapPoints) {
    if (!state.highlight.has(p.id) && p.id !== state.playingId) continue;
    const [x, y] = pointXY(p, w, h);
    ctx.beginPath();
    ctx.arc(x, y, r + 4, 0, 2 * Math.PI);
    ctx.lineWidth = p.id === state.playingId ? 3 : 2;
    ctx.strokeStyle = p.id === state.playingId ? "#1f9d55" : "#2f6fed";
    ctx.stroke();
  }
  canvas.dataset.points = String(state.mapPoints.length);
  canvas.dataset.colour = state.mapColour;
}

function nearestPoint(event) {
  const rect = canvas.getBoundingClientRect();
  const mx = event.clientX - rect.left;
  const my = event.clientY - rect.top;
  let best = null;
  let bestD = 10 * 10;
  for (const p of state.mapPoints) {
    const [x, y] = pointXY(p, rect.width, rect.height);
    const d = (x - mx) ** 2 + (y - my) ** 2;
    if (d < bestD) {
      bestD = d;
      best = p;
    }
  }
  return best;
}

canvas.addEventListener("mousemove", (event) => {
  const p = nearestPoint(event);
  const tip = $("map-tip");
  if (!p) {
    tip.hidden = true;
    return;
  }
  const group = state.mapGroups[p.group];
  tip.textContent = [p.title, p.artist].filter(Boolean).join(" · ") + (group ? ` — ${group.name}` : "");
  const panel = $("map-panel").getBoundingClientRect();
  tip.style.left = `${event.clientX - panel.left + 12}px`;
  tip.style.top = `${event.clientY - panel.top + 12}px`;
  tip.hidden = false;
});
canvas.addEventListener("mouseleave", () => {
  $("map-tip").hidden = true;
});
canvas.addEventListener("click", (event) => {
  const p = nearestPoint(event);
  if (p) playTrack(p.id, 0, p.title);
});

function renderLegend() {
  const legend = $("map-legend");
  legend.textContent = "";
  state.mapGroups.forEach((g, i) => {
    const how = g.named_by === "text" ? "named by the tags its sound is closest to"
      : g.named_by === "tags" ? "named by the tags that set it apart" : "";
    const title = [`${g.count} tracks`, how, g.tags && g.tags.length ? `tags: ${g.tags.join(", ")}` : ""]
      .filter(Boolean).join(" · ");
    const dot = el("span", { class: "dot", style: `background:${state.mapColours[i]}` });
    legend.append(el("li", { title, "data-group": String(i) }, [
      dot,
      el("span", { class: "name", text: g.name }),
      el("span", { class: "count", text: `(${g.count})` }),
    ]));
  });
}

function renderColourChoices(colourings, chosen) {
  const select = $("map-colour");
  select.textContent = "";
  for (const c of colourings) select.append(el("option", { value: c.name, text: c.label }));
  select.value = chosen;
  $("map-colour-control").hidden = colourings.length < 2;
}

async function loadMap(colour = state.mapColour) {
  try {
    const data = await getJSON(`/api/map?colour=${encodeURIComponent(colour)}`);
    state.mapPoints = data.points;
    state.mapGroups = data.groups;
    state.mapColours = groupColours(data.groups);
    state.mapColour = data.colour;
    const of = data.total > data.count ? ` of ${data.total}` : "";
    $("map-method").textContent = `(${data.method}, ${data.count}${of} tracks)`;
    renderColourChoices(data.colourings, data.colour);
    renderLegend();
  } catch (err) {
    $("map-method").textContent = `(unavailable: ${err.message})`;
  }
  resizeCanvas();
  drawMap();
}

$("map-colour").addEventListener("change", (event) => loadMap(event.target.value));

// ------------------------------------------------------------------------------------------------ start

async function start() {
  $("search-form").addEventListener("submit", searchFromForm);
  window.addEventListener("resize", () => {
    resizeCanvas();
    drawMap();
  });
  try {
    const health = await getJSON("/api/health");
    $("status").textContent = `${health.tracks} tracks · model ${health.model}`;
  } catch (err) {
    $("status").textContent = `server unavailable: ${err.message}`;
  }
  await loadMap();
  const q = new URLSearchParams(location.search).get("q");
  if (q) {
    $("q").value = q;
    searchFromForm(null);
  }
}

start();
