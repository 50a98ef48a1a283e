// The live revenue page: reads the mrr-stream API on the same origin and redraws when the API's event
// stream says the figures changed. Plain JavaScript, no build step, nothing loaded from anywhere else.
"use strict";

const LOCALE = "en-US";  // explicit, so the figures read the same on every machine (and in the browser test)
const KINDS = [["new", "new_mrr", 1], ["expansion", "expansion_mrr", 1], ["reactivation", "reactivation_mrr", 1],
               ["contraction", "contraction_mrr", -1], ["churn", "churn_mrr", -1]];
const DOWN = new Set(["contraction", "churn"]);  // shown as negative amounts, in red
const TOKEN_KEY = "mrr-stream.api-token";
const FEED_RECORDS = 200;  // the latest records received that the feed orders by effective time
const FEED_ROWS = 14;
const SVG_NS = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

let currency = null;
let seen = new Set();
let scheduledDays = 30;  // the scheduled changes' window: 30, 60 or 90 days

// ---------------------------------------------------------------------------------------------------------
// Formatting. Money arrives as exact decimal strings ("1234.56"); Intl.NumberFormat formats a string exactly
// (never through a float). Sums and differences are done in whole cents with BigInt.

const formats = new Map();
function numberFormat(options) {
  const key = JSON.stringify(options);
  if (!formats.has(key)) formats.set(key, new Intl.NumberFormat(LOCALE, options));
  return formats.get(key);
}
// Every currency is kept to two places (README: a known simplification for JPY-like currencies).
const moneyFormat = (code, extra = {}) =>
  numberFormat({ style: "currency", currency: code, minimumFractionDigits: 2, maximumFractionDigits: 2, ...extra });
function money(text, code = currency, extra = {}) {
  if (text === null || text === undefined || text === "") return "–";
  return moneyFormat(code, extra).format(String(text));
}
const signedMoney = (text, code = currency) => money(text, code, { signDisplay: "exceptZero" });
const negate = (text) => String(text).startsWith("-") ? String(text).slice(1) : /^[0.]*$/.test(text) ? text : "-" + text;
function cents(text) {
  const negative = text.startsWith("-");
  const [whole, frac = ""] = text.replace("-", "").split(".");
  const value = BigInt(whole) * 100n + BigInt((frac + "00").slice(0, 2));
  return negative ? -value : value;
}
function decimal(value) {
  const negative = value < 0n, size = negative ? -value : value;
  return `${negative ? "-" : ""}${size / 100n}.${String(size % 100n).padStart(2, "0")}`;
}
const pct = (r) => (r === null || r === undefined) ? "–"
  : numberFormat({ style: "percent", minimumFractionDigits: 1, maximumFractionDigits: 1 }).format(String(r));
const ratio = (r) => (r === null || r === undefined) ? "–"
  : numberFormat({ minimumFractionDigits: 2, maximumFractionDigits: 2 }).format(String(r));
const count = (n) => numberFormat({}).format(n);
const plus = (n) => numberFormat({ signDisplay: "exceptZero" }).format(n);  // +3, -2, 0
function monthName(month, withYear = true) {  // "2026-11" -> "Nov 2026"
  const [y, m] = month.split("-").map(Number);
  const options = withYear ? { month: "short", year: "numeric", timeZone: "UTC" } : { month: "short", timeZone: "UTC" };
  return new Intl.DateTimeFormat(LOCALE, options).format(Date.UTC(y, m - 1, 1));
}
function monthRange(first, last) {
  if (first === last) return monthName(first);
  return first.slice(0, 4) === last.slice(0, 4) ? `${monthName(first, false)} – ${monthName(last)}`
    : `${monthName(first)} – ${monthName(last)}`;
}
const when = (at) => at.replace("T", " ").slice(0, 16);  // effective_at is UTC ("…Z")
// A sortable form of an instant: the API writes whole seconds without a fraction, others with six digits.
const instantKey = (at) => at.includes(".") ? at : at.replace("Z", ".000000Z");
const num = (text) => Number(text);  // for drawing only

function el(tag, attrs = {}, ...children) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG_NS, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) node.setAttribute(k, v);
  for (const child of children) if (child !== undefined && child !== null && child !== "") node.append(child);
  return node;
}
function accountLink(id) {
  return el("a", { href: "#account=" + encodeURIComponent(id), class: "account", title: `${id}: its movements` }, id);
}
function headRow(table, names) {
  const tr = el("tr");
  for (const name of names) tr.append(el("th", {}, name));
  table.replaceChildren(tr);
}

// ---------------------------------------------------------------------------------------------------------
// The API, with the bearer token when the server asks for one (a 401 on any /api/ request).

class Unauthorized extends Error {}
const token = () => sessionStorage.getItem(TOKEN_KEY);
function authHeaders() {
  const t = token();
  return t ? { Authorization: "Bearer " + t } : {};
}
async function get(path) {
  const response = await fetch(path, { cache: "no-store", headers: authHeaders() });
  if (response.status === 401) throw new Unauthorized(path);
  if (!response.ok) {
    let reason = String(response.status);
    try { reason = (await response.json()).error || reason; } catch { /* not JSON */ }
    throw new Error(`${path}: ${reason}`);
  }
  return response.json();
}

let locked = false;
function askForToken() {
  if (locked) return;  // (several requests can meet the same 401)
  const refused = token() !== null;
  sessionStorage.removeItem(TOKEN_KEY);
  stopListening();
  locked = true;
  document.body.classList.add("locked");
  $("auth").hidden = false;
  $("forget-token").hidden = true;
  $("auth-error").textContent = refused ? "The server did not accept that token; enter it again." : "";
  $("status").textContent = "API token needed";
  $("status").classList.remove("live");
  $("auth-token").focus();
}
$("auth-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const value = $("auth-token").value.trim();
  if (!/^[\x21-\x7e]+$/.test(value)) {  // what an HTTP header (and the server) takes: printable ASCII
    $("auth-error").textContent = "A token is printable ASCII without spaces.";
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, value);
  $("auth-token").value = "";
  $("auth").hidden = true;
  locked = false;
  document.body.classList.remove("locked");
  start();
});
$("forget-token").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); location.reload(); });

// ---------------------------------------------------------------------------------------------------------
// Key figures. The latest month's row is the month to date: its ratios are monthly ones.

function kpis(row, rejected) {
  const box = $("kpis");
  const period = `${monthName(row.month)}, month to date`;
  const net = Number(row.net_new_mrr) < 0 ? "neg" : Number(row.net_new_mrr) > 0 ? "pos" : "";
  const items = [
    ["Current MRR", money(row.closing_mrr), "monthly recurring revenue now", { "data-cents": String(cents(row.closing_mrr)) }],
    ["Net new MRR", signedMoney(row.net_new_mrr), period, { class: net }],
    ["Customers", count(row.customers_closing), `paying in ${row.currency} now`],
    ["ARPA", money(row.arpa), "average MRR per customer"],
    ["Monthly NRR", pct(row.nrr), period, {},
     "Net revenue retention of the month: (opening MRR + expansion + reactivation − contraction − churn) ÷ opening MRR"],
    ["Monthly GRR", pct(row.grr), period, {}, "Gross revenue retention of the month: (opening MRR − contraction − churn) ÷ opening MRR"],
    ["Monthly quick ratio", ratio(row.quick_ratio), period, {},
     "(new + expansion + reactivation) ÷ (contraction + churn) over the month"],
    ["Rejected events", rejected === undefined || rejected === null ? "–" : count(rejected), null, { class: rejected ? "warn" : "" }],
  ];
  box.replaceChildren();
  for (const [label, value, note, attrs = {}, title] of items) {
    const card = el("div", { class: "kpi", title });
    const valueNode = el("div", { ...attrs, class: "value " + (attrs.class || ""), "data-kpi": label }, value);
    let noteNode = el("div", { class: "note" }, note);
    if (label === "Rejected events") {
      noteNode = el("div", { class: "note" }, "all currencies, left out of every figure · ",
                    el("a", { href: "#about-rejected", id: "rejected-help" }, "what is this?"));
    }
    card.append(el("div", { class: "label" }, label), valueNode, noteNode);
    box.append(card);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Charts: hand-drawn SVG. Round-number ticks (1, 2 or 5 times a power of ten) with gridlines; closing MRR on a
// small chart and axis of its own above the movements, both on the same months.

function niceTicks(lo, hi, wanted) {
  if (!(hi > lo)) hi = lo + 1;
  const raw = (hi - lo) / wanted;
  const power = 10 ** Math.floor(Math.log10(raw));
  const f = raw / power;
  const step = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * power;
  const first = Math.floor(lo / step + 1e-9), last = Math.ceil(hi / step - 1e-9);
  const values = [];
  for (let k = first; k <= last; k++) values.push(Number((k * step).toPrecision(12)));
  return { step, values };
}
const axisMoney = (v) => moneyFormat(currency, { notation: "compact", minimumFractionDigits: 0, maximumFractionDigits: 2 }).format(v);

const GEOMETRY = { W: 960, L: 84, R: 28 };
function xScale(n) {
  const step = (GEOMETRY.W - GEOMETRY.L - GEOMETRY.R) / n;
  return { step, center: (i) => GEOMETRY.L + i * step + step / 2 };
}

function yAxis(svg, ticks, y, title, top, bottom) {
  const { W, L, R } = GEOMETRY;
  for (const v of ticks.values) {
    const g = el("svg:g", { class: "tick", "data-value": String(v) });
    g.append(el("svg:line", { class: v === 0 ? "grid zero" : "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }),
             el("svg:text", { x: L - 8, y: y(v) + 4, "text-anchor": "end" }, axisMoney(v)));
    svg.append(g);
  }
  const mid = (top + bottom) / 2;
  svg.append(el("svg:text", { class: "axis-title", x: 14, y: mid, transform: `rotate(-90 14 ${mid})`, "text-anchor": "middle" }, title));
}

function closingChart(rows) {
  const svg = $("closing");
  svg.replaceChildren();
  const H = 190, T = 14, B = 10, { W, L, R } = GEOMETRY;
  if (!rows.length) { svg.append(el("svg:text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no data yet")); return; }
  const values = rows.map((r) => num(r.closing_mrr));
  const ticks = niceTicks(0, Math.max(...values, 0.01), 4);
  const top = ticks.values.at(-1), bottom = ticks.values[0];
  const y = (v) => T + (H - T - B) * (top - v) / (top - bottom);
  yAxis(svg, ticks, y, `Closing MRR (${currency})`, T, H - B);
  const x = xScale(rows.length);
  const points = rows.map((r, i) => [x.center(i), y(num(r.closing_mrr))]);
  const line = points.map(([px, py]) => `${px.toFixed(1)},${py.toFixed(1)}`).join(" ");
  svg.append(el("svg:polygon", { class: "area", points: `${points[0][0]},${y(0)} ${line} ${points.at(-1)[0]},${y(0)}` }),
             el("svg:polyline", { class: "closing-line", points: line }));
  rows.forEach((r, i) => {
    const dot = el("svg:circle", { class: "dot", cx: points[i][0], cy: points[i][1], r: 3.5 });
    dot.append(el("svg:title", {}, `${monthName(r.month)}: closing MRR ${money(r.closing_mrr)}`));
    svg.append(dot);
  });
  const [lx, ly] = points.at(-1);
  svg.append(el("svg:text", { class: "last-value", x: Math.min(lx, W - R), y: Math.max(ly - 10, T + 10), "text-anchor": "end" },
                money(rows.at(-1).closing_mrr)));
  svg.setAttribute("data-currency", currency);
}

function movementsChart(rows) {
  const svg = $("chart");
  svg.replaceChildren();
  const H = 300, T = 12, B = 42, { W } = GEOMETRY;
  if (!rows.length) { svg.append(el("svg:text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no data yet")); return; }
  const up = rows.map((r) => num(r.new_mrr) + num(r.expansion_mrr) + num(r.reactivation_mrr));
  const down = rows.map((r) => num(r.contraction_mrr) + num(r.churn_mrr));
  const ticks = niceTicks(-Math.max(...down, 0), Math.max(...up, 0.01), 6);
  const top = ticks.values.at(-1), bottom = ticks.values[0];
  const y = (v) => T + (H - T - B) * (top - v) / (top - bottom);
  yAxis(svg, ticks, y, `Movements (${currency})`, T, H - B);
  const x = xScale(rows.length);
  const bar = Math.max(3, Math.min(44, x.step * 0.62));
  const every = Math.ceil(rows.length / 18);  // month labels that do not collide
  let year = null;  // the year is written under the first labelled month of each year
  rows.forEach((r, i) => {
    const left = x.center(i) - bar / 2;
    let pos = 0, neg = 0;
    for (const [kind, field, sign] of KINDS) {
      const v = num(r[field]);
      if (!v) continue;
      const from = sign > 0 ? pos : -neg, to = sign > 0 ? pos + v : -(neg + v);
      const rect = el("svg:rect", { x: left, y: y(Math.max(from, to)), width: bar, height: Math.max(0.5, Math.abs(y(from) - y(to))),
                                    fill: `var(--${kind})`, "data-type": kind });
      rect.append(el("svg:title", {}, `${monthName(r.month)} ${kind}: ${money(r[field])}`));
      svg.append(rect);
      if (sign > 0) pos += v; else neg += v;
    }
    if (pos || neg) {  // (a month without movements gets no net new mark on the zero line)
      const net = el("svg:line", { class: "net", x1: left - 4, x2: left + bar + 4, y1: y(num(r.net_new_mrr)), y2: y(num(r.net_new_mrr)) });
      net.append(el("svg:title", {}, `${monthName(r.month)} net new MRR: ${signedMoney(r.net_new_mrr)}`));
      svg.append(net);
    }
    if (i % every === 0) {
      const label = el("svg:text", { class: "month", x: x.center(i), y: H - B + 16, "text-anchor": "middle" }, monthName(r.month, false));
      svg.append(label);
      if (r.month.slice(0, 4) !== year) {
        year = r.month.slice(0, 4);
        svg.append(el("svg:text", { class: "year", x: x.center(i), y: H - B + 31, "text-anchor": "middle" }, year));
      }
    }
  });
  const legend = $("legend");
  legend.replaceChildren();
  for (const [kind] of KINDS) legend.append(el("span", {}, el("i", { style: `background: var(--${kind})` }), kind));
  legend.append(el("span", {}, el("b", { class: "net-mark" }), "net new MRR"));
}

// ---------------------------------------------------------------------------------------------------------
// Tables.

// The month so far, from its opening MRR to its closing (now): every movement type, with the customers.
function bridge(row) {
  const table = $("bridge");
  $("bridge-period").textContent = `${monthName(row.month)}, month to date`;
  headRow(table, ["", "MRR", "Customers"]);
  const lines = [
    ["Opening MRR", row.opening_mrr, count(row.customers_opening), "total"],
    ["+ New", row.new_mrr, plus(row.new_customers), "pos"],
    ["+ Expansion", row.expansion_mrr, "", "pos"],
    ["+ Reactivation", row.reactivation_mrr, plus(row.reactivated_customers), "pos"],
    ["− Contraction", negate(row.contraction_mrr), "", "neg"],
    ["− Churn", negate(row.churn_mrr), plus(-row.churned_customers), "neg"],
    ["= Net new MRR", row.net_new_mrr, "", "net"],
    ["Closing MRR (now)", row.closing_mrr, count(row.customers_closing), "total"],
  ];
  for (const [label, amount, customers, kind] of lines) {
    const moved = (kind === "pos" || kind === "neg") && cents(amount) !== 0n;  // (zero: not coloured)
    table.append(el("tr", { class: kind === "total" || kind === "net" ? kind : "" }, el("td", {}, label),
                    el("td", { class: moved ? `money ${kind}` : "money" }, kind === "net" ? signedMoney(amount) : money(amount)),
                    el("td", {}, customers)));
  }
}

function periods(data) {
  const table = $("periods");
  headRow(table, ["Period", "Months", "Net new MRR", "Year before", "Change"]);
  const entry = (data.currencies || {})[currency] || {};
  for (const [label, key] of [["Quarter to date", "qtd"], ["Year to date", "ytd"]]) {
    const p = entry[key] || {};
    const now = p.current, before = p.previous_year;
    const change = now && before ? decimal(cents(now.net_new_mrr) - cents(before.net_new_mrr)) : null;
    const tr = el("tr");
    tr.append(el("td", {}, label), el("td", {}, now ? monthRange(now.first_month, now.last_month) : "–"),
              el("td", { class: "money" }, now ? signedMoney(now.net_new_mrr) : "–"),
              el("td", { class: "money" }, before ? signedMoney(before.net_new_mrr) : "–"),
              el("td", { class: "money " + (change && change.startsWith("-") ? "neg" : "") }, change === null ? "–" : signedMoney(change)));
    table.append(tr);
  }
}

const late = (ids) => ids.length === 0 ? "" : `, late event${ids.length > 1 ? "s" : ""} ${ids.slice(0, 2).join(", ")}${ids.length > 2 ? ` and ${ids.length - 2} more` : ""}`;

// The feed's rows from movement records (newest received first). A late event publishes a correction: a
// retraction of each movement it invalidated (`retracts` names it) and the corrected movements, each naming in
// `corrects` what the correction retracted. A retraction and the corrected movement at the same instant are
// one line, "corrected: churn $29.00 → contraction $12.00"; a retraction without one is "withdrawn". The late
// events are those of the corrected movements that none of the retracted movements had. A movement retracted
// since it was received is left out: the correction's line shows what it was.
function feedRows(records) {
  const correctors = new Map();  // retracted movement_id -> corrected movements naming it (newest received first)
  const retracted = new Map();   // retracted movement_id -> its retraction
  records.forEach((m, index) => {
    if (m.record === "retraction") { if (!retracted.has(m.retracts)) retracted.set(m.retracts, { m, index }); return; }
    for (const id of m.corrects || []) {
      if (!correctors.has(id)) correctors.set(id, []);
      correctors.get(id).push({ m, index });
    }
  });
  const lateEvents = (group) => {
    const before = new Set();
    for (const { m } of group) for (const id of m.corrects) for (const e of retracted.get(id)?.m.event_ids || []) before.add(e);
    return [...new Set(group.flatMap(({ m }) => m.event_ids))].filter((e) => !before.has(e));
  };
  const used = new Set();
  const rows = [];
  records.forEach((m, index) => {
    if (m.record !== "retraction") return;
    // the same correction was sent with it: received just before it, so listed above it
    const group = (correctors.get(m.retracts) || []).filter((c) => c.index < index && c.m.account_id === m.account_id);
    const same = group.filter((c) => c.m.effective_at === m.effective_at && !used.has(c.index)).sort((a, b) => b.index - a.index)[0];
    if (same) used.add(same.index);
    rows.push({ kind: same ? "corrected" : "withdrawn", at: m.effective_at, account: m.account_id, old: m, now: same?.m,
                late: lateEvents(group), id: m.record_id || m.movement_id });
  });
  records.forEach((m, index) => {
    if (m.record === "retraction" || used.has(index)) return;
    if (retracted.get(m.movement_id)?.index < index) return;  // superseded: its correction line says what it was
    const group = (m.corrects || []).length ? [{ m, index }] : [];
    rows.push({ kind: "movement", at: m.effective_at, account: m.account_id, now: m, late: lateEvents(group),
                id: m.record_id || m.movement_id });
  });
  // newest effective first; at one instant, newest received first (a stable sort keeps that order)
  const order = new Map(records.map((m, i) => [m.record_id || m.movement_id, i]));
  return rows.sort((a, b) => instantKey(b.at).localeCompare(instantKey(a.at)) || order.get(a.id) - order.get(b.id));
}

function correctionText(row) {
  const old = row.old, now = row.now;
  const was = `${old.type} ${money(negate(old.amount), old.currency)}`;
  if (!now) return `withdrawn: ${was}${late(row.late)}`;
  const is = `${now.type} ${money(now.amount, now.currency)}`;
  if (was !== is) return `corrected: ${was} → ${is}${late(row.late)}`;
  return `corrected: ${was}, MRR after ${money(old.mrr_after, old.currency)} → ${money(now.mrr_after, now.currency)}${late(row.late)}`;
}

function latest(movements) {
  const table = $("latest");
  headRow(table, ["Effective (UTC)", "Account", "Movement", "Amount", "MRR after"]);
  const rows = feedRows(movements.filter((m) => m.currency === currency)).slice(0, FEED_ROWS);
  for (const row of rows) {
    const fresh = seen.size && !seen.has(row.id) ? "fresh" : "";
    const tr = el("tr", { class: `${row.kind} ${fresh}`.trim(), "data-effective": instantKey(row.at), "data-kind": row.kind });
    tr.append(el("td", { class: "when" }, when(row.at)), el("td", { class: "acct" }, accountLink(row.account)));
    if (row.kind === "movement") {
      const m = row.now, down = DOWN.has(m.type);
      const type = el("td", {}, m.type);
      if (row.late.length) type.append(" ", el("span", { class: "badge", title: `caused by ${late(row.late).slice(2)}` }, "late"));
      tr.append(type, el("td", { class: "money " + (down ? "neg" : "pos") }, signedMoney(down ? negate(m.amount) : m.amount, m.currency)),
                el("td", { class: "money" }, money(m.mrr_after, m.currency)));
    } else {
      const text = correctionText(row);
      tr.append(el("td", { colspan: 3, class: "correction", title: text }, text));
    }
    table.append(tr);
  }
  if (!rows.length) table.append(el("tr", {}, el("td", { colspan: 5 }, `no ${currency} movement among the latest records`)));
  seen = new Set(movements.map((m) => m.record_id || m.movement_id));
}

// Scheduled changes: per currency, the MRR each movement type will move in the window, and the accounts
// behind it; then the next scheduled movements of the chosen currency.
function scheduledChanges(data) {
  const panel = $("scheduled");
  const totals = $("scheduled-totals");
  headRow(totals, ["Currency", ...KINDS.map(([kind]) => kind[0].toUpperCase() + kind.slice(1)), "Accounts"]);
  const codes = [...new Set(data.totals.map((t) => t.currency))];
  for (const code of codes) {
    const mine = data.totals.filter((t) => t.currency === code);
    const tr = el("tr", { class: code === currency ? "current" : "", "data-currency": code });
    tr.append(el("td", {}, code));
    for (const [kind] of KINDS) {
      const t = mine.find((x) => x.type === kind);
      const down = DOWN.has(kind);
      const td = el("td", { class: "money " + (t && down ? "neg" : ""), "data-type": kind },
                    t ? money(down ? negate(t.amount) : t.amount, code) : "–");
      if (t) td.setAttribute("title", `${t.movements} movements, ${t.accounts.length} accounts`);
      tr.append(td);
    }
    tr.append(el("td", {}, count(new Set(mine.flatMap((t) => t.accounts)).size)));
    totals.append(tr);
  }
  if (!codes.length) totals.append(el("tr", {}, el("td", { colspan: KINDS.length + 2 }, `nothing scheduled in the next ${data.days} days`)));
  const next = $("scheduled-next");
  headRow(next, ["Effective (UTC)", "Account", "Movement", "Amount"]);
  for (const m of data.movements.filter((m) => !currency || m.currency === currency).slice(0, 8)) {
    const down = DOWN.has(m.type);
    next.append(el("tr", {}, el("td", { class: "when" }, when(m.effective_at)), el("td", { class: "acct" }, accountLink(m.account_id)),
                   el("td", {}, m.type), el("td", { class: "money " + (down ? "neg" : "") }, money(down ? negate(m.amount) : m.amount, m.currency))));
  }
  panel.querySelector(".note")?.remove();
  if (data.truncated) panel.append(el("p", { class: "note" }, `the first ${data.movements.length} movements of the window are listed`));
  panel.setAttribute("data-days", String(data.days));
}

// ---------------------------------------------------------------------------------------------------------
// One account's movements, in a dialog: opened by its link (#account=ID), which can be bookmarked.

let accountShown = null, accountBefore = null;
async function showAccount(id, older = false) {
  const dialog = $("account");
  const table = $("account-moves");
  if (!older) {
    accountShown = id;
    $("account-id").textContent = id;
    $("account-mrr").textContent = "loading…";
    headRow(table, ["Effective (UTC)", "Movement", "Amount", "MRR before → after"]);
    $("account-older").hidden = true;
    if (!dialog.open) dialog.showModal();
  }
  const query = older && accountBefore ? `?before=${encodeURIComponent(accountBefore)}` : "";
  let data;
  try {
    data = await get(`/api/accounts/${encodeURIComponent(id)}${query}`);
  } catch (err) {
    if (err instanceof Unauthorized) { dialog.close(); askForToken(); return; }
    $("account-mrr").textContent = err.message.includes("no account") ? `No account ${id} in the view.` : `Could not load it: ${err.message}`;
    return;
  }
  if (accountShown !== id) return;
  const mrr = Object.entries(data.mrr);
  $("account-mrr").replaceChildren("Current MRR: ", ...(mrr.length ? mrr.flatMap(([code, v], i) => [i ? " · " : "", el("b", {}, money(v, code))]) : ["none"]));
  for (const m of [...data.movements].reverse()) {
    const down = DOWN.has(m.type);
    table.append(el("tr", { "data-effective": instantKey(m.effective_at) }, el("td", { class: "when" }, when(m.effective_at)), el("td", {}, m.type),
                    el("td", { class: "money " + (down ? "neg" : "pos") }, signedMoney(down ? negate(m.amount) : m.amount, m.currency)),
                    el("td", { class: "money" }, `${money(m.mrr_before, m.currency)} → ${money(m.mrr_after, m.currency)}`)));
  }
  accountBefore = data.next_before;
  $("account-older").hidden = !data.next_before;
}
$("account-older").addEventListener("click", () => accountShown && showAccount(accountShown, true));
$("account-close").addEventListener("click", () => $("account").close());
$("account").addEventListener("close", () => {
  accountShown = null;
  if (location.hash.startsWith("#account=")) history.replaceState(null, "", location.pathname + location.search);
});
function route() {
  if (locked) return;
  const hash = location.hash;
  if (hash.startsWith("#account=")) {
    let id;
    try { id = decodeURIComponent(hash.slice("#account=".length)); } catch { return; }
    if (id) showAccount(id);
  } else if (hash === "#about-rejected") {
    $("about-rejected").open = true;
  }
}
window.addEventListener("hashchange", route);

// ---------------------------------------------------------------------------------------------------------
// Refresh: everything from the API, for the chosen currency.

async function refresh() {
  if (locked) return;
  const cur = await get("/api/current");
  const select = $("currency");
  const codes = cur.currencies.map((r) => r.currency);
  if ([...select.options].map((o) => o.value).join() !== codes.join()) {
    select.replaceChildren(...codes.map((c) => el("option", { value: c }, c)));
    if (!currency || !codes.includes(currency)) currency = codes.includes("USD") ? "USD" : codes[0];
    select.value = currency;
  }
  const soon = get(`/api/scheduled?days=${scheduledDays}`);  // every currency: the panel shows them all
  const row = cur.currencies.find((r) => r.currency === currency);
  if (!row) { scheduledChanges(await soon); return; }  // nothing in effect yet; something may be scheduled
  for (const node of document.querySelectorAll(".cur")) node.textContent = `(${currency})`;
  const [months, per, moves, scheduled] = await Promise.all([
    get(`/api/months?currency=${currency}`), get(`/api/periods?currency=${currency}`),
    get(`/api/movements/latest?limit=${FEED_RECORDS}`), soon]);
  kpis(row, cur.rejected);
  closingChart(months.months);
  movementsChart(months.months);
  bridge(row);
  periods(per);
  latest(moves.movements);
  scheduledChanges(scheduled);
  $("forget-token").hidden = token() === null;
  shown = `as of ${monthName(cur.as_of)} · updated ${new Date().toLocaleTimeString(LOCALE)}`;
  renderStatus();
}

let shown = "", connection = "connecting";  // what the status line says: the stream's state, the figures' time
function renderStatus() {
  $("status").textContent = shown ? `${connection} · ${shown}` : connection + "…";
  $("status").classList.toggle("live", connection === "live");
}

function showError(err) {
  if (err instanceof Unauthorized) { askForToken(); return; }
  $("status").textContent = "waiting for data… " + err.message;
  $("status").classList.remove("live");
}
let pending = null;
function schedule() { if (!pending) pending = setTimeout(() => { pending = null; refresh().catch(showError); }, 150); }

// ---------------------------------------------------------------------------------------------------------
// The event stream. EventSource cannot send an Authorization header, so /api/events is read with fetch and
// a stream reader: blocks of `event:` / `data:` lines separated by a blank line. It reconnects with backoff.

let stream = null, generation = 0;
function stopListening() {
  generation++;
  stream?.abort();
  stream = null;
}
function setLive(on) {
  connection = on ? "live" : "reconnecting";
  renderStatus();
}
function dispatch(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;  // a comment: the keep-alive
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  if (event === "update" && data.length) schedule();
}
async function listen() {
  stopListening();
  const mine = ++generation;
  let delay = 1000;
  while (mine === generation) {
    const controller = new AbortController();
    stream = controller;
    let idle = null;
    const watchdog = () => { clearTimeout(idle); idle = setTimeout(() => controller.abort(), 15000); };  // keep-alives come twice a second
    try {
      watchdog();
      const response = await fetch("/api/events", { cache: "no-store", headers: authHeaders(), signal: controller.signal });
      if (response.status === 401) { clearTimeout(idle); askForToken(); return; }
      if (!response.ok || !response.body) throw new Error(`events: ${response.status}`);
      setLive(true);
      delay = 1000;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        watchdog();
        buffer = (buffer + value).replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          dispatch(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch {
      // the stream ended, the server went away or the watchdog aborted it: reconnect below
    } finally {
      clearTimeout(idle);
    }
    if (mine !== generation) return;
    setLive(false);
    await new Promise((resolve) => setTimeout(resolve, delay + Math.random() * 500));
    delay = Math.min(delay * 2, 30000);
    schedule();  // catch up on what changed while disconnected
  }
}

function start() {
  refresh().then(() => { listen(); route(); }, (err) => { showError(err); if (!(err instanceof Unauthorized)) listen(); });
}

$("currency").addEventListener("change", (e) => { currency = e.target.value; seen = new Set(); refresh().catch(showError); });
$("scheduled-days").addEventListener("change", (e) => { scheduledDays = Number(e.target.value); refresh().catch(showError); });
setInterval(() => { if (!locked) schedule(); }, 10000);  // and a slow poll, in case a proxy holds the event stream
start();
