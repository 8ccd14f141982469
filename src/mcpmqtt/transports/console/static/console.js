// The mcpmqtt operator console. No framework, no inline code (the Content-Security-Policy forbids it).
// Everything that comes from devices or agents (topics, payloads, caller names) is inserted with
// textContent, never as HTML.
"use strict";

const BASE = "/console";
const FEED_MAX = 200;
const SVG = "http://www.w3.org/2000/svg";

const state = { csrf: null, mayApprove: false, source: null, nodes: new Map(), topics: 0 };

function $(id) {
  return document.getElementById(id);
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function clock(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString();
}

async function api(path, method, body) {
  const headers = { "Content-Type": "application/json" };
  if (state.csrf) headers["X-CSRF-Token"] = state.csrf;
  const response = await fetch(BASE + path, {
    method: method || "GET",
    headers: headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try {
    data = await response.json();
  } catch (_) {
    data = null;
  }
  return { ok: response.ok, status: response.status, data: data || {} };
}

// ---- sign-in ---------------------------------------------------------------------------------

async function start() {
  const current = await api("/session");
  if (current.data.signed_in) return signedIn(current.data);
  if (current.data.needs_key) return askForKey("");
  const opened = await api("/session", "POST", {});
  if (opened.ok) return signedIn(opened.data);
  askForKey(opened.data.error || "cannot open a session");
}

function askForKey(error) {
  $("main").hidden = true;
  $("signout").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = error;
  $("connection").textContent = "signed out";
  $("key").focus();
}

async function submitKey(event) {
  event.preventDefault();
  const input = $("key");
  const result = await api("/session", "POST", { key: input.value });
  input.value = "";
  if (result.ok) signedIn(result.data);
  else askForKey(result.data.error || "sign-in failed");
}

async function signOut() {
  await api("/session", "DELETE");
  if (state.source) state.source.close();
  state.csrf = null;
  askForKey("");
}

function signedIn(session) {
  state.csrf = session.csrf;
  state.mayApprove = session.may_approve;
  $("who").textContent = session.who + (session.may_approve ? " (may approve)" : " (view only)");
  $("signout").hidden = !session.needs_key;
  $("signin").hidden = true;
  $("main").hidden = false;
  connect();
}

// ---- the event stream ------------------------------------------------------------------------

function connect() {
  if (state.source) state.source.close();
  const source = new EventSource(BASE + "/events");
  state.source = source;
  source.addEventListener("open", () => ($("connection").textContent = "live"));
  source.addEventListener("error", () => {
    $("connection").textContent = "reconnecting…";
    if (source.readyState === EventSource.CLOSED) start(); // refused: the session is gone
  });
  source.addEventListener("snapshot", (event) => snapshot(JSON.parse(event.data)));
  source.addEventListener("topics", (event) => JSON.parse(event.data).forEach(showTopic));
  source.addEventListener("calls", (event) => JSON.parse(event.data).forEach(showCall));
  source.addEventListener("approvals", (event) => JSON.parse(event.data).forEach(showApproval));
  source.addEventListener("dropped", (event) => {
    $("feed-dropped").textContent = JSON.parse(event.data).calls + " calls not shown (the page fell behind)";
  });
}

function snapshot(data) {
  state.csrf = data.csrf;
  state.mayApprove = data.may_approve;
  state.nodes.clear();
  state.topics = 0;
  $("tree").replaceChildren();
  $("feed").replaceChildren();
  $("queue").replaceChildren();
  $("notices").replaceChildren(...data.notices.map((text) => el("li", "notice", text)));
  data.topics.forEach(showTopic);
  data.calls.forEach(showCall);
  data.approvals.forEach(showApproval);
  const devices = $("devices-panel");
  devices.hidden = !data.devices;
  if (data.devices) {
    $("devices").replaceChildren(
      ...data.devices.map((device) => el("li", "device", device.name || device.id || JSON.stringify(device)))
    );
  }
}

// ---- the topic tree ---------------------------------------------------------------------------

function insertSorted(list, item, name) {
  for (const child of list.children) {
    if (child.dataset.name > name) {
      list.insertBefore(item, child);
      return;
    }
  }
  list.appendChild(item);
}

function treeNode(path) {
  let node = state.nodes.get(path);
  if (node) return node;
  const cut = path.lastIndexOf("/");
  const parent = cut < 0 ? null : treeNode(path.slice(0, cut));
  const name = cut < 0 ? path : path.slice(cut + 1);
  const item = el("li", "node");
  item.dataset.name = name;
  item.dataset.topic = path;
  const row = el("div", "row");
  const label = el("span", "name", name === "" ? "(empty level)" : name);
  const value = el("span", "value");
  const meta = el("span", "meta");
  const spark = el("span", "spark");
  row.append(label, value, spark, meta);
  const children = el("ul", "children");
  item.append(row, children);
  insertSorted(parent ? parent.children : $("tree"), item, name);
  node = { item: item, value: value, meta: meta, spark: spark, children: children, leaf: false };
  state.nodes.set(path, node);
  return node;
}

function showTopic(topic) {
  const node = treeNode(topic.topic);
  if (!node.leaf) {
    node.leaf = true;
    node.item.classList.add("leaf");
    state.topics += 1;
    $("topic-count").textContent = String(state.topics);
  }
  const shown = topic.encoding === "base64" ? "base64: " + topic.value : topic.value;
  node.value.textContent = shown + (topic.cut ? "…" : "");
  node.value.title = topic.topic;
  node.meta.textContent =
    clock(topic.at) + " · " + topic.count + (topic.count === 1 ? " message" : " messages") +
    (topic.retained ? " · retained" : "");
  if (topic.history) sparkline(node.spark, topic.history);
  node.item.classList.remove("flash");
  void node.item.offsetWidth; // restart the highlight
  node.item.classList.add("flash");
}

function sparkline(holder, points) {
  const width = 80;
  const height = 18;
  const low = Math.min(...points);
  const high = Math.max(...points);
  const span = high - low || 1;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("width", String(width));
  svg.setAttribute("height", String(height));
  const line = document.createElementNS(SVG, "polyline");
  const step = points.length > 1 ? width / (points.length - 1) : 0;
  line.setAttribute(
    "points",
    points.map((p, i) => (i * step).toFixed(1) + "," + (height - ((p - low) / span) * height).toFixed(1)).join(" ")
  );
  svg.appendChild(line);
  holder.replaceChildren(svg);
}

// ---- the feed of tool calls -------------------------------------------------------------------

function showCall(call) {
  const item = el("li", "call");
  item.classList.add(call.decision, call.outcome.replace(/[^a-z_]/g, "_"));
  item.append(
    el("span", "time", clock(call.at)),
    el("span", "caller", call.caller),
    el("span", "tool", call.tool),
    el("span", "topic", call.topic || ""),
    el("span", "outcome", call.decision === "refused" ? "refused: " + call.outcome : call.outcome)
  );
  const feed = $("feed");
  feed.insertBefore(item, feed.firstChild);
  while (feed.children.length > FEED_MAX) feed.removeChild(feed.lastChild);
}

// ---- the approval queue -----------------------------------------------------------------------

function showApproval(approval) {
  const queue = $("queue");
  let item = queue.querySelector('li[data-id="' + CSS.escape(approval.id) + '"]');
  if (!item) {
    item = el("li", "approval");
    item.dataset.id = approval.id;
    queue.insertBefore(item, queue.firstChild);
  }
  item.className = "approval " + approval.status;
  const head = el("div", "head");
  head.append(
    el("span", "topic", approval.topic),
    el("span", "meta", "QoS " + approval.qos + (approval.retain ? ", retained" : "") + " · " + approval.bytes + " bytes")
  );
  const payload = el("pre", "payload", (approval.encoding === "base64" ? "base64: " : "") + approval.preview);
  const kind = approval.action.startsWith("sending a request") ? "a request (mqtt_query)" : "a publish";
  const who = el("div", "meta", kind + " asked by " + approval.caller + " at " + clock(approval.created));
  const status = el("div", "status", statusText(approval));
  item.replaceChildren(head, payload, who, status);
  if (approval.status === "pending" && state.mayApprove) {
    const actions = el("div", "actions");
    const approve = el("button", "approve", "Approve");
    const reject = el("button", "reject", "Reject");
    approve.type = reject.type = "button";
    approve.addEventListener("click", () => decide(approval.id, "approve", actions));
    reject.addEventListener("click", () => decide(approval.id, "reject", actions));
    actions.append(approve, reject);
    item.appendChild(actions);
  }
  const pending = queue.querySelectorAll("li.approval.pending").length;
  $("queue-count").textContent = pending ? pending + " waiting" : "";
}

function statusText(approval) {
  if (approval.status === "pending") return "waiting · expires at " + clock(approval.expires);
  const by = approval.decided_by ? " by " + approval.decided_by : "";
  const at = approval.decided_at ? " at " + clock(approval.decided_at) : "";
  const error = approval.error ? ": " + approval.error : "";
  return approval.status + by + at + error;
}

async function decide(id, decision, actions) {
  for (const button of actions.querySelectorAll("button")) button.disabled = true;
  const result = await api("/approvals/" + encodeURIComponent(id) + "/" + decision, "POST");
  $("queue-error").textContent = result.ok ? "" : result.data.error || "failed (" + result.status + ")";
  if (result.ok) showApproval(result.data);
  else for (const button of actions.querySelectorAll("button")) button.disabled = false;
}

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", submitKey);
  $("signout").addEventListener("click", signOut);
  start();
});
