// The upstox-bot dashboard: plain ES module, no build step. Talks to /api/v1 with the API key
// kept in sessionStorage, and follows /api/v1/ws (the key sent as its first message) for live
// positions, account, signals, orders.

const KEY_STORE = "upstox-bot.api-key";
const API = "/api/v1";
const LIST_LIMIT = 25;
const POLL_MS = 5000;
const QUOTE_BATCH = 100;
const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 30000;
const PING_MS = 20000;

const $ = (sel) => document.querySelector(sel);

const state = {
  key: null,
  scope: null,
  socket: null,
  attempts: 0,
  reconnectTimer: null,
  pingTimer: null,
  pollTimer: null,
  refreshTimers: {},
  settings: null,
  universe: [],
  prices: new Map(),
  charts: {},
  lastDayPoint: 0,
  stopped: true,
};

// --- API ---------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, text) {
    super(text);
    this.status = status;
  }
}

/** The API's error text: {"error", "detail"} or FastAPI's 422 list (naming the field). */
function errorText(status, body) {
  if (body && Array.isArray(body.detail)) {
    return body.detail
      .map((d) => `${(d.loc || []).filter((p) => p !== "body").join(".")}: ${d.msg}`)
      .join("; ");
  }
  if (body && typeof body.detail === "string") {
    return body.error ? `${body.error}: ${body.detail}` : body.detail;
  }
  return `HTTP ${status}`;
}

async function api(path, { method = "GET", body } = {}) {
  const headers = { "X-API-Key": state.key };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(API + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    if (response.status === 401 && !state.stopped) logout(errorText(401, data));
    throw new ApiError(response.status, errorText(response.status, data));
  }
  return data;
}

// --- formatting --------------------------------------------------------------------------------

// Money as everywhere else (the console, the CLI, alerts): Indian digit grouping, the sign
// first: -₹1,23,456.78; a P&L also marks a gain: +₹1,234.50.
const money = new Intl.NumberFormat("en-IN", { minimumFractionDigits: 2, maximumFractionDigits: 2 });

function rupees(value) {
  if (value === null || value === undefined || value === "") return "–";
  const n = Number(value);
  if (!Number.isFinite(n)) return "–";
  return (n < 0 ? "-₹" : "₹") + money.format(Math.abs(n));
}

function pnl(value) {
  const text = rupees(value);
  return Number(value) > 0 ? `+${text}` : text;
}

function signed(el, value) {
  el.textContent = pnl(value);
  el.classList.toggle("gain", Number(value) > 0);
  el.classList.toggle("loss", Number(value) < 0);
}

function pnlCell(value) {
  const td = cell(pnl(value), Number(value) > 0 ? "gain num pnl" : Number(value) < 0 ? "loss num pnl" : "num pnl");
  return td;
}

const number2 = new Intl.NumberFormat("en-IN", { minimumFractionDigits: 2, maximumFractionDigits: 2 });

/** Date and time in IST, for lists that span days: "25 Nov 10:32:05". */
function stamp(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  const day = d.toLocaleDateString("en-IN", { timeZone: "Asia/Kolkata", day: "2-digit", month: "short" });
  return `${day} ${clock(iso)}`;
}

function istDate(iso) {
  return new Date(iso).toLocaleDateString("en-CA", { timeZone: "Asia/Kolkata" }); // YYYY-MM-DD
}

/** Seconds for the charts' time axis, which shows UTC: shifted so that it reads IST. */
function chartTime(iso) {
  return Math.floor(Date.parse(iso) / 1000) + 19800;
}

function clock(iso) {
  if (!iso) return "–";
  return new Date(iso).toLocaleTimeString("en-IN", {
    timeZone: "Asia/Kolkata",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    hour12: false,
  });
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text ?? "–";
  if (cls) td.className = cls;
  return td;
}

function fillRows(tbody, items, render) {
  tbody.replaceChildren(...items.map(render));
}

// --- messages and confirmation -----------------------------------------------------------------

function showError(text) {
  const el = $("#control-error");
  el.textContent = text;
  el.hidden = false;
  $("#control-ok").hidden = true;
}

function showOk(text) {
  const el = $("#control-ok");
  el.textContent = text;
  el.hidden = false;
  $("#control-error").hidden = true;
}

function confirmAction(text) {
  const dialog = $("#confirm");
  $("#confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
  });
}

/** Ask, then run a trade-scope command; show its result or the API's refusal. */
async function command(question, run, done) {
  if (!(await confirmAction(question))) return;
  try {
    const result = await run();
    showOk(done(result));
  } catch (err) {
    showError(err.message);
  }
  refreshRest();
}

// --- views -------------------------------------------------------------------------------------

function renderPositions(positions) {
  const tbody = $("#positions tbody");
  $("#positions-empty").hidden = positions.length > 0;
  if (state.positionCount !== undefined && state.positionCount !== positions.length) {
    refreshSoon("trades", loadDay); // a position opened or closed: the day's views follow
  }
  state.positionCount = positions.length;
  state.openPositions = positions;
  fillRows(tbody, positions, (p) => {
    const tr = document.createElement("tr");
    tr.dataset.key = p.instrument_key;
    const trailing = p.trailing_active ? `on @ ${rupees(p.trail_stop)}` : "off";
    tr.append(
      cell(p.trading_symbol || p.instrument_key, "symbol"),
      cell(p.direction, "opt"),
      cell(p.quantity, "num"),
      cell(rupees(p.entry_price), "opt num"),
      cell(rupees(p.last_price), "last opt num"),
      cell(rupees(p.effective_stop ?? p.stop), "opt num"),
      cell(rupees(p.target), "opt num"),
      cell(trailing, "opt"),
      pnlCell(p.unrealised_pnl),
    );
    const action = document.createElement("td");
    if (p.exit_pending) {
      action.textContent = "closing…";
    } else {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "small danger trade-only close-position";
      button.textContent = "Close";
      button.disabled = state.scope !== "trade";
      const symbol = p.trading_symbol || p.instrument_key;
      button.addEventListener("click", () =>
        command(
          `Close the ${p.direction} position in ${symbol} (${p.quantity}) at market?`,
          () => api(`/positions/${encodeURIComponent(p.instrument_key)}/close`, { method: "POST" }),
          () => `Closing ${symbol}.`,
        ),
      );
      action.append(button);
    }
    tr.append(action);
    return tr;
  });
}

function renderAccount(a) {
  signed($("#day-pnl"), a.day_pnl);
  signed($("#realised-pnl"), a.realised_pnl);
  signed($("#unrealised-pnl"), a.unrealised_pnl);
  $("#charges").textContent = rupees(a.charges);
  $("#trades-today").textContent = a.trades ?? "–";
  $("#capital").textContent = rupees(a.capital);
  const limit = Number(a.daily_loss_limit);
  const used = Math.max(0, -Number(a.day_pnl));
  const share = limit > 0 ? Math.min(100, (100 * used) / limit) : 0;
  const gauge = $("#loss-gauge");
  gauge.setAttribute("aria-valuenow", share.toFixed(0));
  gauge.dataset.level = share >= 100 ? "hit" : share >= 70 ? "warn" : "ok";
  gauge.querySelector(".gauge-fill").style.width = `${share}%`;
  $("#loss-used").textContent = `${rupees(used)} (${share.toFixed(0)}%)`;
  $("#loss-limit").textContent = rupees(limit);
  $("#loss-hit").hidden = !a.loss_limit_hit;
  renderKillSwitch(a.kill_switch, a.kill_switch_reason);
  state.account = a;
  addDayPoint(Number(a.capital) + Number(a.day_pnl), a.as_of);
  updateTodayInHistory(a);
}

function renderKillSwitch(active, reason) {
  const pill = $("#kill-state");
  pill.textContent = active ? "ON: no new entries" : "off";
  pill.className = active ? "pill bad" : "pill good";
  if (reason !== undefined) $("#kill-reason").textContent = reason || "";
  const button = $("#kill-switch");
  button.dataset.active = String(Boolean(active));
  button.textContent = active ? "Turn off" : "Turn on";
  button.className = active ? "trade-only" : "danger trade-only";
  button.disabled = state.scope !== "trade";
}

function renderRisk(r) {
  renderKillSwitch(r.kill_switch, r.kill_switch_reason);
  $("#risk-positions").textContent = `${r.open_positions}/${r.max_open_positions}`;
  $("#risk-orders").textContent = `${r.orders_last_minute}/${r.max_orders_per_minute}`;
  $("#risk-window").textContent = r.entry_window;
}

function renderSignals(signals) {
  fillRows($("#signals tbody"), signals, (s) => {
    const tr = document.createElement("tr");
    tr.dataset.status = s.status;
    const outcome = cell(s.outcome || s.status, "outcome");
    outcome.title = `strategy: ${s.reason}`;
    tr.append(
      cell(stamp(s.created_at), "opt"),
      cell(s.trading_symbol || s.instrument_key, "symbol"),
      cell(s.type, "opt"),
      cell(s.status, `status-${s.status}`),
      outcome,
    );
    return tr;
  });
}

const WORKING = new Set(["open", "partially_filled"]);

/** A working LIMIT order's price, shown where the average fill price will be. */
function limitText(o) {
  if (!o.limit_price) return "–";
  return `${o.side === "buy" ? "≤" : "≥"} ${rupees(o.limit_price)}`;
}

function renderOrders(orders) {
  fillRows($("#orders tbody"), orders, (o) => {
    const tr = document.createElement("tr");
    tr.dataset.purpose = o.purpose;
    const status = cell(o.status, `status-${o.status}`);
    if (o.rejection_reason) status.title = o.rejection_reason;
    tr.append(
      cell(stamp(o.created_at), "opt"),
      cell(o.trading_symbol || o.instrument_key, "symbol"),
      cell(o.side),
      cell(o.quantity, "opt num"),
      cell(o.purpose, "opt"),
      status,
      cell(o.average_price ? rupees(o.average_price) : limitText(o), "num"),
      modifyCell(o),
    );
    return tr;
  });
}

/** A working order's Modify button: asks for a new limit price (and, for an entry, a smaller
 * quantity) and sends PUT /orders/{id}; the API validates and audits it. */
function modifyCell(o) {
  const td = document.createElement("td");
  if (!WORKING.has(o.status)) return td;
  const button = document.createElement("button");
  button.type = "button";
  button.className = "small trade-only modify-order";
  button.textContent = "Modify";
  button.disabled = state.scope !== "trade";
  button.addEventListener("click", async () => {
    const symbol = o.trading_symbol || o.instrument_key;
    const price = window.prompt(
      `New limit price of the ${o.purpose} order in ${symbol} (₹), empty to keep:`,
      o.limit_price ?? "",
    );
    if (price === null) return;
    let quantity = "";
    if (o.purpose === "entry") {
      quantity = window.prompt(`New quantity (at most ${o.quantity}), empty to keep:`, "");
      if (quantity === null) return;
    }
    const body = { reason: "dashboard" };
    if (price.trim()) body.price = price.trim();
    if (quantity.trim()) body.quantity = Number(quantity.trim());
    try {
      const path = `/orders/${encodeURIComponent(o.client_order_id)}`;
      const result = await api(path, { method: "PUT", body });
      showOk(result.detail);
    } catch (err) {
      showError(err.message);
    }
    refreshRest();
  });
  td.append(button);
  return td;
}

function renderStrategies(strategies) {
  const list = $("#strategies");
  list.replaceChildren(
    ...strategies.map((s) => {
      const li = document.createElement("li");
      const name = document.createElement("strong");
      name.textContent = s.name;
      const desc = document.createElement("span");
      desc.className = "muted";
      desc.textContent = ` ${s.description}`;
      const button = document.createElement("button");
      button.type = "button";
      button.className = "small trade-only";
      button.disabled = state.scope !== "trade";
      const verb = s.active ? "disable" : "enable";
      button.textContent = s.active ? "Disable" : "Enable";
      button.dataset.strategy = s.name;
      button.addEventListener("click", () =>
        command(
          `${s.active ? "Disable" : "Enable (make it the trading strategy)"} ${s.name}?`,
          () => api(`/strategies/${encodeURIComponent(s.name)}/${verb}`, { method: "POST" }),
          () => `${s.name}: ${verb}d.`,
        ).then(loadStrategies),
      );
      if (s.active) {
        const pill = document.createElement("span");
        pill.className = "pill good";
        pill.textContent = "active";
        li.append(name, " ", pill, desc, button);
      } else {
        li.append(name, desc, button);
      }
      return li;
    }),
  );
}

function renderSettings(settings) {
  state.settings = settings;
  const select = $("#setting-name");
  const chosen = select.value;
  select.replaceChildren(
    ...settings.changeable.map((name) => {
      const option = document.createElement("option");
      option.value = name;
      option.textContent = name;
      return option;
    }),
  );
  if (chosen) select.value = chosen;
  showCurrentSetting();
}

function showCurrentSetting() {
  const name = $("#setting-name").value;
  const value = state.settings?.values?.[name];
  $("#setting-current").textContent = value === undefined ? "–" : JSON.stringify(value);
}

function renderUniverse() {
  const filter = $("#universe-filter").value.trim().toUpperCase();
  const rows = state.universe.filter(
    (s) => !filter || s.trading_symbol.includes(filter) || (s.name || "").toUpperCase().includes(filter),
  );
  fillRows($("#universe tbody"), rows, (s) => {
    const tr = document.createElement("tr");
    tr.dataset.symbol = s.trading_symbol;
    tr.append(
      cell(s.trading_symbol, "symbol"),
      cell(s.name, "opt"),
      cell(s.lot_size, "num"),
      cell(rupees(state.prices.get(s.instrument_key) ?? s.last_price), "last num"),
    );
    return tr;
  });
}

// --- charts ------------------------------------------------------------------------------------

function makeChart(id) {
  const el = document.getElementById(id);
  if (!window.LightweightCharts || !el) return null;
  const chart = window.LightweightCharts.createChart(el, {
    autoSize: true,
    layout: { background: { color: "transparent" }, textColor: "#9aa4b2" },
    grid: { vertLines: { color: "#1f2733" }, horzLines: { color: "#1f2733" } },
    timeScale: { timeVisible: true, secondsVisible: false },
    localization: { priceFormatter: (p) => rupees(p) },
  });
  const series = chart.addSeries(window.LightweightCharts.LineSeries, {
    color: "#4fa3ff",
    lineWidth: 2,
  });
  return { chart, series };
}

function addDayPoint(equity, asOf) {
  const chart = state.charts.day;
  if (!chart || !Number.isFinite(equity) || !state.curveLoaded) return;
  // At the market time the figures hold at (a simulated or replayed session runs on its own
  // clock); without one, at the browser's clock. The axis shows IST.
  const at = asOf ? Date.parse(asOf) : NaN;
  if (asOf && state.curveDate && istDate(asOf) !== state.curveDate) {
    refreshSoon("trades", loadDay); // a new trading date: its own curve
    return;
  }
  const now = Math.floor((Number.isFinite(at) ? at : Date.now()) / 1000) + 19800;
  const time = Math.max(now, state.lastDayPoint);
  state.lastDayPoint = time;
  chart.series.update({ time, value: equity });
}

/** The day's equity curve from the stored data (GET /account/equity), then live points. */
async function loadEquityCurve() {
  const curve = await api("/account/equity");
  state.curveDate = curve.trading_date;
  $("#equity-date").textContent = curve.trading_date;
  const chart = state.charts.day;
  if (!chart) return curve;
  const points = [];
  for (const p of curve.points) {
    const time = chartTime(p.at);
    if (points.length && points[points.length - 1].time >= time) points[points.length - 1].value = Number(p.equity);
    else points.push({ time, value: Number(p.equity) });
  }
  chart.series.setData(points);
  chart.chart.timeScale().fitContent();
  state.lastDayPoint = points.length ? points[points.length - 1].time : 0;
  state.curveLoaded = true;
  return curve;
}

async function loadAccountCurve() {
  const days = await api("/account/days?limit=365").catch(() => []);
  const chart = state.charts.account;
  if (!chart || !Array.isArray(days)) return;
  state.days = days
    .map((d) => ({ time: d.trading_date, value: Number(d.capital) + Number(d.day_pnl) }))
    .sort((a, b) => (a.time < b.time ? -1 : a.time > b.time ? 1 : 0));
  if (state.account) updateTodayInHistory(state.account, false);
  chart.series.setData(state.days);
  chart.chart.timeScale().fitContent();
}

/** Today's bar of the per-day history is the account's figure now, so the two never differ. */
function updateTodayInHistory(a, draw = true) {
  if (!state.days || !a.trading_date) return;
  const value = Number(a.capital) + Number(a.day_pnl);
  if (!Number.isFinite(value)) return;
  const last = state.days[state.days.length - 1];
  if (last && last.time === a.trading_date) last.value = value;
  else if (!last || last.time < a.trading_date) state.days.push({ time: a.trading_date, value });
  else return;
  if (draw && state.charts.account) state.charts.account.series.update({ time: a.trading_date, value });
}

// --- the day: closed trades, performance, a candle chart with the entries and exits -------------

function tradingDate() {
  return state.curveDate || state.account?.trading_date || null;
}

function renderTrades(page) {
  const items = page.items || [];
  state.trades = items;
  $("#trades-empty").hidden = items.length > 0;
  $("#trades-date").textContent = tradingDate() || "";
  const net = items.reduce((sum, t) => sum + Number(t.net_pnl), 0);
  const wins = items.filter((t) => Number(t.net_pnl) > 0).length;
  $("#trades-total").textContent = items.length
    ? `${page.total} trade(s), ${wins} won · net ${pnl(net)} after charges ${rupees(
        items.reduce((sum, t) => sum + Number(t.charges), 0),
      )}`
    : "";
  fillRows($("#trades tbody"), items, (t) => {
    const tr = document.createElement("tr");
    tr.dataset.tradeId = t.trade_id;
    tr.title = `entry ${stamp(t.entry_at)} · exit ${stamp(t.exit_at)} · ${t.strategy}`;
    tr.append(
      cell(clock(t.exit_at)),
      cell(t.trading_symbol || t.instrument_key, "symbol"),
      cell(t.direction, "opt"),
      cell(t.quantity, "opt num"),
      cell(rupees(t.entry_price), "opt num"),
      cell(rupees(t.exit_price), "opt num"),
      cell(pnl(t.gross_pnl), "opt num"),
      cell(rupees(t.charges), "opt num"),
      pnlCell(t.net_pnl),
      cell(t.exit_reason.replaceAll("_", " "), "reason"),
    );
    return tr;
  });
}

async function loadTrades() {
  const day = tradingDate();
  const query = day ? `&from=${day}&to=${day}` : "";
  renderTrades(await api(`/trades?limit=500&sort=-exit_at${query}`));
}

async function loadPerformance() {
  const day = tradingDate();
  const range = $("#perf-range").value === "day" && day ? `?from=${day}&to=${day}` : "";
  const perf = await api(`/account/performance${range}`);
  const rows = perf.strategies || [];
  $("#performance-empty").hidden = rows.length > 0;
  fillRows($("#performance tbody"), rows, (p) => {
    const tr = document.createElement("tr");
    tr.dataset.strategy = p.strategy;
    tr.append(
      cell(p.strategy, "symbol"),
      cell(p.trades, "num"),
      cell(p.win_rate === null ? "–" : `${(100 * p.win_rate).toFixed(0)}%`, "num"),
      cell(rupees(p.charges), "opt num"),
      pnlCell(p.net_pnl),
    );
    return tr;
  });
}

function candleChoices() {
  // The symbols of the day first (held or traded), then the universe.
  const seen = new Set();
  const out = [];
  const add = (key, symbol) => {
    if (!key || seen.has(key)) return;
    seen.add(key);
    out.push({ key, symbol: symbol || key });
  };
  for (const p of state.openPositions || []) add(p.instrument_key, p.trading_symbol);
  for (const t of state.trades || []) add(t.instrument_key, t.trading_symbol);
  for (const u of state.universe || []) add(u.instrument_key, u.trading_symbol);
  return out;
}

function renderCandleChoices() {
  const select = $("#candle-symbol");
  const chosen = select.value;
  const choices = candleChoices();
  select.replaceChildren(
    ...choices.map((c) => Object.assign(document.createElement("option"), { value: c.key, textContent: c.symbol })),
  );
  if (chosen && choices.some((c) => c.key === chosen)) select.value = chosen;
}

async function loadCandles() {
  const key = $("#candle-symbol").value;
  const day = tradingDate();
  if (!key || !day) return;
  state.charts.candles ??= makeCandleChart("chart-candles");
  const chart = state.charts.candles;
  if (!chart) return;
  // The session of the trading date, in IST.
  const since = `${day}T09:15:00+05:30`;
  const until = `${day}T15:30:00+05:30`;
  const candles = await api(
    `/symbols/${encodeURIComponent(key)}/candles?interval_s=60&since=${encodeURIComponent(since)}` +
      `&until=${encodeURIComponent(until)}&limit=400`,
  );
  chart.series.setData(
    candles.map((c) => ({
      time: chartTime(c.start_at),
      open: Number(c.open),
      high: Number(c.high),
      low: Number(c.low),
      close: Number(c.close),
    })),
  );
  const markers = [];
  const minute = (iso) => Math.floor(chartTime(iso) / 60) * 60;
  for (const t of (state.trades || []).filter((t) => t.instrument_key === key)) {
    const long = t.direction === "long";
    markers.push({
      time: minute(t.entry_at),
      position: long ? "belowBar" : "aboveBar",
      color: "#4fa3ff",
      shape: long ? "arrowUp" : "arrowDown",
      text: `${long ? "buy" : "sell"} ${t.quantity} @ ${rupees(t.entry_price)}`,
    });
    markers.push({
      time: minute(t.exit_at),
      position: long ? "aboveBar" : "belowBar",
      color: Number(t.net_pnl) >= 0 ? "#3fb950" : "#f85149",
      shape: long ? "arrowDown" : "arrowUp",
      text: `${t.exit_reason.replaceAll("_", " ")} ${pnl(t.net_pnl)}`,
    });
  }
  for (const p of (state.openPositions || []).filter((p) => p.instrument_key === key)) {
    const long = p.direction === "long";
    markers.push({
      time: minute(p.entry_at),
      position: long ? "belowBar" : "aboveBar",
      color: "#4fa3ff",
      shape: long ? "arrowUp" : "arrowDown",
      text: `${long ? "buy" : "sell"} ${p.quantity} @ ${rupees(p.entry_price)} (open)`,
    });
  }
  markers.sort((a, b) => a.time - b.time);
  chart.markers.setMarkers(markers);
  state.candleMarkers = markers.length;
  $("#chart-candles").dataset.markers = String(markers.length);
  $("#chart-candles").dataset.candles = String(candles.length);
  chart.chart.timeScale().fitContent();
}

function makeCandleChart(id) {
  const el = document.getElementById(id);
  const lib = window.LightweightCharts;
  if (!lib || !el) return null;
  const chart = lib.createChart(el, {
    autoSize: true,
    layout: { background: { color: "transparent" }, textColor: "#9aa4b2" },
    grid: { vertLines: { color: "#1f2733" }, horzLines: { color: "#1f2733" } },
    timeScale: { timeVisible: true, secondsVisible: false },
    localization: { priceFormatter: (p) => rupees(p) },
  });
  const series = chart.addSeries(lib.CandlestickSeries, {
    upColor: "#3fb950",
    downColor: "#f85149",
    borderVisible: false,
    wickUpColor: "#3fb950",
    wickDownColor: "#f85149",
  });
  return { chart, series, markers: lib.createSeriesMarkers(series, []) };
}

/** Everything about the trading date: the curve first (it names the date), then the rest. */
async function loadDay() {
  await loadEquityCurve().catch((err) => console.warn("equity", err));
  await loadTrades();
  renderCandleChoices();
  await Promise.allSettled([loadPerformance(), loadCandles(), loadAccountCurve()]);
}

// --- backtests (shown only when the API serves them) -------------------------------------------

function pct(value) {
  return value === null || value === undefined ? "–" : `${number2.format(Number(value))}%`;
}

function paramsText(params) {
  const entries = Object.entries(params || {});
  return entries.length ? entries.map(([k, v]) => `${k}=${v}`).join(", ") : "defaults";
}

// How each summary figure reads: money, percent or a plain number.
const METRIC_FORMAT = {
  start_capital: rupees,
  final_equity: rupees,
  net_pnl: pnl,
  gross_pnl: pnl,
  charges: rupees,
  return_pct: pct,
  cagr_pct: pct,
  max_drawdown_pct: pct,
  win_rate_pct: pct,
  exposure_pct: pct,
  sharpe: (v) => number2.format(Number(v)),
  sortino: (v) => number2.format(Number(v)),
  profit_factor: (v) => number2.format(Number(v)),
};

function metricText(name, value) {
  if (value === null || value === undefined) return "–";
  const format = METRIC_FORMAT[name];
  return format ? format(value) : String(value);
}

async function loadBacktests() {
  let page;
  try {
    page = await api("/backtests?limit=20");
  } catch (err) {
    $("#backtests-section").hidden = true; // 404: this API has no backtests
    return;
  }
  const items = page.items || [];
  $("#backtests-section").hidden = false;
  $("#backtests-empty").hidden = items.length > 0;
  fillRows($("#backtests tbody"), items, (b) => {
    const tr = document.createElement("tr");
    tr.className = "clickable";
    tr.dataset.id = b.id;
    tr.dataset.source = b.source;
    const s = b.summary;
    const data = b.data.split("/").filter(Boolean).slice(-1)[0] || b.data;
    tr.append(
      cell(`${stamp(b.created_at)}${b.source === "cli" ? " (CLI)" : ""}`, "opt"),
      cell(b.strategy, "symbol"),
      cell(paramsText(b.params), "opt params-cell"),
      cell(data, "opt"),
      cell(b.status, `opt status-${b.status}`),
      cell(s ? s.trade_count : "–", "opt num"),
      s ? pnlCell(s.net_pnl) : cell(b.status, `status-${b.status}`),
      cell(s ? pct(s.return_pct) : "–", "num"),
      cell(s ? pct(s.max_drawdown_pct) : "–", "opt num"),
    );
    tr.addEventListener("click", () => loadBacktest(b.id));
    return tr;
  });
}

function definitionList(dl, entries) {
  dl.replaceChildren();
  for (const [k, v] of entries) {
    dl.append(
      Object.assign(document.createElement("dt"), { textContent: k }),
      Object.assign(document.createElement("dd"), { textContent: v }),
    );
  }
}

async function loadBacktest(id) {
  try {
    const report = await api(`/backtests/${encodeURIComponent(id)}`);
    const req = report.request;
    $("#backtest-report").hidden = false;
    $("#backtest-title").textContent = `${req.strategy} on ${req.data} (${report.status})`;
    definitionList($("#backtest-params"), [
      ["parameters", paramsText(req.params)],
      ["dates", `${req.start || "first"} to ${req.end || "last"}`],
      ["bars", `${report.timeframe || req.timeframe || "as in the data"}${report.bars ? ` (${report.bars.toLocaleString("en-IN")})` : ""}`],
      ["symbols", (report.symbols || req.symbols || []).join(", ") || "all"],
      ["run by", req.source === "cli" ? "upstox-bot backtest" : "the API"],
    ]);
    const summary = report.summary || { error: report.error };
    definitionList(
      $("#backtest-metrics"),
      Object.entries(summary).map(([k, v]) => [k.replaceAll("_", " "), metricText(k, v)]),
    );
    // The equity curve: the start capital plus each closed trade's net P&L, at its exit.
    state.charts.backtest ??= makeChart("chart-backtest");
    if (state.charts.backtest && report.summary) {
      let equity = Number(report.summary.start_capital);
      const points = [];
      const trades = [...(report.trades || [])].sort((a, b) => (a.exit_time < b.exit_time ? -1 : 1));
      for (const t of trades) {
        equity += Number(t.pnl);
        const time = chartTime(t.exit_time);
        if (points.length && points[points.length - 1].time >= time) points[points.length - 1].value = equity;
        else points.push({ time, value: equity });
      }
      state.charts.backtest.series.setData(points);
      state.charts.backtest.chart.timeScale().fitContent();
    }
    const full = $("#backtest-full");
    full.hidden = report.status !== "done";
    full.onclick = async () => {
      // The HTML report needs the key, so it is fetched here and shown sandboxed.
      const response = await fetch(`${API}/backtests/${encodeURIComponent(id)}/report`, {
        headers: { "X-API-Key": state.key },
      });
      const frame = $("#backtest-frame");
      frame.srcdoc = await response.text();
      frame.hidden = false;
    };
  } catch (err) {
    showError(err.message);
  }
}

async function loadBacktestForm() {
  const [data, strategies] = await Promise.all([api("/backtest-data"), api("/strategies")]);
  state.strategies = strategies;
  const dataSelect = $("#bt-data");
  dataSelect.replaceChildren(
    ...data.map((d) =>
      Object.assign(document.createElement("option"), {
        value: d.path,
        textContent: `${d.path} (${d.files} file${d.files === 1 ? "" : "s"})`,
      }),
    ),
  );
  $("#bt-run").disabled = data.length === 0 || state.scope !== "trade";
  if (!data.length) $("#bt-state").textContent = "no bars in the data folder: upstox-bot data sample --out var/bars";
  const strategySelect = $("#bt-strategy");
  const chosen = strategySelect.value;
  strategySelect.replaceChildren(
    ...strategies.map((s) => Object.assign(document.createElement("option"), { value: s.name, textContent: s.name })),
  );
  if (chosen) strategySelect.value = chosen;
  renderBacktestParams();
}

function renderBacktestParams() {
  const strategy = (state.strategies || []).find((s) => s.name === $("#bt-strategy").value);
  $("#bt-params").replaceChildren(
    ...(strategy?.parameters || []).map((p) => {
      const label = document.createElement("label");
      label.title = p.description;
      const input = document.createElement("input");
      input.name = p.name;
      input.dataset.type = p.type;
      if (p.type === "bool") {
        input.type = "checkbox";
        input.checked = Boolean(p.value);
      } else {
        input.type = "number";
        input.value = p.value;
        input.step = p.type === "int" ? "1" : "any";
        if (p.minimum !== null) input.min = p.minimum;
        if (p.maximum !== null) input.max = p.maximum;
      }
      label.append(p.name, input);
      return label;
    }),
  );
}

async function submitBacktest(event) {
  event.preventDefault();
  const params = {};
  for (const input of $("#bt-params").querySelectorAll("input")) {
    if (input.type === "checkbox") params[input.name] = input.checked;
    else if (input.value !== "") params[input.name] = Number(input.value);
  }
  const body = {
    data: $("#bt-data").value,
    strategy: $("#bt-strategy").value,
    params,
    start: $("#bt-from").value || null,
    end: $("#bt-to").value || null,
    timeframe: $("#bt-timeframe").value || null,
  };
  const note = $("#bt-state");
  try {
    $("#bt-run").disabled = true;
    note.textContent = "queued…";
    const submitted = await api("/backtests", { method: "POST", body });
    await loadBacktests();
    let report = submitted;
    while (report.status === "pending" || report.status === "running") {
      note.textContent = `${report.status}…`;
      await new Promise((resolve) => setTimeout(resolve, 1000));
      report = await api(`/backtests/${encodeURIComponent(submitted.id)}`);
    }
    note.textContent = report.status === "done" ? `done: ${paramsText(params)}` : `failed: ${report.error}`;
    await loadBacktests();
    await loadBacktest(submitted.id);
  } catch (err) {
    note.textContent = "";
    showError(err.message);
  } finally {
    $("#bt-run").disabled = state.scope !== "trade";
  }
}

// --- REST loading ------------------------------------------------------------------------------

async function loadSignals() {
  renderSignals(await api(`/signals?limit=${LIST_LIMIT}&sort=-created_at`));
}

async function loadOrders() {
  renderOrders(await api(`/orders?limit=${LIST_LIMIT}&sort=-created_at`));
  refreshSoon("trades", loadDay); // a filled exit is a closed trade
}

async function loadStrategies() {
  renderStrategies(await api("/strategies"));
}

async function loadSettings() {
  renderSettings(await api("/settings"));
}

async function loadUniverse() {
  state.universe = await api("/symbols?kind=equity&limit=500");
  renderUniverse();
}

async function loadQuotes() {
  const symbols = state.universe.map((s) => s.trading_symbol);
  for (let i = 0; i < symbols.length; i += QUOTE_BATCH) {
    const batch = symbols.slice(i, i + QUOTE_BATCH).map(encodeURIComponent).join(",");
    const quotes = await api(`/quotes?symbols=${batch}`);
    for (const q of quotes) if (q.last_price !== null) state.prices.set(q.instrument_key, q.last_price);
  }
  renderUniverse();
}

async function refreshRest() {
  const jobs = [
    api("/risk").then(renderRisk),
    api("/account").then(renderAccount),
    api("/positions").then(renderPositions),
    loadSignals(),
    loadOrders(),
    loadSettings(),
    loadDay(),
  ];
  const results = await Promise.allSettled(jobs);
  const failed = results.find((r) => r.status === "rejected");
  if (failed && !(failed.reason instanceof ApiError && failed.reason.status === 404)) {
    console.warn("refresh failed", failed.reason);
  }
}

function refreshSoon(name, load) {
  // Signals and orders arrive one by one on the stream: reload the list at most twice a second.
  if (state.refreshTimers[name]) return;
  state.refreshTimers[name] = setTimeout(() => {
    state.refreshTimers[name] = null;
    load().catch((err) => console.warn(name, err));
  }, 500);
}

async function poll() {
  await Promise.allSettled([api("/risk").then(renderRisk), loadQuotes()]);
}

// --- the live stream ---------------------------------------------------------------------------

function setConnection(stateName, text) {
  const el = $("#conn");
  el.dataset.state = stateName;
  el.textContent = text;
}

function connect() {
  if (state.stopped) return;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  // The key goes in the first message, never in the URL (servers log URLs).
  const url = `${scheme}://${location.host}${API}/ws?channels=positions,account,signals,orders`;
  setConnection("connecting", state.attempts ? `reconnecting (try ${state.attempts + 1})…` : "connecting…");
  const socket = new WebSocket(url);
  state.socket = socket;
  socket.addEventListener("open", () => {
    socket.send(JSON.stringify({ action: "auth", key: state.key }));
    state.attempts = 0;
    setConnection("live", "live");
    refreshRest();
    clearInterval(state.pingTimer);
    state.pingTimer = setInterval(() => {
      if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ action: "ping" }));
    }, PING_MS);
  });
  socket.addEventListener("message", (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "error") console.warn("stream:", message.detail);
    if (message.type !== "event") return;
    if (message.channel === "positions") renderPositions(message.data.positions);
    else if (message.channel === "account") renderAccount(message.data);
    else if (message.channel === "signals") refreshSoon("signals", loadSignals);
    else if (message.channel === "orders") refreshSoon("orders", loadOrders);
  });
  socket.addEventListener("close", (event) => {
    clearInterval(state.pingTimer);
    if (state.socket !== socket || state.stopped) return;
    if (event.code === 1008) {
      logout(event.reason || "the API key was refused");
      return;
    }
    scheduleReconnect();
  });
}

function scheduleReconnect() {
  const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** state.attempts);
  const wait = Math.round(delay / 2 + Math.random() * (delay / 2)); // jitter: no thundering herd
  state.attempts += 1;
  setConnection("offline", `disconnected: retry in ${Math.ceil(wait / 1000)} s`);
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = setTimeout(connect, wait);
}

// --- log-in ------------------------------------------------------------------------------------

async function start(key) {
  state.key = key;
  state.stopped = false;
  const status = await api("/auth/status");
  state.scope = status.api_key.scope;
  sessionStorage.setItem(KEY_STORE, key);
  $("#key-info").textContent = `${status.api_key.name} (${state.scope})`;
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#logout").hidden = false;
  document.body.dataset.scope = state.scope;
  state.charts.day ??= makeChart("chart-day");
  state.charts.account ??= makeChart("chart-account");
  connect();
  await Promise.allSettled([refreshRest(), loadStrategies(), loadBacktests()]);
  await loadUniverse().catch((err) => console.warn("universe", err));
  renderCandleChoices();
  if (!$("#backtests-section").hidden) loadBacktestForm().catch((err) => console.warn("backtest form", err));
  poll();
  state.pollTimer = setInterval(poll, POLL_MS);
}

function logout(reason) {
  state.stopped = true;
  sessionStorage.removeItem(KEY_STORE);
  clearInterval(state.pollTimer);
  clearInterval(state.pingTimer);
  clearTimeout(state.reconnectTimer);
  if (state.socket) state.socket.close();
  state.socket = null;
  state.key = null;
  setConnection("offline", "offline");
  $("#app").hidden = true;
  $("#logout").hidden = true;
  $("#key-info").textContent = "";
  $("#login").hidden = false;
  $("#login-error").textContent = reason || "";
}

function wire() {
  $("#login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("#login-error").textContent = "";
    try {
      await start($("#api-key").value.trim());
      $("#api-key").value = "";
    } catch (err) {
      logout(err.message);
    }
  });
  $("#logout").addEventListener("click", () => logout(""));
  $("#kill-switch").addEventListener("click", () => {
    const on = $("#kill-switch").dataset.active !== "true";
    command(
      on
        ? "Turn the kill switch ON? No new entries; open positions are squared off if KILL_SWITCH_SQUARE_OFF is set."
        : "Turn the kill switch off and allow new entries again?",
      () => api("/risk/kill-switch", { method: "POST", body: { active: on, reason: "from the dashboard" } }),
      (r) => `Kill switch ${r.active ? "on" : "off"}${r.positions_closing ? `: closing ${r.positions_closing}` : ""}.`,
    );
  });
  $("#setting-name").addEventListener("change", showCurrentSetting);
  $("#setting-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const name = $("#setting-name").value;
    const raw = $("#setting-value").value.trim();
    let value;
    try {
      value = JSON.parse(raw); // numbers, true/false, {...}
    } catch {
      value = raw; // times like 15:10 and names stay strings
    }
    command(
      `Change ${name} to ${JSON.stringify(value)}?`,
      () => api("/settings", { method: "PATCH", body: { changes: { [name]: value } } }),
      (r) =>
        r.changes.length
          ? r.changes.map((c) => `${c.key}: ${JSON.stringify(c.old)} → ${JSON.stringify(c.new)} (${c.applied})`).join("; ")
          : `${name} unchanged.`,
    );
  });
  $("#universe-filter").addEventListener("input", renderUniverse);
  $("#candle-symbol").addEventListener("change", () => loadCandles().catch((err) => showError(err.message)));
  $("#perf-range").addEventListener("change", () => loadPerformance().catch((err) => showError(err.message)));
  $("#bt-strategy").addEventListener("change", renderBacktestParams);
  $("#backtest-form").addEventListener("submit", submitBacktest);
}

wire();
const saved = sessionStorage.getItem(KEY_STORE);
if (saved) {
  start(saved).catch((err) => logout(err.message));
} else {
  logout("");
}
