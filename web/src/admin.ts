// Hubbub's admin console: the server API (Connect, from the browser) on its
// own listener. Nodes with their slow consumers and drops, rooms with their
// members per node, offset, publish rate and profile, a live tail of a room
// with each message's trace id, connections by user, and disconnects.
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import type { Client as ConnectClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { ServerAPI } from "../../sdk/ts/src/api.js";
import type { Connection, NodeInfo, RoomSummary, TailMessage } from "../../sdk/ts/src/api.js";
import { PresenceMode } from "../../sdk/ts/src/index.js";
import type { Message, StreamPosition } from "../../sdk/ts/src/index.js";

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;
const REFRESH_MS = 2000;
const MAX_TAIL = 500;
const KEY_STORE = "hubbub.console.key";

let api: ConnectClient<typeof ServerAPI> | undefined;
let refreshTimer: ReturnType<typeof setTimeout> | undefined;
let tail: { room: string; abort: AbortController } | undefined;
let userShown = "";

function el<K extends keyof HTMLElementTagNameMap>(tag: K, text?: string, cls?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function row(cells: (string | Node)[]): HTMLTableRowElement {
  const tr = el("tr");
  for (const c of cells) {
    const td = el("td");
    td.append(c);
    tr.append(td);
  }
  return tr;
}

function setStatus(state: string, text: string): void {
  const s = $("status");
  s.dataset.state = state;
  s.textContent = text;
}

function explain(err: unknown): string {
  if (err instanceof ConnectError) return `${Code[err.code]}: ${err.rawMessage}`;
  return err instanceof Error ? err.message : String(err);
}

const bytes = (n: bigint) => (n < 1024n ? `${n} B` : n < 1048576n ? `${(Number(n) / 1024).toFixed(1)} KiB` : `${(Number(n) / 1048576).toFixed(1)} MiB`);
const ago = (unixMs: bigint) => {
  const s = Math.max(0, Math.round((Date.now() - Number(unixMs)) / 1000));
  return s < 120 ? `${s}s` : s < 7200 ? `${Math.round(s / 60)}m` : `${Math.round(s / 3600)}h`;
};
const timeOf = (m: Message) => new Date(Number(m.timeUnixMs)).toLocaleTimeString();

function disconnectButton(label: string, what: { user?: string; clientId?: string }): HTMLButtonElement {
  const b = el("button", label, "danger");
  b.type = "button";
  b.dataset.user = what.user ?? "";
  b.dataset.clientId = what.clientId ?? "";
  b.addEventListener("click", async () => {
    const target = what.clientId ? `connection ${what.clientId}` : `every connection of ${what.user}`;
    if (!$<HTMLInputElement>("confirm-off").checked && !confirm(`Disconnect ${target}?`)) return;
    try {
      const r = await api!.disconnect({
        user: what.user ?? "",
        clientId: what.clientId ?? "",
        reason: $<HTMLInputElement>("reason").value.trim(),
        reconnect: $<HTMLInputElement>("reconnect").checked,
      });
      flash(`disconnected ${r.connections} connection${r.connections === 1 ? "" : "s"} (${target})`);
      void refresh();
      if (userShown) void showUser(userShown);
    } catch (err) {
      flash(`disconnect failed: ${explain(err)}`, true);
    }
  });
  return b;
}

function flash(text: string, bad = false): void {
  const f = $("flash");
  f.textContent = text;
  f.dataset.bad = String(bad);
}

function renderNodes(nodes: NodeInfo[]): void {
  $("nodes").replaceChildren(
    ...nodes.map((n) =>
      row([n.node, n.version, ago(n.startedUnixMs), String(n.connections), String(n.users), String(n.rooms),
        String(n.slowConsumers), String(n.overflowDropped), String(n.conflated), String(n.deliveryDrops)]),
    ),
  );
  const slow = nodes.flatMap((n) => n.slowest).sort((a, b) => (b.queuedBytes > a.queuedBytes ? 1 : -1));
  $("slowest").replaceChildren(...slow.map((c) => connectionRow(c)));
  $("slowest-empty").hidden = slow.length > 0;
}

function connectionRow(c: Connection): HTMLTableRowElement {
  const user = el("button", c.user, "link");
  user.type = "button";
  user.addEventListener("click", () => {
    $<HTMLInputElement>("user").value = c.user;
    void showUser(c.user);
  });
  return row([user, c.clientId, c.node, c.rooms.join(", "), bytes(c.queuedBytes), ago(c.connectedUnixMs),
    disconnectButton("Disconnect", { clientId: c.clientId })]);
}

function renderRooms(rooms: RoomSummary[]): void {
  $("rooms").replaceChildren(
    ...rooms.map((r) => {
      const open = el("button", r.room, "link");
      open.type = "button";
      open.dataset.room = r.room;
      open.addEventListener("click", () => void openRoom(r.room));
      return row([open, r.node, String(r.members), r.offset.toString(), r.publishRate.toFixed(1)]);
    }),
  );
  $("rooms-empty").hidden = rooms.length > 0;
}

async function refresh(): Promise<void> {
  clearTimeout(refreshTimer);
  if (!api) return;
  try {
    const [info, rooms] = await Promise.all([
      api.info({ slowest: 10 }),
      api.listRooms({ pattern: $<HTMLInputElement>("pattern").value.trim(), limit: 200 }),
    ]);
    renderNodes(info.nodes);
    renderRooms(rooms.rooms);
    if (tail) await renderRoomInfo(tail.room);
    if (userShown) await showUser(userShown);
    setStatus("ok", `signed in as ${info.key} · updated ${new Date().toLocaleTimeString()}`);
  } catch (err) {
    setStatus("error", explain(err));
  }
  refreshTimer = setTimeout(() => void refresh(), REFRESH_MS);
}

async function renderRoomInfo(room: string): Promise<void> {
  const r = await api!.roomInfo({ room });
  const info = r.info;
  const facts: [string, string][] = [
    ["node", r.node],
    ["offset", r.position?.offset.toString() ?? "0"],
    ["epoch", r.position?.epoch ?? ""],
    ["publish rate", `${r.publishRate.toFixed(1)}/s`],
    ["members", `${r.presence?.members ?? 0} (${r.presence?.users ?? 0} users)`],
    ["per node", r.members.map((m) => `${m.node}: ${m.members}`).join(", ") || "none"],
    ["profile", info?.profile || "default"],
    ["presence", info ? PresenceMode[info.presence].toLowerCase() : ""],
    ["history", info ? `${info.historySize} messages${info.durable ? ", durable" : ""}` : ""],
    ["max members", info?.maxMembers ? String(info.maxMembers) : "no limit"],
  ];
  $("room-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", k), el("dd", v)]));
  // The delivery ledger of the newest messages: what became of each one's deliveries.
  const top = r.position?.offset ?? 0n;
  const led = await api!.ledger({ room, sinceOffset: top > 10n ? top - 10n : 0n, limit: 10 });
  $("ledger").replaceChildren(
    ...led.deliveries.reverse().map((d) =>
      row([`#${d.offset}`, String(d.members), String(d.written), String(d.acked), String(d.queued), String(d.dropped),
        String(d.conflated), String(d.disconnected)]),
    ),
  );
  $("ledger-empty").hidden = led.deliveries.length > 0;
}

function tailItem(t: TailMessage): HTMLLIElement {
  const m = t.message!;
  const li = el("li");
  li.dataset.offset = m.offset.toString();
  const who = m.sender?.server ? `[${m.sender.server}]` : m.sender?.user ?? "?";
  const b = m.body?.kind;
  const text = b?.case === "text" ? b.value : b?.case === "data" ? JSON.stringify(b.value) : b?.case === "binary" ? `<${b.value.length} bytes>` : "";
  li.append(el("span", `#${m.offset}`, "offset"), el("time", timeOf(m)), el("span", who, "who"), el("span", text, "text"),
    el("code", t.traceId || "untraced", t.traceId ? "trace" : "trace none"));
  return li;
}

function tailNote(text: string, cls: string): void {
  const list = $("tail");
  list.prepend(el("li", text, cls));
}

// openRoom shows a room and tails it: the stream is opened again (from the
// last position) when it breaks, and a gap is shown as such.
async function openRoom(room: string): Promise<void> {
  tail?.abort.abort();
  const abort = new AbortController();
  tail = { room, abort };
  $("room-detail").hidden = false;
  $("room-title").textContent = room;
  $("tail").replaceChildren();
  $("tail-state").textContent = "connecting";
  try {
    await renderRoomInfo(room);
  } catch (err) {
    flash(`room ${room}: ${explain(err)}`, true);
  }
  let since: StreamPosition | undefined;
  while (!abort.signal.aborted) {
    try {
      for await (const r of api!.tail({ room, since }, { signal: abort.signal })) {
        $("tail-state").textContent = "live";
        if (r.gap) tailNote("gap: messages before this point are no longer held", "gap");
        const list = $("tail");
        for (const t of r.messages) list.prepend(tailItem(t));
        while (list.children.length > MAX_TAIL) list.lastElementChild!.remove();
        since = r.position;
      }
    } catch (err) {
      if (abort.signal.aborted) return;
      $("tail-state").textContent = `interrupted (${explain(err)}); resuming`;
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

async function showUser(user: string): Promise<void> {
  userShown = user;
  $("user-result").hidden = false;
  $("user-title").textContent = user;
  try {
    const r = await api!.connections({ user });
    $("connections").replaceChildren(...r.connections.map((c) => connectionRow(c)));
    $("connections-empty").hidden = r.connections.length > 0;
    $("disconnect-user").replaceChildren(disconnectButton(`Disconnect ${user} everywhere`, { user }));
  } catch (err) {
    flash(`connections of ${user}: ${explain(err)}`, true);
  }
}

async function signIn(key: string): Promise<void> {
  const client = createClient(
    ServerAPI,
    createConnectTransport({
      baseUrl: location.origin,
      interceptors: [(next) => (req) => {
        req.header.set("Authorization", `Bearer ${key}`);
        return next(req);
      }],
    }),
  );
  try {
    const info = await client.info({});
    if (!info.scopes.includes("admin")) {
      setStatus("error", `the key ${info.key} lacks the admin scope (it has: ${info.scopes.join(", ") || "none"})`);
      return;
    }
  } catch (err) {
    setStatus("error", err instanceof ConnectError && err.code === Code.Unauthenticated ? "unknown API key" : explain(err));
    return;
  }
  api = client;
  sessionStorage.setItem(KEY_STORE, key);
  $("signin").hidden = true;
  $("console").hidden = false;
  $("signout").hidden = false;
  await refresh();
}

$("signin").addEventListener("submit", (ev) => {
  ev.preventDefault();
  void signIn($<HTMLInputElement>("key").value.trim());
});
$("pattern").addEventListener("input", () => void refresh());
$("user-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const user = $<HTMLInputElement>("user").value.trim();
  if (user) void showUser(user);
});
$("close-room").addEventListener("click", () => {
  tail?.abort.abort();
  tail = undefined;
  $("room-detail").hidden = true;
});

$("signout").addEventListener("click", () => {
  sessionStorage.removeItem(KEY_STORE);
  location.reload();
});

const saved = sessionStorage.getItem(KEY_STORE);
if (saved) void signIn(saved);
