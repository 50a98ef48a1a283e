// The live revenue page: reads the mrr-stream API on the same origin, redraws on server-sent events.
"use strict";
const KINDS = [["new", "new_mrr", 1], ["expansion", "expansion_mrr", 1], ["reactivation", "reactivation_mrr", 1],
               ["contraction", "contraction_mrr", -1], ["churn", "churn_mrr", -1]];
const $ = (id) => document.getElementById(id);
let currency = null;
let seen = new Set();
let scheduledDays = 30;  // the scheduled changes' window: 30, 60 or 90 days
const DOWN = new Set(["contraction", "churn"]);  // shown as negative amounts, in red

// Money arrives as exact decimal strings; it is only formatted here, never added up.
function money(text) {
  if (text === null || text === undefined) return "–";
  const [whole, frac] = String(text).split(".");
  const sign = whole.startsWith("-") ? "-" : "";
  return sign + whole.replace("-", "").replace(/\B(?=(\d{3})+(?!\d))/g, ",") + "." + (frac || "00");
}
const pct = (r) => (r === null || r === undefined) ? "–" : (Number(r) * 100).toFixed(1) + "%";
const num = (text) => Number(text);  // for drawing only
const el = (tag, attrs = {}, text = "") => {
  const node = document.createElementNS(tag === "svg" || attrs.svg ? "http://www.w3.org/2000/svg" : "http://www.w3.org/1999/xhtml", tag);
  for (const [k, v] of Object.entries(attrs)) if (k !== "svg") node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
};

async function get(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response.json();
}

function kpis(row) {
  const box = $("kpis");
  box.replaceChildren();
  const items = [["Current MRR", money(row.closing_mrr)], ["Net new MRR this month", money(row.net_new_mrr), Number(row.net_new_mrr) < 0 ? "neg" : "pos"],
                 ["Customers", String(row.customers_closing)], ["ARPA", money(row.arpa)], ["NRR", pct(row.nrr)],
                 ["GRR", pct(row.grr)], ["Quick ratio", row.quick_ratio === null ? "–" : Number(row.quick_ratio).toFixed(2)]];
  for (const [label, value, cls] of items) {
    const card = el("div", { class: "kpi" });
    card.append(el("div", { class: "label" }, label), el("div", { class: "value " + (cls || ""), "data-kpi": label }, value));
    box.append(card);
  }
}

function chart(rows) {
  const svg = $("chart");
  svg.replaceChildren();
  const W = 960, H = 320, L = 70, R = 70, T = 12, B = 28;
  if (!rows.length) { svg.append(el("text", { svg: 1, x: W / 2, y: H / 2, "text-anchor": "middle" }, "no data yet")); return; }
  const up = rows.map((r) => num(r.new_mrr) + num(r.expansion_mrr) + num(r.reactivation_mrr));
  const down = rows.map((r) => num(r.contraction_mrr) + num(r.churn_mrr));
  const top = Math.max(1, ...up), bottom = Math.max(1, ...down);
  const y = (v) => T + (H - T - B) * (top - v) / (top + bottom);
  const closeMax = Math.max(1, ...rows.map((r) => num(r.closing_mrr)));
  const yc = (v) => y(0) - (y(0) - T) * v / closeMax;  // the line's zero sits on the columns' zero axis
  const step = (W - L - R) / rows.length, bar = Math.max(4, step * 0.6);
  svg.append(el("line", { svg: 1, x1: L, x2: W - R, y1: y(0), y2: y(0), stroke: "#999" }));
  for (const v of [top, -bottom]) svg.append(el("text", { svg: 1, x: L - 6, y: y(v) + 4, "text-anchor": "end", "font-size": 11 }, money(v.toFixed(2))));
  svg.append(el("text", { svg: 1, x: W - R + 6, y: yc(closeMax) + 4, "font-size": 11 }, money(closeMax.toFixed(2))));
  rows.forEach((r, i) => {
    const x = L + i * step + (step - bar) / 2;
    let pos = 0, neg = 0;
    for (const [kind, field, sign] of KINDS) {
      const v = num(r[field]);
      if (!v) continue;
      const y0 = sign > 0 ? y(pos + v) : y(-neg);
      const rect = el("rect", { svg: 1, x, y: y0, width: bar, height: Math.max(0.5, Math.abs(y(v) - y(0))), fill: `var(--${kind})` });
      rect.append(el("title", { svg: 1 }, `${r.month} ${kind}: ${money(r[field])}`));
      svg.append(rect);
      if (sign > 0) pos += v; else neg += v;
    }
    svg.append(el("text", { svg: 1, x: x + bar / 2, y: H - 8, "text-anchor": "middle", "font-size": 10 }, r.month.slice(2)));
  });
  const points = rows.map((r, i) => `${L + i * step + step / 2},${yc(num(r.closing_mrr))}`).join(" ");
  svg.append(el("polyline", { svg: 1, points, fill: "none", stroke: "#1d2330", "stroke-width": 2 }));
  const legend = $("legend");
  legend.replaceChildren();
  for (const [kind] of KINDS) { const s = el("span"); const i = el("i"); i.style.background = `var(--${kind})`; s.append(i, kind); legend.append(s); }
  const s = el("span"); s.textContent = "— closing MRR"; legend.append(s);
}

function periods(data) {
  const table = $("periods");
  table.replaceChildren();
  const head = el("tr");
  for (const h of ["Period", "Months", "Net new MRR", "Year before", "Change"]) head.append(el("th", {}, h));
  table.append(head);
  const entry = (data.currencies || {})[currency] || {};
  for (const [label, key] of [["Quarter to date", "qtd"], ["Year to date", "ytd"]]) {
    const p = entry[key] || {};
    const now = p.current, before = p.previous_year;
    const tr = el("tr");
    const change = now && before ? (num(now.net_new_mrr) - num(before.net_new_mrr)).toFixed(2) : null;
    tr.append(el("td", {}, label), el("td", {}, now ? `${now.first_month} – ${now.last_month}` : "–"),
              el("td", {}, now ? money(now.net_new_mrr) : "–"), el("td", {}, before ? money(before.net_new_mrr) : "–"),
              el("td", {}, change === null ? "–" : money(change)));
    table.append(tr);
  }
}

function latest(movements) {
  const table = $("latest");
  table.replaceChildren();
  const head = el("tr");
  for (const h of ["When (UTC)", "Account", "Type", "Amount", "MRR after"]) head.append(el("th", {}, h));
  table.append(head);
  for (const m of movements.filter((m) => m.currency === currency).slice(0, 12)) {
    const tr = el("tr", { class: seen.size && !seen.has(m.record_id) ? "fresh" : "" });
    tr.append(el("td", {}, m.effective_at.replace("T", " ").slice(0, 16)), el("td", {}, m.account_id),
              el("td", {}, m.record === "retraction" ? `${m.type} (retracted)` : m.type), el("td", {}, money(m.amount)),
              el("td", {}, money(m.mrr_after)));
    table.append(tr);
  }
  seen = new Set(movements.map((m) => m.record_id));
}

// Scheduled changes: per currency, the MRR each movement type will move in the window, and the accounts
// behind it; then the next scheduled movements of the chosen currency.
function scheduledChanges(data) {
  const panel = $("scheduled");
  const totals = $("scheduled-totals");
  totals.replaceChildren();
  const head = el("tr");
  for (const h of ["Currency", ...KINDS.map(([kind]) => kind[0].toUpperCase() + kind.slice(1)), "Accounts"]) head.append(el("th", {}, h));
  totals.append(head);
  const codes = [...new Set(data.totals.map((t) => t.currency))];
  for (const code of codes) {
    const mine = data.totals.filter((t) => t.currency === code);
    const tr = el("tr", { class: code === currency ? "current" : "", "data-currency": code });
    tr.append(el("td", {}, code));
    for (const [kind] of KINDS) {
      const t = mine.find((x) => x.type === kind);
      const down = DOWN.has(kind);
      const td = el("td", { class: t && down ? "neg" : "", "data-type": kind }, t ? (down ? "-" : "") + money(t.amount) : "–");
      if (t) td.setAttribute("title", `${t.movements} movements, ${t.accounts.length} accounts`);
      tr.append(td);
    }
    tr.append(el("td", {}, String(new Set(mine.flatMap((t) => t.accounts)).size)));
    totals.append(tr);
  }
  if (!codes.length) {
    const tr = el("tr");
    tr.append(el("td", { colspan: KINDS.length + 2 }, `nothing scheduled in the next ${data.days} days`));
    totals.append(tr);
  }
  const next = $("scheduled-next");
  next.replaceChildren();
  const head2 = el("tr");
  for (const h of ["When (UTC)", "Account", "Type", "Amount"]) head2.append(el("th", {}, h));
  next.append(head2);
  for (const m of data.movements.filter((m) => !currency || m.currency === currency).slice(0, 8)) {
    const down = DOWN.has(m.type);
    const tr = el("tr");
    tr.append(el("td", {}, m.effective_at.replace("T", " ").slice(0, 16)), el("td", {}, m.account_id), el("td", {}, m.type),
              el("td", { class: down ? "neg" : "" }, (down ? "-" : "") + money(m.amount)));
    next.append(tr);
  }
  panel.querySelector(".note")?.remove();
  if (data.truncated) panel.append(el("p", { class: "note" }, `the first ${data.movements.length} movements of the window are listed`));
  panel.setAttribute("data-days", String(data.days));
}

async function refresh() {
  const cur = await get("/api/current");
  const select = $("currency");
  const codes = cur.currencies.map((r) => r.currency);
  if (select.options.length !== codes.length) {
    select.replaceChildren(...codes.map((c) => el("option", { value: c }, c)));
    if (!currency || !codes.includes(currency)) currency = codes.includes("USD") ? "USD" : codes[0];
    select.value = currency;
  }
  const soon = get(`/api/scheduled?days=${scheduledDays}`);  // every currency: the panel shows them all
  const row = cur.currencies.find((r) => r.currency === currency);
  if (!row) { scheduledChanges(await soon); return; }  // nothing in effect yet; something may be scheduled
  kpis(row);
  const [months, per, moves, scheduled] = await Promise.all([get(`/api/months?currency=${currency}`), get(`/api/periods?currency=${currency}`),
                                                             get("/api/movements/latest?limit=200"), soon]);
  chart(months.months);
  periods(per);
  latest(moves.movements);
  scheduledChanges(scheduled);
  $("status").textContent = `live · as of ${cur.as_of} · updated ${new Date().toLocaleTimeString()}`;
}

$("currency").addEventListener("change", (e) => { currency = e.target.value; refresh(); });
$("scheduled-days").addEventListener("change", (e) => { scheduledDays = Number(e.target.value); refresh().catch(showError); });
let pending = null;
function schedule() { if (!pending) pending = setTimeout(() => { pending = null; refresh().catch(showError); }, 150); }
function showError(err) { $("status").textContent = "waiting for data… " + err.message; $("status").classList.remove("live"); }
function connect() {
  const source = new EventSource("/api/events");
  source.addEventListener("update", () => { $("status").classList.add("live"); schedule(); });
  source.onerror = () => { $("status").classList.remove("live"); };
  setInterval(schedule, 10000);  // and a slow poll, in case a proxy drops the event stream
}
refresh().catch(showError).finally(connect);
