// Hubbub's chat page, on the TypeScript SDK: one room, its messages with
// times, who is here and who is typing. The SDK reconnects with backoff and
// recovers what was missed; what could not be recovered shows as a gap
// marker in the conversation.
import { Client, ServerError, UpgradeError, ClosedError } from "../../sdk/ts/src/index.js";
import type { Message, PresenceDiff, State, Subscription } from "../../sdk/ts/src/index.js";

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;
const params = new URLSearchParams(location.search);
const TYPING_EVERY_MS = 2000;

let client: Client | undefined;
let sub: Subscription | undefined;
let room = "";
let lastTypingSent = 0;
let large: number | undefined; // a large room's user count (its diffs carry counts only)
let joinedOnce = false;

const statusText: Record<State, string> = {
  idle: "not connected",
  connecting: "connecting",
  connected: "connected",
  reconnecting: "reconnecting",
  closed: "disconnected",
};

function setStatus(state: State | "error", text?: string): void {
  const el = $("status");
  el.dataset.state = state;
  el.textContent = text ?? statusText[state as State];
}

function wsURL(): string {
  return `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/ws`;
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

function bodyText(m: Message): string {
  const b = m.body?.kind;
  switch (b?.case) {
    case "text":
      return b.value;
    case "data":
      return JSON.stringify(b.value);
    case "binary":
      return `<${b.value.length} bytes>`;
  }
  return "";
}

// timeElement shows a message's time (hours and minutes; the full date on hover).
function timeElement(when: Date): HTMLTimeElement {
  const time = document.createElement("time");
  time.dateTime = when.toISOString();
  time.title = fullFormat.format(when);
  time.textContent = timeFormat.format(when);
  return time;
}

function messageItem(m: Message): HTMLLIElement {
  const li = document.createElement("li");
  li.className = "message";
  li.dataset.offset = m.offset.toString(); // for recovery checks; not shown
  const time = timeElement(new Date(Number(m.timeUnixMs)));
  const who = document.createElement("span");
  who.className = "who";
  const server = m.sender?.server;
  who.textContent = server ? `[${server}]` : m.sender?.user || "?";
  if (server) who.classList.add("server");
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = bodyText(m);
  li.append(time, who, text);
  return li;
}

function append(li: HTMLLIElement): void {
  const list = $("messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(li);
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function notice(text: string, kind = "notice"): void {
  const li = document.createElement("li");
  li.className = kind;
  li.textContent = text;
  append(li);
}

function gap(text: string): void {
  const li = document.createElement("li");
  li.className = "gap";
  li.setAttribute("role", "separator");
  li.textContent = text;
  append(li);
}

function onMessage(m: Message, skipped: number): void {
  if (skipped > 0) gap(`${skipped} message${skipped === 1 ? "" : "s"} skipped: this connection fell behind`);
  append(messageItem(m));
  renderTyping();
}

// directItem shows a direct message: from someone to this user, or one this
// page sent.
function directItem(from: string, to: string, text: string, when: Date, offset?: bigint): HTMLLIElement {
  const li = document.createElement("li");
  li.className = "direct";
  if (offset !== undefined) li.dataset.directOffset = offset.toString();
  const time = timeElement(when);
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = `${from} → ${to}`;
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  li.append(time, who, body);
  return li;
}

// onDirect shows a message of this user's personal stream.
function onDirect(m: Message, skipped: number): void {
  if (skipped > 0) gap(`${skipped} direct message${skipped === 1 ? "" : "s"} skipped`);
  const from = m.sender?.server ? `[${m.sender.server}]` : m.sender?.user || "?";
  append(directItem(from, "you", bodyText(m), new Date(Number(m.timeUnixMs)), m.offset));
}

function onPresence(d: PresenceDiff): void {
  if (d.large) {
    large = d.users;
  } else {
    large = undefined;
    for (const u of d.joined) notice(`${u} joined`);
    for (const u of d.left) notice(`${u} left`);
  }
  renderMembers();
}

function renderMembers(): void {
  const ul = $("members");
  if (large !== undefined) {
    const li = document.createElement("li");
    li.textContent = `${large} here`;
    ul.replaceChildren(li);
    return;
  }
  const users = sub?.members();
  if (!users) return; // loading
  const shown = [...ul.children].map((li) => li.textContent).join("\n");
  if (shown === users.join("\n")) return;
  ul.replaceChildren(
    ...users.map((u) => {
      const li = document.createElement("li");
      li.textContent = u;
      return li;
    }),
  );
  $("member-count").textContent = String(users.length);
}

function renderTyping(): void {
  const me = client?.info?.client?.user;
  const names = (sub?.typing() ?? []).filter((u) => u !== me);
  $("typing").textContent = names.length === 0 ? "" : `${names.join(", ")} ${names.length === 1 ? "is" : "are"} typing…`;
}

async function loadHistory(upTo: bigint): Promise<void> {
  const h = await client!.history(room, { limit: 50, reverse: true });
  const older = h.messages.filter((m) => m.offset <= upTo).reverse();
  const list = $("messages");
  const first = list.firstChild;
  for (const m of older) list.insertBefore(messageItem(m), first);
  list.scrollTop = list.scrollHeight;
}

function explain(err: unknown): string {
  if (err instanceof ServerError) return `${err.message}`;
  if (err instanceof UpgradeError) return `the server refused the connection (HTTP ${err.status})`;
  if (err instanceof ClosedError) return err.reason || `closed (${err.code})`;
  return err instanceof Error ? err.message : String(err);
}

async function start(name: string): Promise<void> {
  client = new Client({
    url: wsURL(),
    name,
    encoding: params.get("encoding") === "json" ? "json" : "proto",
    compact: params.get("compact") === "1",
    userStream: true, // direct messages to this user, recovered like a room's
    onServerJoin: (personal) =>
      personal.on({
        message: onDirect,
        notRecovered: () => gap("Some direct messages could not be recovered: they were sent while this page was offline"),
      }),
    onState: (s) => {
      if (s === "connected") setStatus(s, `connected as ${client?.info?.client?.user ?? name}`);
      else if (s !== "closed") setStatus(s);
    },
    onClose: (err) => setStatus("closed", `disconnected: ${explain(err)}`),
  });
  try {
    await client.connect();
    sub = await client.join(
      room,
      {
        message: onMessage,
        notRecovered: () => gap("Some messages could not be recovered: they were missed while this page was offline"),
        presence: onPresence,
        typing: renderTyping,
      },
      { trackMembers: true },
    );
  } catch (err) {
    setStatus("error", `not connected: ${explain(err)}`);
    return;
  }
  if (sub.reply?.presence?.large) large = sub.reply.presence.users;
  if (!joinedOnce && sub.position) {
    joinedOnce = true;
    await loadHistory(sub.position.offset).catch((err) => notice(`history: ${explain(err)}`));
  }
}

$("join").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const name = $<HTMLInputElement>("name").value.trim();
  room = $<HTMLInputElement>("room").value.trim();
  $("room-name").textContent = room;
  $("join").hidden = true;
  $("chat").hidden = false;
  $("text").focus();
  void start(name);
});

$("text").addEventListener("input", () => {
  const now = Date.now();
  if (client?.currentState === "connected" && now - lastTypingSent > TYPING_EVERY_MS) {
    lastTypingSent = now;
    client.typing(room, true).catch(() => {});
  }
});

$("send").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const input = $<HTMLInputElement>("text");
  const text = input.value;
  if (!text.trim() || !client) return;
  input.value = "";
  lastTypingSent = 0;
  const dm = /^\/msg\s+(\S+)\s+([\s\S]+)$/.exec(text); // "/msg user text": a direct message
  if (dm) {
    try {
      await client.direct(dm[1], dm[2]);
      append(directItem("you", dm[1], dm[2], new Date()));
    } catch (err) {
      notice(`not sent to ${dm[1]}: ${explain(err)}`);
      input.value = text;
    }
    return;
  }
  try {
    await client.publish(room, text); // sent again after a reconnect with the same id: stored once
    client.typing(room, false).catch(() => {});
  } catch (err) {
    notice(`not sent: ${explain(err)}`);
    input.value = text;
  }
});

setInterval(() => {
  renderTyping();
  renderMembers();
}, 500);

// A handle for debugging and tests: drop the connection as a network failure
// would and stay away for at least ms before reconnecting.
(window as unknown as { hubbubDebug: object }).hubbubDebug = {
  drop: (ms = 0) => client?.dropConnection(ms),
  position: () => (sub?.position ? { offset: sub.position.offset.toString(), epoch: sub.position.epoch } : null),
  alias: () => sub?.reply?.alias ?? 0,
};
