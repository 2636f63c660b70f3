// The PCN dashboard: reads /dashboard/metrics with the caller's bearer
// token and draws every figure as SVG. Self-contained: no library, no CDN.
// The token stays in this tab (sessionStorage); a token given in the URL
// fragment (#token=…) is taken from it and the fragment cleared.
"use strict";

const form = document.getElementById("filters");
const status = document.getElementById("status");
const figures = document.getElementById("figures");
const SVG = "http://www.w3.org/2000/svg";

(function takeTokenFromFragment() {
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem("sp-hub-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  form.token.value = sessionStorage.getItem("sp-hub-token") || "";
})();

function query() {
  const p = new URLSearchParams();
  for (const el of form.elements) {
    if (el.name && el.name !== "token" && el.value) p.set(el.name, el.value);
  }
  return p.toString();
}

async function fetchMetrics(accept) {
  const token = form.token.value.trim();
  sessionStorage.setItem("sp-hub-token", token);
  const resp = await fetch("/dashboard/metrics?" + query(), {
    headers: { Authorization: "Bearer " + token, Accept: accept },
  });
  if (!resp.ok) {
    let why = resp.status + " " + resp.statusText;
    try {
      const oo = await resp.json();
      why += ": " + oo.issue.map((i) => i.diagnostics).join("; ");
    } catch (_) { /* not an OperationOutcome */ }
    throw new Error(why);
  }
  return resp;
}

function el(name, attrs, text) {
  const e = name.startsWith("svg:")
    ? document.createElementNS(SVG, name.slice(4))
    : document.createElement(name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function title(key) {
  return key.replace(/[_-]/g, " ").replace(/^./, (c) => c.toUpperCase());
}

// "Organization/org-practice-mill-lane" reads as "org-practice-mill-lane".
function short(ref) {
  return String(ref || "").replace(/^(Organization|PractitionerRole|Practitioner)\//, "");
}

function labelOf(row) {
  return short(row.group) + (row.subgroup ? " · " + short(row.subgroup) : "");
}

const isShare = (row) => typeof row.denominator === "number" && row.value !== null && row.value <= 1 && row.value >= 0;

function shown(row) {
  if (row.suppressed || row.value === null || row.value === undefined) return null;
  return row.value;
}

function fmt(row, v) {
  if (isShare(row)) return Math.round(v * 1000) / 10 + "%";
  return String(Math.round(v * 100) / 100);
}

// Rows without buckets: one horizontal bar each (with the 95% confidence
// interval as a whisker when the figure has one).
function barChart(rows) {
  const values = rows.map(shown).filter((v) => v !== null);
  const hi = rows.map((r) => r.ci_high).filter((v) => typeof v === "number");
  const max = Math.max(1e-9, ...values.map(Math.abs), ...hi.map(Math.abs));
  const h = 22, width = 440, left = 170, room = width - left - 110;
  const svg = el("svg:svg", { width, height: rows.length * h + 4, role: "img" });
  rows.forEach((r, i) => {
    const v = shown(r);
    const y = i * h + 2;
    svg.appendChild(el("svg:text", { x: 0, y: y + 15 }, labelOf(r).slice(0, 26)));
    if (v === null) {
      const why = r.suppressed ? "suppressed (fewer than the threshold)" : "no data";
      svg.appendChild(el("svg:text", { x: left, y: y + 15, class: "note" }, why));
      return;
    }
    const w = Math.max(1, (Math.abs(v) / max) * room);
    let end = left + w;
    svg.appendChild(el("svg:rect", { x: left, y: y + 3, width: w, height: h - 6, fill: "#005eb8", "data-value": v }));
    if (typeof r.ci_low === "number" && typeof r.ci_high === "number") {
      const x1 = left + (Math.abs(r.ci_low) / max) * room, x2 = left + (Math.abs(r.ci_high) / max) * room;
      svg.appendChild(el("svg:line", { x1, x2, y1: y + h / 2, y2: y + h / 2, stroke: "#d5281b", "stroke-width": 2 }));
      end = Math.max(end, x1, x2);
    }
    svg.appendChild(el("svg:text", { x: end + 4, y: y + 15 }, fmt(r, v) + (r.n !== undefined && r.n !== null ? " (n=" + r.n + ")" : "")));
  });
  return svg;
}

const COLOURS = ["#005eb8", "#007f3b", "#ed8b00", "#7c2855", "#330072", "#d5281b", "#41b6e6", "#4c6272"];

// Rows with buckets: one line per group over the buckets.
function lineChart(rows) {
  const buckets = [...new Set(rows.map((r) => r.bucket))].sort();
  const groups = [...new Set(rows.map(labelOf))];
  const values = rows.map(shown).filter((v) => v !== null);
  const max = Math.max(1e-9, ...values);
  const width = 420, height = 160, left = 34, top = 8, bottom = 34;
  const x = (b) => left + (buckets.length < 2 ? 0 : (buckets.indexOf(b) / (buckets.length - 1)) * (width - left - 10));
  const y = (v) => top + (1 - v / max) * (height - top - bottom);
  const svg = el("svg:svg", { width, height: height + groups.length * 16, role: "img" });
  svg.appendChild(el("svg:line", { x1: left, x2: width - 10, y1: y(0), y2: y(0), stroke: "#aeb7bd" }));
  svg.appendChild(el("svg:text", { x: 0, y: y(max) + 4 }, fmt(rows[0], max)));
  svg.appendChild(el("svg:text", { x: left, y: height - 8 }, buckets[0] || ""));
  svg.appendChild(el("svg:text", { x: width - 60, y: height - 8 }, buckets[buckets.length - 1] || ""));
  groups.forEach((g, gi) => {
    const colour = COLOURS[gi % COLOURS.length];
    const pts = rows.filter((r) => labelOf(r) === g && shown(r) !== null)
      .sort((a, b) => (a.bucket < b.bucket ? -1 : 1));
    svg.appendChild(el("svg:polyline", {
      points: pts.map((r) => x(r.bucket) + "," + y(shown(r))).join(" "),
      fill: "none", stroke: colour, "stroke-width": 2,
    }));
    for (const r of pts) {
      svg.appendChild(el("svg:circle", { cx: x(r.bucket), cy: y(shown(r)), r: 3, fill: colour, "data-value": shown(r) }));
    }
    const ly = height + gi * 16 + 4;
    svg.appendChild(el("svg:rect", { x: left, y: ly - 9, width: 10, height: 10, fill: colour }));
    svg.appendChild(el("svg:text", { x: left + 14, y: ly }, g.slice(0, 50)));
  });
  return svg;
}

// Draws one figure family: each named list of rows as a chart; anything
// else (an older or newer shape) is walked for lists of rows.
function draw(section, key, value, depth) {
  if (Array.isArray(value)) {
    if (value.length === 0 || typeof value[0] !== "object") return;
    section.appendChild(el("h3", { class: "note" }, title(key)));
    const bucketed = value.some((r) => typeof r.bucket === "string");
    section.appendChild(bucketed ? lineChart(value) : barChart(value));
  } else if (value && typeof value === "object" && depth < 3) {
    for (const [k, v] of Object.entries(value)) draw(section, k, v, depth + 1);
  }
}

async function show() {
  status.textContent = "Loading…";
  status.className = "note";
  try {
    const data = await (await fetchMetrics("application/json")).json();
    figures.replaceChildren();
    for (const [key, value] of Object.entries(data.figures || {})) {
      const section = el("section", { class: "figure", "data-figure": key });
      section.appendChild(el("h2", {}, title(key)));
      draw(section, key, value, 0);
      figures.appendChild(section);
    }
    const bars = figures.querySelectorAll("[data-value]").length;
    document.body.dataset.rendered = String(bars);
    const p = data.period || {};
    status.textContent = "Figures from " + (p.from || "the start") + " to " + (p.to || "now") +
      (data.suppression ? "; groups of fewer than " + data.suppression + " people are not shown." : ".");
  } catch (e) {
    status.textContent = e.message;
    status.className = "error";
    document.body.dataset.rendered = "error";
  }
}

form.addEventListener("submit", (e) => { e.preventDefault(); show(); });
document.getElementById("csv").addEventListener("click", async () => {
  try {
    const blob = await (await fetchMetrics("text/csv")).blob();
    const a = el("a", { href: URL.createObjectURL(blob), download: "sp-hub-dashboard.csv" });
    document.body.appendChild(a);
    a.click();
    a.remove();
  } catch (e) {
    status.textContent = e.message;
    status.className = "error";
  }
});
if (form.token.value) show();
