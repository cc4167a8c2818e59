// executor-service dashboard: plain JavaScript over the HTTP/JSON API and its event stream
// (Server-Sent Events read with fetch, so the bearer token goes in a header). No framework, no
// build step, nothing from another origin.
"use strict";

const view = document.getElementById("view");
const notice = document.getElementById("notice");
const TERMINAL = ["SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT", "ROLLED_BACK", "INTERRUPTED", "REJECTED", "SHADOWED"];
const STATES = ["QUEUED", "WAITING_APPROVAL", "RUNNING", "ROLLING_BACK"].concat(TERMINAL);
const REFRESH_MS = 1000;

let token = sessionStorage.getItem("executor-token") || "";
let cleanup = [];
let catalog = null;

// ---- helpers -------------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

class ApiError extends Error {
  constructor(status, code, field, message) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (token) h["Authorization"] = "Bearer " + token;
  return h;
}

async function api(path, options) {
  const opts = Object.assign({}, options || {});
  opts.headers = headers(opts.body ? { "Content-Type": "application/json" } : {});
  const response = await fetch(path, opts);
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (!response.ok) {
    const e = (body && body.error) || {};
    throw new ApiError(response.status, e.code || String(response.status), e.field || "",
                       e.message || response.statusText);
  }
  return body;
}

function say(text, isError) {
  notice.textContent = text || "";
  notice.className = isError ? "error" : "";
}

function refused(e) {
  if (e instanceof ApiError && e.status === 401) {
    say("Authentication required: enter a bearer token above.", true);
  } else {
    say(e.message, true);
  }
}

function targetText(t) {
  if (!t) return "";
  return [t.cluster ? t.cluster + ":" : "", t.namespace ? t.namespace + "/" : "", (t.kind || "").toLowerCase(), "/", t.name].join("");
}

function ago(iso) {
  if (!iso) return "";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return span(s);
}

function span(s) {
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
  return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
}

function duration(x) {
  if (!x.started_at) return "";
  const end = x.finished_at ? Date.parse(x.finished_at) : Date.now();
  return span(Math.max(0, Math.round((end - Date.parse(x.started_at)) / 1000)));
}

function stateBadge(state) {
  return el("span", { class: "state state-" + state, "data-state": state }, state);
}

function json(value) {
  return el("pre", {}, JSON.stringify(value, null, 2));
}

function every(ms, fn) {
  const id = setInterval(fn, ms);
  cleanup.push(() => clearInterval(id));
}

async function actions() {
  if (!catalog) catalog = (await api("/api/v1/actions")).actions;
  return catalog;
}

// ---- the diff: before and after side by side, the patched paths marked ---------------------

function pointerTokens(path) {
  return path.split("/").slice(1).map((p) => p.replace(/~1/g, "/").replace(/~0/g, "~"));
}

function diffView(changes) {
  if (!changes || changes.length === 0) return el("p", { class: "muted" }, "No change.");
  return el("div", { class: "changes" }, changes.map((c) => {
    const ops = (c.patch || []).map((op) =>
      el("li", {}, el("code", {}, op.op + " " + op.path), op.value !== undefined ? [" → ", el("mark", {}, JSON.stringify(op.value))] : []));
    return el("section", { "aria-label": "Change of " + c.object },
      el("h3", {}, c.summary || c.object),
      el("ul", { class: "patch" }, ops),
      el("div", { class: "diff" },
        el("div", {}, el("h4", {}, "Before"), markedJson(c.before, c.patch)),
        el("div", {}, el("h4", {}, "After"), markedJson(c.after, c.patch))));
  }));
}

// JSON with the lines of patched keys highlighted.
function markedJson(value, patch) {
  const keys = new Set((patch || []).map((op) => pointerTokens(op.path).pop()));
  const pre = el("pre", {});
  for (const line of JSON.stringify(value, null, 2).split("\n")) {
    const m = line.match(/^\s*"([^"]+)":/);
    pre.append(m && keys.has(m[1]) ? el("mark", {}, line) : document.createTextNode(line));
    pre.append("\n");
  }
  return pre;
}

// ---- Executions ----------------------------------------------------------------------------

async function executionsView() {
  const names = await actions().then((a) => a.map((x) => x.name)).catch(() => []);
  const filters = { state: "", action: "", namespace: "", requester: "" };
  let tokens = [""];
  const body = el("tbody", { id: "executions-body" });
  const pageInfo = el("span", { class: "muted", id: "page-info" });
  const next = el("button", { type: "button", class: "secondary", id: "next-page", disabled: true }, "Next page");
  const first = el("button", { type: "button", class: "secondary", id: "first-page" }, "First page");
  const onFilter = (key) => (ev) => { filters[key] = ev.target.value.trim(); tokens = [""]; load(); };
  const select = (id, label, key, options) => el("div", {},
    el("label", { for: id }, label),
    el("select", { id, onchange: onFilter(key) }, el("option", { value: "" }, "any"), options.map((o) => el("option", { value: o }, o))));
  const input = (id, label, key) => el("div", {},
    el("label", { for: id }, label),
    el("input", { id, type: "search", onchange: onFilter(key) }));
  view.replaceChildren(
    el("h2", {}, "Executions"),
    el("div", { class: "filters", role: "search" },
      select("filter-state", "State", "state", STATES),
      select("filter-action", "Action", "action", names),
      input("filter-namespace", "Namespace", "namespace"),
      input("filter-requester", "Requester", "requester")),
    el("table", { id: "executions" },
      el("caption", { class: "muted" }, "Newest first; updates every second."),
      el("thead", {}, el("tr", {},
        el("th", { scope: "col" }, "State"), el("th", { scope: "col" }, "Action"), el("th", { scope: "col" }, "Target"),
        el("th", { scope: "col", class: "wide" }, "Requester"), el("th", { scope: "col" }, "Age"), el("th", { scope: "col", class: "wide" }, "Duration"))),
      body),
    el("div", { class: "actions-bar" }, first, next, pageInfo));
  next.addEventListener("click", () => { load(true); });
  first.addEventListener("click", () => { tokens = [""]; load(); });
  let nextToken = "";
  async function load(forward) {
    if (forward && nextToken) tokens.push(nextToken);
    const q = new URLSearchParams({ page_size: "25" });
    for (const [k, v] of Object.entries(filters)) if (v) q.set(k, v);
    const page = tokens[tokens.length - 1];
    if (page) q.set("page_token", page);
    try {
      const answer = await api("/api/v1/executions?" + q.toString());
      nextToken = answer.next_page_token || "";
      next.disabled = !nextToken;
      pageInfo.textContent = "Page " + tokens.length;
      body.replaceChildren(...answer.executions.map((x) => el("tr", { "data-id": x.id },
        el("td", {}, stateBadge(x.state)),
        el("td", {}, el("a", { href: "#/execution/" + x.id }, x.action)),
        el("td", {}, targetText(x.target)),
        el("td", { class: "wide" }, x.requester),
        el("td", {}, ago(x.created_at)),
        el("td", { class: "wide" }, duration(x)))));
      if (answer.executions.length === 0) body.replaceChildren(el("tr", {}, el("td", { colspan: "6", class: "muted" }, "No executions.")));
      say("");
    } catch (e) {
      body.replaceChildren();
      refused(e);
    }
  }
  await load();
  every(REFRESH_MS, () => load());
}

// ---- One execution -------------------------------------------------------------------------

async function executionView(id) {
  const summary = el("div", { id: "execution-summary" });
  const controls = el("div", { class: "actions-bar", id: "execution-controls" });
  const bar = el("progress", { id: "progress", max: "1", value: "0", "aria-label": "Progress" });
  const progressText = el("span", { id: "progress-text", class: "muted" });
  const events = el("ol", { class: "events", id: "events", "aria-live": "polite" });
  const feedback = el("p", { id: "execution-error", role: "alert", class: "error" });
  const details = el("div", { id: "execution-details" });
  view.replaceChildren(el("h2", {}, "Execution ", el("code", {}, id)), summary, controls, feedback,
    el("h3", {}, "Progress"), el("div", {}, bar, " ", progressText), el("h3", {}, "Events"), events, details);
  let current = null;
  let last = 0;

  async function refresh() {
    try {
      const answer = await api("/api/v1/executions/" + encodeURIComponent(id));
      current = answer.execution;
      render(current);
      return answer.events;
    } catch (e) {
      refused(e);
      summary.replaceChildren();
      return null;
    }
  }

  function render(x) {
    const rows = [
      ["State", stateBadge(x.state)], ["Action", x.action], ["Target", targetText(x.target)],
      ["Requester", x.requester], ["Message", x.message], ["Created", x.created_at],
      ["Duration", duration(x)],
      ["Policy", x.policy ? (x.policy.decision || "") + (x.policy.reasons && x.policy.reasons.length ? ": " + x.policy.reasons.join("; ") : "") : ""],
    ];
    if (x.approval) rows.push(["Approval", (x.approval.approved ? "approved by " : "rejected by ") + x.approval.approver + (x.approval.reason ? " (" + x.approval.reason + ")" : "")]);
    if (x.recommendation) rows.push(["Recommendation", [x.recommendation.incident_id, x.recommendation.confidence, x.recommendation.reasoning].filter((v) => v !== null && v !== "").join(" · ")]);
    summary.replaceChildren(el("dl", { class: "summary" }, rows.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])));
    details.replaceChildren(...[
      x.result && x.result.plan ? [el("h3", {}, "Diff"), diffView(x.result.plan.changes)] : [],
      x.result ? [el("h3", {}, "Result"), json(x.result)] : [],
      x.rollback_data ? [el("h3", {}, "Rollback data"), json(x.rollback_data)] : []].flat(Infinity));
    const buttons = [];
    if (x.state === "WAITING_APPROVAL") {
      const approver = el("input", { id: "approver", type: "text", value: sessionStorage.getItem("executor-approver") || "" });
      const reason = el("input", { id: "approval-reason", type: "text" });
      buttons.push(el("div", {}, el("label", { for: "approver" }, "Approver"), approver),
        el("div", {}, el("label", { for: "approval-reason" }, "Reason"), reason),
        el("button", { type: "button", id: "approve", onclick: () => answerApproval("approve", approver, reason) }, "Approve"),
        el("button", { type: "button", id: "reject", class: "danger", onclick: () => answerApproval("reject", approver, reason) }, "Reject"));
    }
    if (!TERMINAL.includes(x.state)) {
      buttons.push(el("button", { type: "button", id: "cancel", class: "danger", onclick: cancel }, "Cancel"));
    }
    controls.replaceChildren(...buttons);
  }

  async function answerApproval(verb, approver, reason) {
    sessionStorage.setItem("executor-approver", approver.value);
    try {
      const answer = await api("/api/v1/executions/" + encodeURIComponent(id) + "/" + verb, {
        method: "POST", body: JSON.stringify({ approver: approver.value, reason: reason.value }) });
      feedback.textContent = "";
      render(answer.execution);
    } catch (e) {
      feedback.textContent = e.message;
    }
  }

  async function cancel() {
    try {
      const answer = await api("/api/v1/executions/" + encodeURIComponent(id) + "/cancel", { method: "POST", body: "{}" });
      feedback.textContent = "";
      render(answer.execution);
    } catch (e) {
      feedback.textContent = e.message;
    }
  }

  function show(event) {
    if (event.sequence <= last) return;
    last = event.sequence;
    const counted = event.progress && event.progress.total > 0;
    const item = el("li", { "data-sequence": event.sequence, "data-state": event.state,
                            "data-progress": counted ? event.progress.current + "/" + event.progress.total : null },
      el("span", { class: "muted" }, new Date(event.timestamp).toLocaleTimeString(), " "), stateBadge(event.state), " ", event.message);
    if (counted) {
      bar.max = event.progress.total;
      bar.value = event.progress.current;
      progressText.textContent = event.progress.current + " / " + event.progress.total;
    }
    if (TERMINAL.includes(event.state)) {
      bar.max = 1;
      bar.value = 1;
      progressText.textContent = "done: " + event.state;
    }
    events.append(item);
    if (!current || current.state !== event.state || TERMINAL.includes(event.state)) refresh();
  }

  const initial = await refresh();
  if (initial) initial.forEach(show);
  const stop = new AbortController();
  cleanup.push(() => stop.abort());
  follow(id, () => last, show, stop.signal);
}

// The event stream, resumed from the last sequence after any break, until its end.
async function follow(id, lastSequence, onEvent, signal) {
  let wait = 500;
  while (!signal.aborted) {
    try {
      const response = await fetch("/api/v1/executions/" + encodeURIComponent(id) + "/events",
        { headers: headers({ "Last-Event-ID": String(lastSequence()) }), signal });
      if (response.status === 204) return;
      if (!response.ok) throw new Error("event stream: HTTP " + response.status);
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
          if (!data) continue;
          const event = JSON.parse(data);
          onEvent(event);
          if (TERMINAL.includes(event.state)) return;
        }
      }
      wait = 500;
    } catch (e) {
      if (signal.aborted) return;
    }
    await new Promise((r) => setTimeout(r, wait));
    wait = Math.min(wait * 2, 5000);
  }
}

// ---- Approvals -----------------------------------------------------------------------------

async function approvalsView() {
  const body = el("tbody", { id: "approvals-body" });
  view.replaceChildren(el("h2", {}, "Waiting for approval"),
    el("table", { id: "approvals" },
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Action"), el("th", { scope: "col" }, "Target"),
        el("th", { scope: "col" }, "Requested by"), el("th", { scope: "col", class: "wide" }, "Why"),
        el("th", { scope: "col" }, "Expires in"))), body));
  let rows = [];
  async function load() {
    try {
      rows = (await api("/api/v1/approvals")).approvals;
      say("");
    } catch (e) {
      rows = [];
      refused(e);
    }
    draw();
  }
  function draw() {
    body.replaceChildren(...rows.map((x) => el("tr", { "data-id": x.id },
      el("td", {}, el("a", { href: "#/execution/" + x.id }, x.action)),
      el("td", {}, targetText(x.target)),
      el("td", {}, x.requester),
      el("td", { class: "wide" }, x.policy && x.policy.reasons ? x.policy.reasons.join("; ") : ""),
      el("td", { class: "countdown" }, span(Math.max(0, Math.round((Date.parse(x.approval_expires_at) - Date.now()) / 1000)))))));
    if (rows.length === 0) body.replaceChildren(el("tr", {}, el("td", { colspan: "5", class: "muted" }, "Nothing waits.")));
  }
  await load();
  every(1000, draw);
  every(3000, load);
}

// ---- Run an action -------------------------------------------------------------------------

async function runView() {
  let list;
  try {
    list = await actions();
  } catch (e) {
    view.replaceChildren(el("h2", {}, "Run an action"));
    refused(e);
    return;
  }
  const form = el("form", { id: "run-form", novalidate: true });
  const fields = el("div", { id: "run-fields" });
  const error = el("p", { id: "run-error", role: "alert", class: "error" });
  const preview = el("div", { id: "run-preview" });
  const chooser = el("select", { id: "run-action", required: true },
    el("option", { value: "" }, "choose…"), list.map((a) => el("option", { value: a.name }, a.name + " (" + a.risk + ")")));
  const execute = el("button", { type: "button", id: "run-execute", disabled: true }, "Execute");
  const dry = el("button", { type: "submit", id: "run-dry-run" }, "Dry run");
  form.append(el("div", { class: "field" }, el("label", { for: "run-action" }, "Action"), chooser), fields,
    el("div", { class: "actions-bar" }, dry, execute), error, preview);
  view.replaceChildren(el("h2", {}, "Run an action"), form);
  let spec = null;

  chooser.addEventListener("change", () => {
    spec = list.find((a) => a.name === chooser.value) || null;
    execute.disabled = true;
    preview.replaceChildren();
    error.textContent = "";
    fields.replaceChildren();
    if (!spec) return;
    fields.append(el("p", { class: "muted" }, spec.description),
      field("target.namespace", "Namespace", el("input", { id: "f-target.namespace", type: "text" })),
      field("target.kind", "Kind", spec.target_kinds[0] === "*"
        // An action on any kind: the kind is typed (ConfigMap, deployments, a custom resource's).
        ? el("input", { id: "f-target.kind", type: "text", required: true, placeholder: "ConfigMap" })
        : el("select", { id: "f-target.kind" }, spec.target_kinds.map((k) => el("option", { value: k }, k)))),
      field("target.name", "Name", el("input", { id: "f-target.name", type: "text", required: true })));
    for (const p of spec.parameters) {
      let input;
      const id = "f-parameters." + p.name;
      if (p.allowed_values && p.allowed_values.length) {
        input = el("select", { id }, p.required ? [] : el("option", { value: "" }, "(default)"),
          p.allowed_values.map((v) => el("option", { value: v, selected: v === p.default }, v)));
      } else if (p.type === "boolean") {
        input = el("input", { id, type: "checkbox", checked: p.default === true });
      } else if (p.type === "integer") {
        input = el("input", { id, type: "number", step: "1", min: p.minimum, max: p.maximum, placeholder: p.default !== null && p.default !== undefined ? String(p.default) : "" });
      } else {
        input = el("input", { id, type: "text", placeholder: p.default !== null && p.default !== undefined ? String(p.default) : "" });
      }
      input.dataset.param = p.name;
      input.dataset.type = p.type;
      const bounds = [p.minimum !== null && p.minimum !== undefined ? "≥ " + p.minimum : "", p.maximum !== null && p.maximum !== undefined ? "≤ " + p.maximum : ""].filter(Boolean).join(", ");
      fields.append(field("parameters." + p.name, p.name + (p.required ? " (required)" : "") + (bounds ? " [" + bounds + "]" : ""), input, p.description));
    }
    fields.addEventListener("input", () => { execute.disabled = true; });
  });

  function field(name, label, input, help) {
    const helpId = help ? "help-" + name : null;
    if (helpId) input.setAttribute("aria-describedby", helpId);
    return el("div", { class: "field" }, el("label", { for: input.id }, label), input, help ? el("div", { id: helpId, class: "muted" }, help) : null);
  }

  function request() {
    const value = (id) => { const n = document.getElementById(id); return n ? n.value.trim() : ""; };
    const parameters = {};
    for (const input of fields.querySelectorAll("[data-param]")) {
      input.removeAttribute("aria-invalid");
      if (input.type === "checkbox") { parameters[input.dataset.param] = input.checked; continue; }
      if (input.value.trim() === "") continue;
      parameters[input.dataset.param] = input.dataset.type === "integer" && /^-?\d+$/.test(input.value.trim())
        ? Number(input.value.trim()) : input.value.trim();
    }
    return { action: chooser.value,
      target: { namespace: value("f-target.namespace"), kind: value("f-target.kind"), name: value("f-target.name") },
      parameters };
  }

  function showError(e) {
    error.textContent = e.message;
    error.dataset.field = e.field || "";
    const input = e.field ? document.getElementById("f-" + e.field) : null;
    if (input) { input.setAttribute("aria-invalid", "true"); input.focus(); }
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    preview.replaceChildren();
    execute.disabled = true;
    if (!spec) { showError(new ApiError(400, "INVALID_ARGUMENT", "action", "action: choose one")); return; }
    try {
      const plan = await api("/api/v1/dry-run", { method: "POST", body: JSON.stringify(request()) });
      preview.replaceChildren(...[el("h3", {}, "Dry run: " + plan.summary),
        plan.warnings && plan.warnings.length ? el("ul", {}, plan.warnings.map((w) => el("li", {}, w))) : [],
        diffView(plan.changes)].flat());
      execute.disabled = false;
    } catch (e) {
      showError(e);
    }
  });

  execute.addEventListener("click", async () => {
    error.textContent = "";
    try {
      const answer = await api("/api/v1/execute", { method: "POST", body: JSON.stringify(request()) });
      location.hash = "#/execution/" + answer.execution.id;
    } catch (e) {
      showError(e);
    }
  });
}

// ---- routing and the token -----------------------------------------------------------------

async function route() {
  for (const stop of cleanup) stop();
  cleanup = [];
  say("");
  const hash = location.hash || "#/executions";
  for (const a of document.querySelectorAll("nav a")) {
    if (hash.startsWith(a.getAttribute("href"))) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const m = hash.match(/^#\/execution\/([^/]+)$/);
  if (m) return executionView(decodeURIComponent(m[1]));
  if (hash === "#/approvals") return approvalsView();
  if (hash === "#/run") return runView();
  return executionsView();
}

document.getElementById("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  token = document.getElementById("token").value.trim();
  sessionStorage.setItem("executor-token", token);
  document.getElementById("token").value = "";
  catalog = null;
  route();
});
document.getElementById("token-forget").addEventListener("click", () => {
  token = "";
  sessionStorage.removeItem("executor-token");
  catalog = null;
  route();
});
window.addEventListener("hashchange", route);
route();
