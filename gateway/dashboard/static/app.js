// gridpeer dashboard: polls /api/status about once a second and fills every [data-field] element.
// No framework and no build step: the page is served by the gateway itself and must work on a Pi
// with no internet connection. Each element names the status path it shows (data-field) and how
// to format it (data-format), so adding a value to the page is one line of HTML.
"use strict";

const POLL_MS = 1000;
const NONE = "—";

const FORMATS = {
  text: (v) => String(v),
  int: (v) => String(v),
  time: (v) => new Date(v).toISOString().slice(11, 16) + " UTC",
  w: (v) => (Math.abs(v) >= 1000 ? (v / 1000).toFixed(2) + " kW" : Math.round(v) + " W"),
  pct: (v) => v.toFixed(1) + " %",
  wh: (v) => Math.round(v) + " Wh",
  price: (v) => (v / 10).toFixed(1) + " c/kWh",   // µ/Wh to c/kWh
  money: (v) => (v / 1e6).toFixed(3) + " €",      // µ, + = earned
  paid: (v) => (-v / 1e6).toFixed(3) + " €",      // µ, + = paid: shown as earned
};

function pick(obj, path) {
  return path.split(".").reduce((o, key) => (o == null ? undefined : o[key]), obj);
}

function show(el, value) {
  const fmt = FORMATS[el.dataset.format] || FORMATS.text;
  // data-none: what an unknown value reads as (a battery that does not report its SoC)
  const none = el.dataset.none || (el.dataset.format === "text" ? "" : NONE);
  el.textContent = value == null || value === "" ? none : fmt(value);
}

function flowLine(id, watts, inward) {
  // inward: power flowing towards the hub (produced, imported, discharged)
  const line = document.getElementById(id);
  line.classList.remove("in", "out");
  if (watts != null && Math.abs(watts) >= 10) line.classList.add(inward ? "in" : "out");
}

function deviceState(d) {
  // A device not in the home yet: absent (no answer) or unsupported, and when it is tried again.
  if (d.adoption === "waiting") {
    const retry = d.retry_in_s == null ? "" : ", next try in " + Math.ceil(d.retry_in_s) + " s";
    return (d.why || "absent") + retry;
  }
  if (d.adoption === "found") return "found, in the home from the next interval";
  return d.stale ? "stale" : "ok";
}

function renderDevices(devices) {
  const body = document.getElementById("devices");
  body.replaceChildren(...Object.entries(devices || {}).map(([name, d]) => {
    const row = document.createElement("tr");
    row.className = d.stale ? "stale" : "ok";
    const age = d.age_s == null ? "never" : d.age_s.toFixed(1) + " s ago";
    for (const text of [name, deviceState(d), age, d.polls, d.failures,
                        d.missing || d.last_error || ""]) {
      const cell = document.createElement("td");
      cell.textContent = String(text);
      row.append(cell);
    }
    return row;
  }));
}

function render(s) {
  document.querySelectorAll("[data-field]").forEach((el) => show(el, pick(s, el.dataset.field)));
  const f = s.flows || {};
  flowLine("line-pv", f.pv_w, true);
  flowLine("line-grid", f.grid_w, (f.grid_w || 0) > 0);
  flowLine("line-battery", f.battery_w, (f.battery_w || 0) < 0);
  flowLine("line-home", f.home_w, false);
  document.getElementById("grid-dir").textContent =
    f.grid_w == null ? "" : f.grid_w > 0 ? "importing" : f.grid_w < 0 ? "exporting" : "";
  document.getElementById("battery-dir").textContent =
    f.battery_w == null ? "" : f.battery_w > 0 ? "charging" : f.battery_w < 0 ? "discharging" : "";
  const soc = s.battery && s.battery.soc_pct != null ? s.battery.soc_pct : 0;
  document.getElementById("soc-fill").style.width = Math.max(0, Math.min(100, soc)) + "%";
  document.getElementById("mode").className = "badge " + s.mode;
  document.getElementById("bid").hidden = !s.bid;
  document.getElementById("no-bid").hidden = !!s.bid;
  document.getElementById("clearing").hidden = !s.last_clearing;
  document.getElementById("no-clearing").hidden = !!s.last_clearing;
  renderDevices(s.devices);
  const rejected = Object.entries(s.rejections || {});
  document.getElementById("rejections").textContent = rejected.length
    ? "rejected peer messages: " + rejected.map(([r, n]) => `${r} ×${n}`).join(", ") : "";
  document.body.dataset.nowMs = String(s.now_ms);
}

function setLink(ok, text) {
  const link = document.getElementById("link");
  link.textContent = text;
  link.className = "link " + (ok ? "up" : "down");
}

async function poll() {
  try {
    const res = await fetch("/api/status", { cache: "no-store" });
    if (!res.ok) throw new Error("HTTP " + res.status);
    render(await res.json());
    setLink(true, "live");
  } catch (err) {
    setLink(false, "gateway unreachable, retrying (" + err.message + ")");
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

// Preferences: prices are shown in c/kWh (what a bill says) and sent in µ/Wh (the API's unit).
const form = document.getElementById("prefs");
const PRICE_FIELDS = ["min_sell_price", "max_buy_price"];

function fillForm(p) {
  for (const name of PRICE_FIELDS) form.elements[name].value = (p[name] / 10).toFixed(1);
  form.elements.reserve_pct.value = p.reserve_pct;
  form.elements.ev_ready_by.value = p.ev_ready_by || "";
}

function number(input) {
  return input.value.trim() === "" ? null : Number(input.value);
}

async function loadPreferences() {
  const res = await fetch("/api/preferences", { cache: "no-store" });
  if (res.ok) fillForm(await res.json());
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const out = document.getElementById("prefs-result");
  form.querySelectorAll(".invalid").forEach((el) => el.classList.remove("invalid"));
  const body = { reserve_pct: number(form.elements.reserve_pct),
                 ev_ready_by: form.elements.ev_ready_by.value || null };
  for (const name of PRICE_FIELDS) {
    const v = number(form.elements[name]);
    body[name] = v == null ? null : Math.round(v * 10);
  }
  try {
    const res = await fetch("/api/preferences", {
      method: "PUT", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
    });
    const answer = await res.json();
    if (res.ok) {
      fillForm(answer);
      out.textContent = "saved";
      out.className = "ok";
      return;
    }
    if (res.status === 401) showOwner(false, true);  // the session ended: log in again
    for (const f of answer.fields || []) {
      if (form.elements[f.field]) form.elements[f.field].classList.add("invalid");
    }
    out.textContent = (answer.fields || []).map((f) => `${f.field}: ${f.message}`).join("; ")
      || answer.error;
    out.className = "error";
  } catch (err) {
    out.textContent = "not saved: " + err.message;
    out.className = "error";
  }
});

// The owner's session: reading needs none; saving preferences needs a login with the token that
// `gridpeer dashboard pair` prints on the gateway. The session cookie is HttpOnly: this script
// never sees it, it asks /api/session instead.
const login = document.getElementById("login");

function showOwner(owner, paired) {
  login.hidden = owner;
  document.getElementById("logout").hidden = !owner;
  form.querySelector("button[type=submit]").disabled = !owner;
  if (!paired) {
    document.getElementById("login-result").textContent =
      "no owner token yet: run `gridpeer dashboard pair` on the gateway";
  }
}

async function loadSession() {
  const res = await fetch("/api/session", { cache: "no-store" });
  if (res.ok) {
    const session = await res.json();
    showOwner(session.owner, session.paired);
  }
}

login.addEventListener("submit", async (event) => {
  event.preventDefault();
  const out = document.getElementById("login-result");
  out.textContent = "";
  try {
    const res = await fetch("/api/login", {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ token: login.elements.token.value }),
    });
    const answer = await res.json();
    if (res.ok) {
      login.elements.token.value = "";
      document.getElementById("prefs-result").textContent = "";
      showOwner(true, true);
      return;
    }
    out.textContent = answer.error;
    out.className = "error";
  } catch (err) {
    out.textContent = "not logged in: " + err.message;
    out.className = "error";
  }
});

document.getElementById("logout").addEventListener("click", async () => {
  await fetch("/api/logout", { method: "POST" });
  showOwner(false, true);
});

showOwner(false, true);
loadSession();
loadPreferences();
poll();
