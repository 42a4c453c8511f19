// Hubbub browser chat: the hubbub.v1.json subprotocol over one WebSocket,
// with reconnect (exponential backoff, full jitter) and recovery from the
// last message seen.
"use strict";

const $ = (id) => document.getElementById(id);
const SUBPROTOCOL = "hubbub.v1.json";
const MIN_DELAY_MS = 500, MAX_DELAY_MS = 15000, TYPING_EVERY_MS = 2000, TYPING_SHOW_MS = 6000;

const state = {
  name: "", room: "", ws: null, nextId: 1, pending: new Map(),
  me: null, position: null, attempt: 0, stopped: false, joinedOnce: false,
  members: new Set(), presence: null, presenceLoad: null, typers: new Map(), lastTypingSent: 0, msgSeq: 0,
  msgPrefix: Math.random().toString(36).slice(2, 10),
  // ?compact=1 asks for compact message pushes: {"c":{"a":alias,"o":offset,...}}.
  compact: new URLSearchParams(location.search).get("compact") === "1", alias: 0, compactPushes: 0,
};

function setStatus(kind, text) {
  const el = $("status");
  el.dataset.state = kind;
  el.textContent = text;
}

function wsURL() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

function send(command) {
  const id = String(state.nextId++);
  const frame = Object.assign({ id }, command);
  return new Promise((resolve, reject) => {
    state.pending.set(id, { resolve, reject });
    try {
      state.ws.send(JSON.stringify(frame));
    } catch (err) {
      state.pending.delete(id);
      reject(err);
    }
  });
}

function connect() {
  setStatus(state.attempt ? "reconnecting" : "connecting", state.attempt ? `reconnecting (attempt ${state.attempt})` : "connecting");
  const ws = new WebSocket(wsURL(), [SUBPROTOCOL]);
  state.ws = ws;
  let advice = null;
  ws.onopen = async () => {
    try {
      const c = await send({ connect: { name: state.name, compact: state.compact } });
      state.me = c.connect.client;
      await join();
      state.attempt = 0;
      setStatus("connected", `connected as ${state.me.user}`);
    } catch (err) {
      notice(`error: ${err.message}`);
      ws.close();
    }
  };
  ws.onmessage = (ev) => {
    const f = JSON.parse(ev.data);
    if (f.disconnect) { advice = f.disconnect; return; }
    if (f.id && f.id !== "0" && state.pending.has(f.id)) {
      const p = state.pending.get(f.id);
      state.pending.delete(f.id);
      if (f.error) p.reject(new Error(`${f.error.code}: ${f.error.message}`));
      else p.resolve(f);
      return;
    }
    onPush(f);
  };
  ws.onclose = (ev) => {
    for (const p of state.pending.values()) p.reject(new Error("disconnected"));
    state.pending.clear();
    // Without a disconnect push (the socket broke first), the server's close
    // code table says what the code means; unknown codes are worth a retry.
    const known = (window.HUBBUB_CLOSE_CODES || []).find((c) => c.code === ev.code);
    const reconnect = advice ? advice.reconnect : known ? known.reconnect : ev.code !== 1000;
    if (state.stopped || !reconnect) {
      setStatus("idle", `disconnected (${advice ? advice.reason : known ? known.reason : ev.code})`);
      return;
    }
    state.attempt++;
    const hold = state.holdUntil ? Math.max(0, state.holdUntil - Date.now()) : 0;
    const ceiling = Math.min(MAX_DELAY_MS, MIN_DELAY_MS * 2 ** (state.attempt - 1));
    const delay = Math.max(Math.random() * ceiling, advice && advice.retryAfterMs ? advice.retryAfterMs : 0, hold);
    setStatus("reconnecting", `reconnecting in ${(delay / 1000).toFixed(1)}s`);
    setTimeout(connect, delay);
  };
}

async function join() {
  const since = state.position && state.position.epoch ? state.position : undefined;
  const presenceSince = state.presence || undefined;
  const r = await send({ join: { room: state.room, since, presenceSince } });
  const j = r.join;
  state.alias = j.alias || 0;
  const pos = { offset: j.position.offset || "0", epoch: j.position.epoch || "" };
  if (since) {
    if (j.recovered) (j.messages || []).forEach(renderMessage);
    else {
      notice("some messages were missed while disconnected");
      state.position = pos;
    }
  } else {
    state.position = pos;
    if (!state.joinedOnce) await loadHistory(Number(pos.offset));
  }
  state.joinedOnce = true;
  const pr = j.presence || {};
  if (presenceSince && pr.recovered) {
    (pr.diffs || []).forEach(onPresenceDiff);
  } else {
    state.presence = pr.position || null;
    if (pr.large) showLarge(pr.users);
    else await loadMembers();
  }
}

// loadMembers pages through the room's users while the diffs that arrive
// meanwhile are buffered, then applies them: each diff says who is present or
// gone at its position, so the result is the member set at the newest diff.
async function loadMembers() {
  const load = { buffered: [] };
  state.presenceLoad = load;
  const users = new Set();
  let cursor = "";
  do {
    const p = await send({ presence: { room: state.room, cursor, limit: 1000 } });
    if (state.presenceLoad !== load) return; // superseded
    (p.presence.users || []).forEach((u) => users.add(u));
    cursor = p.presence.nextCursor || "";
  } while (cursor);
  state.presenceLoad = null;
  state.members = users;
  load.buffered.forEach(applyDiff);
  renderMembers();
}

// showLarge replaces the member list of a large room (one whose diffs carry
// counts only) with its user count.
function showLarge(users) {
  state.presenceLoad = null;
  state.members = new Set();
  const li = document.createElement("li");
  li.textContent = `${users || 0} here`;
  $("members").replaceChildren(li);
}

function applyDiff(d) {
  (d.joined || []).forEach((u) => state.members.add(u));
  (d.left || []).forEach((u) => state.members.delete(u));
}

// onPresenceDiff applies a diff in order; a gap or a reset reloads the list.
function onPresenceDiff(d) {
  const pos = state.presence, at = d.position || {};
  if (pos && pos.epoch === at.epoch && Number(at.offset) <= Number(pos.offset || 0)) return; // seen already
  const gap = !pos || pos.epoch !== at.epoch || Number(at.offset) !== Number(pos.offset || 0) + 1;
  state.presence = at;
  if (d.large) { showLarge(d.users); return; }
  if (gap || d.reset) { loadMembers(); return; }
  if (state.presenceLoad) { state.presenceLoad.buffered.push(d); return; }
  applyDiff(d);
  (d.joined || []).forEach((u) => notice(`${u} joined`));
  (d.left || []).forEach((u) => notice(`${u} left`));
  renderMembers();
}

async function loadHistory(upTo) {
  const h = await send({ history: { room: state.room, limit: 50, reverse: true } });
  const older = (h.history.messages || []).filter((m) => Number(m.offset) <= upTo).reverse();
  const list = $("messages");
  const first = list.firstChild;
  for (const m of older) list.insertBefore(messageItem(m), first);
}

// expand rebuilds the Message a compact push stands for: its room is the one
// whose join reply gave the alias, its epoch the one of the stream.
function expand(c) {
  const body = c.x !== undefined ? { text: c.x } : c.d !== undefined ? { data: c.d } : { binary: c.y || "" };
  const sender = c.s ? { server: c.s } : { user: c.u || "" };
  return { room: state.alias && c.a === state.alias ? state.room : "", offset: c.o || "0", epoch: state.position ? state.position.epoch : "",
    sender, body, timeUnixMs: c.t, messageId: c.i, key: c.k };
}

function onPush(f) {
  if (f.c) {
    state.compactPushes++;
    f = { message: expand(f.c) };
  }
  if (f.message && f.message.room === state.room) renderMessage(f.message);
  else if (f.presenceDiff && f.presenceDiff.room === state.room) onPresenceDiff(f.presenceDiff);
  else if (f.typingEvent && f.typingEvent.room === state.room) {
    const ev = f.typingEvent;
    if (state.me && ev.client.clientId === state.me.clientId) return;
    if (ev.typing) state.typers.set(ev.client.clientId, { user: ev.client.user, until: Date.now() + TYPING_SHOW_MS });
    else state.typers.delete(ev.client.clientId);
    renderTyping();
  }
}

function messageItem(m) {
  const li = document.createElement("li");
  li.dataset.offset = m.offset;
  const off = document.createElement("span");
  off.className = "offset";
  off.textContent = `#${m.offset}`;
  const who = document.createElement("span");
  who.className = "who";
  // A backend's message (server API) names its key instead of a user.
  const server = m.sender && m.sender.server;
  who.textContent = server ? `[${server}]` : (m.sender && m.sender.user) || "?";
  if (server) who.classList.add("server");
  const text = document.createElement("span");
  text.className = "text";
  const b = m.body || {};
  text.textContent = b.text !== undefined ? b.text : b.data !== undefined ? JSON.stringify(b.data) : `<${atob(b.binary || "").length} bytes>`;
  li.append(off, who, text);
  return li;
}

function renderMessage(m) {
  const pos = state.position;
  if (pos && pos.epoch === m.epoch && Number(m.offset) <= Number(pos.offset)) return; // seen already
  state.position = { offset: m.offset, epoch: m.epoch };
  if (m.sender) {
    // Compact messages name the user only: stop showing that user typing.
    if (m.sender.clientId) state.typers.delete(m.sender.clientId);
    else for (const [id, t] of state.typers) if (t.user === m.sender.user) state.typers.delete(id);
  }
  renderTyping();
  append(messageItem(m));
}

function notice(text) {
  const li = document.createElement("li");
  li.className = "notice";
  li.textContent = text;
  append(li);
}

function append(li) {
  const list = $("messages");
  list.append(li);
  list.scrollTop = list.scrollHeight;
}

function renderMembers() {
  const ul = $("members");
  ul.replaceChildren(...[...state.members].sort().map((u) => {
    const li = document.createElement("li");
    li.textContent = u;
    return li;
  }));
}

function renderTyping() {
  const now = Date.now();
  for (const [id, t] of state.typers) if (t.until < now) state.typers.delete(id);
  const names = [...state.typers.values()].map((t) => t.user);
  $("typing").textContent = names.length === 0 ? "" : `${names.join(", ")} ${names.length === 1 ? "is" : "are"} typing…`;
}
setInterval(renderTyping, 1000);

$("join").addEventListener("submit", (ev) => {
  ev.preventDefault();
  state.name = $("name").value.trim();
  state.room = $("room").value.trim();
  $("room-name").textContent = state.room;
  $("join").hidden = true;
  $("chat").hidden = false;
  $("text").focus();
  connect();
});

$("text").addEventListener("input", () => {
  const now = Date.now();
  if (state.ws && state.ws.readyState === WebSocket.OPEN && now - state.lastTypingSent > TYPING_EVERY_MS) {
    state.lastTypingSent = now;
    send({ typing: { room: state.room, typing: true } }).catch(() => {});
  }
});

$("send").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const input = $("text");
  const text = input.value;
  if (!text.trim()) return;
  input.value = "";
  const messageId = `${state.msgPrefix}-${++state.msgSeq}`;
  state.lastTypingSent = 0;
  try {
    await send({ publish: { room: state.room, messageId, body: { text } } });
    send({ typing: { room: state.room, typing: false } }).catch(() => {});
  } catch (err) {
    notice(`not sent: ${err.message}`);
    input.value = text;
  }
});

// A handle for debugging and tests: drop the connection as a network failure
// would and stay away for at least ms before reconnecting.
window.hubbubDebug = {
  drop(ms) {
    state.holdUntil = Date.now() + (ms || 0);
    if (state.ws) state.ws.close(4999, "dropped by debug handle");
  },
  position: () => state.position,
  compactPushes: () => state.compactPushes,
};
