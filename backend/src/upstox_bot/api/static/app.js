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

const money = new Intl.NumberFormat("en-IN", { minimumFractionDigits: 2, maximumFractionDigits: 2 });

function rupees(value) {
  if (value === null || value === undefined) return "–";
  const n = Number(value);
  return (n < 0 ? "-₹" : "₹") + money.format(Math.abs(n));
}

function signed(el, value) {
  el.textContent = rupees(value);
  el.classList.toggle("gain", Number(value) > 0);
  el.classList.toggle("loss", Number(value) < 0);
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
  fillRows(tbody, positions, (p) => {
    const tr = document.createElement("tr");
    tr.dataset.key = p.instrument_key;
    const pnl = cell(rupees(p.unrealised_pnl), Number(p.unrealised_pnl) >= 0 ? "gain" : "loss");
    pnl.classList.add("pnl");
    const trailing = p.trailing_active ? `on @ ${rupees(p.trail_stop)}` : "off";
    tr.append(
      cell(p.trading_symbol || p.instrument_key),
      cell(p.direction),
      cell(p.quantity),
      cell(rupees(p.entry_price)),
      cell(rupees(p.last_price), "last"),
      cell(rupees(p.effective_stop ?? p.stop)),
      cell(rupees(p.target)),
      cell(trailing),
      pnl,
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
  addDayPoint(Number(a.capital) + Number(a.day_pnl), a.as_of);
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
    tr.append(
      cell(clock(s.created_at)),
      cell(s.trading_symbol || s.instrument_key),
      cell(s.type),
      cell(s.status, `status-${s.status}`),
      cell(s.reason, "reason"),
    );
    return tr;
  });
}

function renderOrders(orders) {
  fillRows($("#orders tbody"), orders, (o) => {
    const tr = document.createElement("tr");
    tr.dataset.purpose = o.purpose;
    const status = cell(o.status, `status-${o.status}`);
    if (o.rejection_reason) status.title = o.rejection_reason;
    tr.append(
      cell(clock(o.created_at)),
      cell(o.trading_symbol || o.instrument_key),
      cell(o.side),
      cell(o.quantity),
      cell(o.purpose),
      status,
      cell(o.average_price ? rupees(o.average_price) : "–"),
    );
    return tr;
  });
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
      cell(s.trading_symbol),
      cell(s.name),
      cell(s.lot_size),
      cell(rupees(state.prices.get(s.instrument_key) ?? s.last_price), "last"),
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
  if (!chart || !Number.isFinite(equity)) return;
  // At the market time the figures hold at (a simulated or replayed session runs on its own
  // clock); without one, at the browser's clock. The axis shows IST.
  const at = asOf ? Date.parse(asOf) : NaN;
  const now = Math.floor((Number.isFinite(at) ? at : Date.now()) / 1000) + 19800;
  const time = Math.max(now, state.lastDayPoint);
  state.lastDayPoint = time;
  chart.series.update({ time, value: equity });
}

async function loadAccountCurve() {
  const days = await api("/account/days?limit=365").catch(() => []);
  const chart = state.charts.account;
  if (!chart || !Array.isArray(days)) return;
  const points = days
    .map((d) => ({ time: d.trading_date, value: Number(d.capital) + Number(d.day_pnl) }))
    .sort((a, b) => (a.time < b.time ? -1 : a.time > b.time ? 1 : 0));
  chart.series.setData(points);
  chart.chart.timeScale().fitContent();
}

// --- backtests (shown only when the API serves them) -------------------------------------------

function pct(value) {
  return value === null || value === undefined ? "–" : `${Number(value).toFixed(2)}%`;
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
    const s = b.summary;
    tr.append(
      cell(new Date(b.created_at).toLocaleString("en-IN", { timeZone: "Asia/Kolkata" })),
      cell(b.strategy),
      cell(b.status, `status-${b.status}`),
      cell(s ? s.trade_count : "–"),
      cell(s ? rupees(s.net_pnl) : "–", s && Number(s.net_pnl) < 0 ? "loss" : "gain"),
      cell(s ? pct(s.return_pct) : "–"),
      cell(s ? pct(s.max_drawdown_pct) : "–"),
    );
    tr.addEventListener("click", () => loadBacktest(b.id));
    return tr;
  });
}

async function loadBacktest(id) {
  try {
    const report = await api(`/backtests/${encodeURIComponent(id)}`);
    $("#backtest-report").hidden = false;
    $("#backtest-title").textContent = `${report.request.strategy} on ${report.request.data} (${report.status})`;
    const dl = $("#backtest-metrics");
    dl.replaceChildren();
    for (const [k, v] of Object.entries(report.summary || { error: report.error })) {
      dl.append(
        Object.assign(document.createElement("dt"), { textContent: k.replaceAll("_", " ") }),
        Object.assign(document.createElement("dd"), { textContent: v === null ? "–" : String(v) }),
      );
    }
    // The equity curve: the start capital plus each closed trade's net P&L, at its exit.
    state.charts.backtest ??= makeChart("chart-backtest");
    if (state.charts.backtest && report.summary) {
      let equity = Number(report.summary.start_capital);
      const points = [];
      const trades = [...(report.trades || [])].sort((a, b) => (a.exit_time < b.exit_time ? -1 : 1));
      for (const t of trades) {
        equity += Number(t.pnl);
        const time = Math.floor(new Date(t.exit_time).getTime() / 1000) + 19800;
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

// --- REST loading ------------------------------------------------------------------------------

async function loadSignals() {
  renderSignals(await api(`/signals?limit=${LIST_LIMIT}&sort=-created_at`));
}

async function loadOrders() {
  renderOrders(await api(`/orders?limit=${LIST_LIMIT}&sort=-created_at`));
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
  await Promise.allSettled([refreshRest(), loadStrategies(), loadAccountCurve(), loadBacktests()]);
  await loadUniverse().catch((err) => console.warn("universe", err));
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
}

wire();
const saved = sessionStorage.getItem(KEY_STORE);
if (saved) {
  start(saved).catch((err) => logout(err.message));
} else {
  logout("");
}
