import { clone, create, fromBinary, fromJson, fromJsonString, toBinary, toJsonString } from "@bufbuild/protobuf";
import type { JsonValue, MessageInitShape } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import {
  BodySchema,
  ClientFrameSchema,
  ConnectReplySchema,
  ServerFrameSchema,
  MessageSchema,
  PresenceMode,
  ClientInfoSchema,
  StreamPositionSchema,
} from "./gen/hubbub/v1/hubbub_pb.js";
import type {
  Body,
  ClientFrame,
  ClientInfo,
  CompactMessage,
  ConnectReply,
  HistoryReply,
  JoinReply,
  MarksReply,
  Message,
  PresenceDiff,
  PresenceReply,
  PublishReply,
  ReadReceipts,
  ServerFrame,
  StreamPosition,
  TypingEvent,
} from "./gen/hubbub/v1/hubbub_pb.js";
import { ClosedError, DisconnectedError, ServerError, UpgradeError, shouldReconnect } from "./errors.js";

/** The WebSocket subprotocols: protobuf in binary frames, or its JSON in text frames. */
export const SUBPROTOCOL_PROTO = "hubbub.v1.proto";
export const SUBPROTOCOL_JSON = "hubbub.v1.json";

/** The WebSocket constructor the client uses: the browser's, Node 22's, or the `ws` package's. */
export type WebSocketConstructor = new (url: string, protocols: string[], options?: unknown) => WebSocket;

export type State = "idle" | "connecting" | "connected" | "reconnecting" | "closed";

export interface ClientOptions {
  /** The server's WebSocket URL (ws://host:8080/ws), or several: reconnects go round them in turn. */
  url: string | string[];
  /** "proto" (default) or "json". */
  encoding?: "proto" | "json";
  /** The display name of an anonymous connection. */
  name?: string;
  /** Returns the connection token for each connect and before it expires (refresh). */
  token?: () => string | Promise<string>;
  /** Ask for compact message pushes (room aliases, short JSON); messages still reach you whole. */
  compact?: boolean;
  /**
   * Receive the user's personal stream: the server joins the room "@<user>"
   * (client.info.userStream), where direct messages to the user arrive as
   * messages and are recovered across reconnects like any room's. Its
   * subscription comes to onServerJoin.
   */
  userStream?: boolean;
  /** Backoff of reconnects: full jitter between 0 and min(max, min * 2^attempt). Defaults 200 ms and 20 s. */
  minReconnectDelayMs?: number;
  maxReconnectDelayMs?: number;
  /** The WebSocket implementation; default globalThis.WebSocket (pass `ws`'s WebSocket on Node 20). */
  WebSocket?: WebSocketConstructor;
  /** Passed as the third argument of the WebSocket constructor (with `ws`: headers, agent). */
  webSocketOptions?: unknown;
  /** Called on every change of state. */
  onState?: (state: State) => void;
  /** Called once when the client stops for good, with why. */
  onClose?: (err: Error) => void;
  /**
   * Called with the subscription of each room the server joined for this
   * client (the backend's connect hook named it), the first time, before any
   * of its messages: set its handlers there (Subscription.on). Such rooms are
   * not joined with join(); the client recovers them by passing their
   * positions with each connect.
   */
  onServerJoin?: (sub: Subscription) => void;
}

/** What a subscription hears: messages in order, once each, and what else the room pushes. */
export interface SubscriptionHandlers {
  /** A message; skipped > 0 when the room's overflow policy dropped some before it. */
  message?: (m: Message, skipped: number) => void;
  /** After a reconnect the missed messages were no longer held: the stream continues from position. */
  notRecovered?: (position: StreamPosition) => void;
  presence?: (d: PresenceDiff) => void;
  typing?: (e: TypingEvent) => void;
  /** Users' read marks moved (joined with receipts). */
  receipts?: (r: ReadReceipts) => void;
  /**
   * The personal stream's device commands not acked yet, oldest first, at
   * every join: handle each once (dedupe on messageId), then ack its offset
   * with mark(room, offset).
   */
  commands?: (pending: Message[]) => void;
}

export interface JoinOptions {
  /** The last position seen, to receive every message after it (recovery). */
  since?: { offset: bigint; epoch: string };
  /**
   * Keep the room's member list (Subscription.members()): fetched in pages
   * after the join and kept up to date from the pushed diffs, fetched again
   * after a gap, a reset or a rejoin. Rooms with full presence only; a large
   * room pushes counts, and its list is not kept.
   */
  trackMembers?: boolean;
  /** Receive the room's read receipts (handlers.receipts), coalesced by the room. */
  receipts?: boolean;
}

export interface PublishOptions {
  /** The message id the server dedupes retries by; one is made up when not given. */
  messageId?: string;
  /** The conflation key. */
  key?: string;
}

/** A body to publish: a string is text, bytes are binary, anything else JSON data. */
export type BodyInput = string | Uint8Array | JsonValue;

/** A joined room. */
export class Subscription {
  readonly room: string;
  /** The position of the last message delivered (or of the join). */
  position?: StreamPosition;
  /** The join reply (room info, presence state). */
  reply?: JoinReply;
  private handlers: SubscriptionHandlers;
  private client: Client;
  private track: boolean;
  /** @internal Joined asking for read receipts. */
  receipts = false;
  /** @internal True for a room the server joined for the client. */
  server = false;
  private presencePos?: StreamPosition;
  private users?: Set<string>; // undefined until loaded (trackMembers only)
  private loadGen = 0;
  private loading = false;
  private buffered: PresenceDiff[] = [];
  private pageAt = 0n; // the newest presence offset a page was taken at
  private stats = { diffs: 0, loads: 0, verified: 0, mismatches: 0 };
  private typists = new Map<string, { user: string; at: number }>(); // by client id, when last seen typing
  /** @internal */
  constructor(client: Client, room: string, handlers: SubscriptionHandlers, since?: StreamPosition, track = false) {
    this.client = client;
    this.room = room;
    this.handlers = handlers;
    this.position = since;
    this.track = track;
  }

  /** Set the handlers (for a room the server joined: in onServerJoin). */
  on(handlers: SubscriptionHandlers): void {
    this.handlers = handlers;
  }

  /** How the member list was kept: diffs applied, loads, digest checks passed and failed. */
  presenceStats(): { diffs: number; loads: number; verified: number; mismatches: number } {
    return { ...this.stats };
  }

  /** The room's users, sorted, when joined with trackMembers and loaded; undefined otherwise. */
  members(): string[] | undefined {
    return this.users ? [...this.users].sort() : undefined;
  }

  /**
   * The users typing now, sorted (from the room's typing events; an
   * indicator lapses after ttlMs without a refresh, as the server's does,
   * and when the user's message arrives).
   */
  typing(ttlMs = 6000): string[] {
    const now = Date.now();
    const out = new Set<string>();
    for (const [id, t] of this.typists) {
      if (t.at + ttlMs < now) this.typists.delete(id);
      else out.add(t.user);
    }
    return [...out].sort();
  }
  /** Leave the room. */
  leave(): Promise<void> {
    return this.client.leave(this);
  }
  /** @internal */
  deliver(m: Message): void {
    const p = this.position;
    let skipped = 0;
    if (p && p.epoch === m.epoch) {
      if (m.offset <= p.offset) return; // delivered before
      skipped = Number(m.offset - p.offset - 1n);
    }
    this.position = create(StreamPositionSchema, { offset: m.offset, epoch: m.epoch });
    if (m.sender) for (const [id, t] of this.typists) if (t.user === m.sender.user) this.typists.delete(id);
    this.handlers.message?.(m, skipped);
  }
  /** @internal */
  onJoin(j: JoinReply, sentSince: boolean): void {
    this.reply = j;
    if (j.commands.length > 0) this.handlers.commands?.(j.commands);
    this.onJoinPresence(j, sentSince);
    if (!sentSince || !this.position) {
      this.position = j.position;
      return;
    }
    if (j.recovered) {
      for (const m of j.messages) this.deliver(m);
      return;
    }
    this.position = j.position;
    if (j.position) this.handlers.notRecovered?.(j.position);
  }
  /** @internal */
  push(f: ServerFrame): void {
    if (f.body.case === "presenceDiff") {
      if (this.onDiff(f.body.value)) this.handlers.presence?.(f.body.value);
    } else if (f.body.case === "readReceipts") {
      this.handlers.receipts?.(f.body.value);
    } else if (f.body.case === "typingEvent") {
      const e = f.body.value;
      const id = e.client?.clientId ?? "";
      if (e.typing) this.typists.set(id, { user: e.client?.user ?? "", at: Date.now() });
      else this.typists.delete(id);
      this.handlers.typing?.(e);
    }
  }

  private onJoinPresence(j: JoinReply, sentSince: boolean): void {
    const st = j.presence;
    if (sentSince && st?.recovered) {
      for (const d of st.diffs) this.onDiff(d);
      return;
    }
    this.presencePos = st?.position;
    if (st?.large) this.dropMembers();
    else this.loadMembers();
  }

  /** Applies a pushed diff in order; false for one seen before. */
  private onDiff(d: PresenceDiff): boolean {
    const at = d.position;
    const pos = this.presencePos;
    const sameEpoch = !!pos && !!at && pos.epoch === at.epoch;
    if (sameEpoch && at!.offset <= pos!.offset) return false;
    const gap = !sameEpoch || at!.offset !== pos!.offset + 1n;
    this.presencePos = at;
    if (d.large) this.dropMembers();
    else if (gap || d.reset) this.loadMembers();
    else if (this.loading) this.buffered.push(d);
    else if (this.users) {
      applyDiff(this.users, d);
      this.stats.diffs++;
      // Check the list against the room's digest once a diff newer than
      // every page is applied; fetch it again on a mismatch.
      if (at && at.offset > this.pageAt) {
        if (digestOf(this.users) === d.digest && this.users.size === d.users) this.stats.verified++;
        else {
          this.stats.mismatches++;
          this.loadMembers();
        }
      }
    }
    return true;
  }

  private dropMembers(): void {
    this.loadGen++;
    this.users = undefined;
    this.loading = false;
    this.buffered = [];
  }

  /**
   * Pages through the room's users while the diffs that arrive are kept,
   * then applies them: each diff says who is present or gone at its
   * position, so the result is the member set at the newest diff.
   */
  private loadMembers(): void {
    if (!this.track || this.reply?.info?.presence !== PresenceMode.FULL) return;
    const gen = ++this.loadGen;
    this.stats.loads++;
    this.loading = true;
    this.buffered = [];
    void (async () => {
      const users = new Set<string>();
      let cursor = "";
      try {
        do {
          const page = await this.client.presence(this.room, { limit: 1000, cursor });
          if (gen !== this.loadGen) return;
          if (page.state?.large) {
            this.dropMembers();
            return;
          }
          for (const u of page.users) users.add(u);
          const at = page.state?.position?.offset ?? 0n;
          if (at > this.pageAt) this.pageAt = at;
          cursor = page.nextCursor;
        } while (cursor);
      } catch {
        if (gen === this.loadGen) this.loading = false; // the next diff, gap or rejoin loads again
        return;
      }
      if (gen !== this.loadGen) return;
      for (const d of this.buffered) applyDiff(users, d);
      this.users = users;
      this.loading = false;
      this.buffered = [];
    })();
  }
}

interface Call {
  frame: ClientFrame;
  retry: boolean; // sent again after a reconnect
  sent: boolean; // written on the current socket
  resolve: (f: ServerFrame) => void;
  reject: (e: Error) => void;
}

/**
 * A connection to Hubbub that survives disconnects: it reconnects with
 * backoff, rejoins its rooms from their last positions (so a subscription
 * sees every message once, in order, or a notRecovered event), and sends
 * again what was not answered. Commands are pipelined and take effect in
 * the order they were made.
 */
export class Client {
  private opts: Required<Pick<ClientOptions, "minReconnectDelayMs" | "maxReconnectDelayMs">> & ClientOptions;
  private urls: string[];
  private dials = 0;
  private ws?: WebSocket;
  private ready = false; // connected, rejoined and resent
  private state: State = "idle";
  private nextId = 1n;
  private calls = new Map<bigint, Call>();
  private subs = new Map<string, Subscription>();
  private aliases = new Map<number, string>();
  private msgPrefix = Math.random().toString(36).slice(2, 10);
  private msgSeq = 0;
  private attempt = 0;
  private holdUntil = 0; // no reconnect before this (dropConnection's hold)
  private advice?: { reconnect: boolean; retryAfterMs: number; code: number; reason: string };
  private timer?: ReturnType<typeof setTimeout>;
  private refreshTimer?: ReturnType<typeof setTimeout>;
  private firstConnect?: { resolve: (r: ConnectReply) => void; reject: (e: Error) => void };
  private connectError?: Error;
  /** The connect reply of the current connection. */
  info?: ConnectReply;

  constructor(opts: ClientOptions) {
    this.opts = { minReconnectDelayMs: 200, maxReconnectDelayMs: 20000, ...opts };
    this.urls = Array.isArray(opts.url) ? opts.url : [opts.url];
    if (this.urls.length === 0) throw new Error("hubbub: no url");
  }

  /** The connection state. */
  get currentState(): State {
    return this.state;
  }

  /**
   * Connect, and stay connected until close(). Resolves with the first
   * connect reply; rejects when the server refuses the client for good (a
   * bad token: ServerError UNAUTHORIZED; a refused upgrade: UpgradeError).
   */
  connect(): Promise<ConnectReply> {
    if (this.state === "closed") return Promise.reject(new ClosedError(1000, "closed"));
    if (this.info && this.ready) return Promise.resolve(this.info);
    return new Promise((resolve, reject) => {
      this.firstConnect = { resolve, reject };
      if (this.state === "idle") this.dial();
    });
  }

  /** Join a room; handlers hear its messages and pushes until leave(). */
  async join(room: string, handlers: SubscriptionHandlers = {}, opts: JoinOptions = {}): Promise<Subscription> {
    if (this.subs.has(room)) throw new Error(`hubbub: already joined ${room}`);
    const since = opts.since ? create(StreamPositionSchema, opts.since) : undefined;
    const sub = new Subscription(this, room, handlers, since, !!opts.trackMembers);
    this.subs.set(room, sub);
    try {
      sub.receipts = !!opts.receipts;
      const f = await this.request({ case: "join", value: { room, since, receipts: sub.receipts } }, false, (r) => this.onJoinReply(sub, r, !!since));
      void f;
    } catch (e) {
      if (this.subs.get(room) === sub) this.subs.delete(room);
      throw e;
    }
    return sub;
  }

  /** @internal */
  async leave(sub: Subscription): Promise<void> {
    if (this.subs.get(sub.room) !== sub) return;
    this.subs.delete(sub.room);
    if (!this.ready) return; // the server dropped the membership with the connection
    try {
      await this.request({ case: "leave", value: { room: sub.room } }, false);
    } catch (e) {
      if (!(e instanceof DisconnectedError)) throw e;
    }
  }

  /**
   * Publish to a room. The publish is sent again after a reconnect with the
   * same message id, so it is stored once.
   */
  async publish(room: string, body: BodyInput, opts: PublishOptions = {}): Promise<PublishReply> {
    const messageId = opts.messageId ?? `${this.msgPrefix}-${++this.msgSeq}`;
    const f = await this.request(
      { case: "publish", value: { room, body: toBody(body), messageId, key: opts.key ?? "" } },
      true,
    );
    return (f.body as { case: "publish"; value: PublishReply }).value;
  }

  /**
   * Send a direct message to a user: stored in the user's personal stream
   * ("@<user>") and delivered to every connection of the user that receives
   * it, on any node. Sent again after a reconnect with the same message id,
   * so it is stored once. Resolves with the offset in the user's stream.
   * With requireAck it is a device command: sent again at every join of the
   * user's stream until one of the user's connections acks it (mark) or
   * ttlMs (default 60 s) passes; the outcome comes to the sender's own
   * personal stream as a message with outcome set.
   */
  async direct(user: string, body: BodyInput, opts: { messageId?: string; requireAck?: boolean; ttlMs?: number } = {}): Promise<PublishReply> {
    const messageId = opts.messageId ?? `${this.msgPrefix}-${++this.msgSeq}`;
    const f = await this.request(
      { case: "direct", value: { user, body: toBody(body), messageId, requireAck: !!opts.requireAck, ttlMs: opts.ttlMs ?? 0 } },
      true,
    );
    return (f.body as { case: "direct"; value: PublishReply }).value;
  }

  /**
   * Report that a room's messages up to offset reached the application (the
   * user's ack mark), or, with read, that a person saw them (the read mark,
   * which members with receipts hear of). Marks are the user's, kept by the
   * room for all of the user's devices, and only move forward. Resolves with
   * the marks and the unread count.
   */
  async mark(room: string, offset: bigint, read = false): Promise<MarksReply> {
    const epoch = this.subs.get(room)?.position?.epoch ?? "";
    const f = await this.request(read ? { case: "read", value: { room, offset, epoch } } : { case: "ack", value: { room, offset, epoch } }, true);
    return (f.body as { case: "ack" | "read"; value: MarksReply }).value;
  }

  /** Messages kept by a room: after sinceOffset, at most limit, oldest first (or newest with reverse). */
  async history(room: string, opts: { sinceOffset?: bigint; limit?: number; reverse?: boolean } = {}): Promise<HistoryReply> {
    const f = await this.request(
      { case: "history", value: { room, sinceOffset: opts.sinceOffset ?? 0n, limit: opts.limit ?? 0, reverse: opts.reverse ?? false } },
      true,
    );
    return (f.body as { case: "history"; value: HistoryReply }).value;
  }

  /** One page of a room's users (limit per page, cursor from the previous page's nextCursor). */
  async presence(room: string, opts: { limit?: number; cursor?: string } = {}): Promise<PresenceReply> {
    const f = await this.request({ case: "presence", value: { room, limit: opts.limit ?? 0, cursor: opts.cursor ?? "" } }, true);
    return (f.body as { case: "presence"; value: PresenceReply }).value;
  }

  /** Say whether this connection is typing in a room. */
  async typing(room: string, typing: boolean): Promise<void> {
    await this.request({ case: "typing", value: { room, typing } }, false);
  }

  /** Close for good: pending commands fail with ClosedError. */
  close(): void {
    this.stop(new ClosedError(1000, "closed by the client"));
  }

  /**
   * Drop the current socket as a network failure would (tests, debugging);
   * the client reconnects, no sooner than holdMs from now.
   */
  dropConnection(holdMs = 0): void {
    this.holdUntil = holdMs > 0 ? Date.now() + holdMs : 0;
    this.ws?.close(4999, "dropped by the client");
  }

  private setState(s: State): void {
    if (this.state === s) return;
    this.state = s;
    this.opts.onState?.(s);
  }

  private request(
    command: MessageInitShape<typeof ClientFrameSchema>["command"],
    retry: boolean,
    onReply?: (f: ServerFrame) => void,
  ): Promise<ServerFrame> {
    if (this.state === "closed") return Promise.reject(new ClosedError(1000, "closed"));
    const id = this.nextId++;
    const frame = create(ClientFrameSchema, { id, command });
    return new Promise<ServerFrame>((resolve, reject) => {
      const call: Call = {
        frame,
        retry,
        sent: false,
        resolve: (f) => {
          if (f.body.case === "error") {
            const e = f.body.value;
            reject(new ServerError(e.code, e.message, e.temporary));
            return;
          }
          onReply?.(f);
          resolve(f);
        },
        reject,
      };
      this.calls.set(id, call);
      if (this.ready) this.write(call);
    });
  }

  private write(call: Call): void {
    call.sent = true;
    this.writeFrame(call.frame);
  }

  private writeFrame(frame: ClientFrame): void {
    const ws = this.ws;
    if (!ws || ws.readyState !== 1) return; // the close handler decides what happens to the call
    if (this.opts.encoding === "json") ws.send(toJsonString(ClientFrameSchema, frame));
    else ws.send(toBinary(ClientFrameSchema, frame));
  }

  private dial(): void {
    const WS = this.opts.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) {
      this.stop(new Error("hubbub: no WebSocket here; pass the ws package's WebSocket as options.WebSocket"));
      return;
    }
    this.setState(this.attempt === 0 ? "connecting" : "reconnecting");
    const url = this.urls[this.dials++ % this.urls.length];
    const protocol = this.opts.encoding === "json" ? SUBPROTOCOL_JSON : SUBPROTOCOL_PROTO;
    let ws: WebSocket;
    try {
      ws = this.opts.webSocketOptions !== undefined ? new WS(url, [protocol], this.opts.webSocketOptions) : new WS(url, [protocol]);
    } catch (e) {
      this.stop(e instanceof Error ? e : new Error(String(e)));
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    this.advice = undefined;
    this.connectError = undefined;
    let opened = false;
    let upgradeError: UpgradeError | undefined;
    ws.onopen = () => {
      opened = true;
      void this.sendConnect(ws);
    };
    ws.onerror = (ev: Event) => {
      const msg = (ev as { message?: string }).message ?? "";
      const m = /Unexpected server response: (\d+)/.exec(msg);
      if (!opened) upgradeError = new UpgradeError(m ? Number(m[1]) : 0, msg || "WebSocket upgrade failed");
    };
    ws.onmessage = (ev: MessageEvent) => {
      if (this.ws !== ws) return;
      let f: ServerFrame;
      try {
        f =
          typeof ev.data === "string"
            ? fromJsonString(ServerFrameSchema, ev.data, { ignoreUnknownFields: true })
            : fromBinary(ServerFrameSchema, new Uint8Array(ev.data as ArrayBuffer));
      } catch {
        ws.close(1007, "undecodable frame");
        return;
      }
      this.onFrame(f);
    };
    ws.onclose = (ev: CloseEvent) => {
      if (this.ws !== ws) return;
      this.onSocketClosed(ev.code, ev.reason, opened ? undefined : upgradeError);
    };
  }

  private async sendConnect(ws: WebSocket): Promise<void> {
    let token = "";
    try {
      if (this.opts.token) token = await this.opts.token();
    } catch (e) {
      this.stop(e instanceof Error ? e : new Error(String(e)));
      return;
    }
    if (this.ws !== ws) return;
    const since: Record<string, StreamPosition> = {};
    for (const sub of this.subs.values()) if (sub.server && sub.position) since[sub.room] = sub.position;
    const id = this.nextId++;
    const frame = create(ClientFrameSchema, {
      id,
      command: { case: "connect", value: { token, name: this.opts.name ?? "", compact: !!this.opts.compact, userStream: !!this.opts.userStream, since } },
    });
    this.calls.set(id, {
      frame,
      retry: false,
      sent: true,
      resolve: (f) => this.onConnectReply(ws, f),
      reject: () => {},
    });
    this.writeFrame(frame);
  }

  private onConnectReply(ws: WebSocket, f: ServerFrame): void {
    if (f.body.case === "error") {
      const e = f.body.value;
      this.connectError = new ServerError(e.code, e.message, e.temporary); // the close that follows says whether to retry
      return;
    }
    if (f.body.case !== "connect" || this.ws !== ws) return;
    this.info = f.body.value;
    this.attempt = 0;
    this.aliases.clear();
    this.scheduleRefresh();
    // Rooms the server joins on this connection: their join replies come
    // as pushes. Ones it no longer names are over.
    const named = new Set(this.info.rooms);
    const fresh: Subscription[] = [];
    for (const sub of [...this.subs.values()]) if (sub.server && !named.has(sub.room)) this.subs.delete(sub.room);
    for (const room of this.info.rooms) {
      const sub = this.subs.get(room);
      if (sub) {
        sub.server = true;
        continue;
      }
      const s = new Subscription(this, room, {});
      s.server = true;
      this.subs.set(room, s);
      fresh.push(s);
    }
    for (const s of fresh) this.opts.onServerJoin?.(s);
    // Rejoin every room from its position, then send what waits, in the
    // order it was made; newer commands queue behind (they see ready).
    for (const sub of this.subs.values()) {
      if (sub.server) continue;
      const since = sub.position;
      const id = this.nextId++;
      const frame = create(ClientFrameSchema, { id, command: { case: "join", value: { room: sub.room, since, receipts: sub.receipts } } });
      this.calls.set(id, {
        frame,
        retry: false,
        sent: true,
        resolve: (r) => {
          if (r.body.case === "join") this.onJoinReply(sub, r, !!since);
          else if (r.body.case === "error" && this.subs.get(sub.room) === sub && !r.body.value.temporary) this.subs.delete(sub.room);
        },
        reject: () => {},
      });
      this.writeFrame(frame);
    }
    const waiting = [...this.calls.entries()].filter(([, c]) => !c.sent).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    for (const [, c] of waiting) this.write(c);
    this.ready = true;
    this.setState("connected");
    const first = this.firstConnect;
    this.firstConnect = undefined;
    first?.resolve(this.info);
  }

  private onJoinReply(sub: Subscription, f: ServerFrame, sentSince: boolean): void {
    if (f.body.case !== "join") return;
    const j = f.body.value;
    if (j.alias) this.aliases.set(j.alias, sub.room);
    if (this.subs.get(sub.room) === sub) sub.onJoin(j, sentSince);
  }

  private scheduleRefresh(): void {
    clearTimeout(this.refreshTimer);
    const exp = Number(this.info?.expiresUnixMs ?? 0n);
    if (!exp || !this.opts.token) return;
    const inMs = Math.max(1000, (exp - Date.now()) * 0.8);
    this.refreshTimer = setTimeout(async () => {
      try {
        const token = await this.opts.token!();
        const f = await this.request({ case: "refresh", value: { token } }, false);
        if (f.body.case === "refresh" && this.info) {
          const info = clone(ConnectReplySchema, this.info); // the reply handed out stays as it was
          info.expiresUnixMs = f.body.value.expiresUnixMs;
          this.info = info;
        }
        this.scheduleRefresh();
      } catch {
        /* the server closes with 4001 when the token expires; the reconnect gets a new one */
      }
    }, inMs);
  }

  private onFrame(f: ServerFrame): void {
    if (f.id === 0n && f.body.case === "join") {
      const sub = this.subs.get(f.body.value.room); // a room the server joined for this client
      if (sub?.server) this.onJoinReply(sub, f, sub.position !== undefined);
      return;
    }
    if (f.id !== 0n) {
      const call = this.calls.get(f.id);
      if (!call) return;
      this.calls.delete(f.id);
      call.resolve(f);
      return;
    }
    switch (f.body.case) {
      case "message": {
        this.subs.get(f.body.value.room)?.deliver(f.body.value);
        return;
      }
      case "compactMessage": {
        const m = this.expand(f.body.value);
        if (m) this.subs.get(m.room)?.deliver(m);
        return;
      }
      case "presenceDiff":
        this.subs.get(f.body.value.room)?.push(f);
        return;
      case "typingEvent":
      case "readReceipts":
        this.subs.get(f.body.value.room)?.push(f);
        return;
      case "disconnect": {
        const d = f.body.value;
        this.advice = { reconnect: d.reconnect, retryAfterMs: d.retryAfterMs, code: d.code, reason: d.reason };
        return;
      }
    }
  }

  /** A compact push as the Message it stands for (its room from the alias, its epoch from the stream). */
  private expand(c: CompactMessage): Message | undefined {
    const room = this.aliases.get(c.alias);
    if (room === undefined) return undefined;
    const sub = this.subs.get(room);
    let body: Body;
    switch (c.body.case) {
      case "text":
        body = create(BodySchema, { kind: { case: "text", value: c.body.value } });
        break;
      case "data":
        body = create(BodySchema, { kind: { case: "data", value: c.body.value } });
        break;
      case "binary":
        body = create(BodySchema, { kind: { case: "binary", value: c.body.value } });
        break;
      default:
        body = create(BodySchema, {});
    }
    let sender: ClientInfo | undefined;
    if (c.user || c.server) sender = create(ClientInfoSchema, { user: c.user, server: c.server });
    return create(MessageSchema, {
      room,
      offset: c.offset,
      epoch: sub?.position?.epoch ?? "",
      sender,
      body,
      timeUnixMs: c.timeUnixMs,
      messageId: c.messageId,
      key: c.key,
    });
  }

  private onSocketClosed(code: number, reason: string, upgradeError?: UpgradeError): void {
    this.ws = undefined;
    this.ready = false;
    clearTimeout(this.refreshTimer);
    // Calls sent on this socket: retried ones wait for the next, the others fail.
    for (const [id, c] of this.calls) {
      if (!c.sent) continue;
      if (c.retry) {
        c.sent = false;
        continue;
      }
      this.calls.delete(id);
      c.reject(new DisconnectedError());
    }
    if (this.state === "closed") return;
    const advice = this.advice;
    const reconnect = advice ? advice.reconnect : upgradeError ? upgradeError.status === 0 || upgradeError.status >= 500 || upgradeError.status === 429 : shouldReconnect(code);
    if (!reconnect) {
      this.stop(this.connectError ?? upgradeError ?? new ClosedError(advice?.code ?? code, advice?.reason ?? reason));
      return;
    }
    this.attempt++;
    const ceiling = Math.min(this.opts.maxReconnectDelayMs, this.opts.minReconnectDelayMs * 2 ** (this.attempt - 1));
    const delay = Math.max(Math.random() * ceiling, advice?.retryAfterMs ?? 0, this.holdUntil - Date.now());
    this.setState("reconnecting");
    this.timer = setTimeout(() => this.dial(), delay);
  }

  private stop(err: Error): void {
    if (this.state === "closed") return;
    this.setState("closed");
    clearTimeout(this.timer);
    clearTimeout(this.refreshTimer);
    this.ready = false;
    const ws = this.ws;
    this.ws = undefined;
    if (ws && ws.readyState <= 1) ws.close(1000, "");
    for (const c of this.calls.values()) c.reject(err);
    this.calls.clear();
    this.subs.clear();
    const first = this.firstConnect;
    this.firstConnect = undefined;
    first?.reject(err);
    this.opts.onClose?.(err);
  }
}

const fnvOffset = 0xcbf29ce484222325n;
const fnvPrime = 0x100000001b3n;
const mask64 = (1n << 64n) - 1n;
const utf8 = new TextEncoder();

/** The XOR of the users' 64-bit FNV-1a hashes: the rooms' presence digest. */
function digestOf(users: Set<string>): bigint {
  let x = 0n;
  for (const u of users) {
    let h = fnvOffset;
    for (const b of utf8.encode(u)) h = ((h ^ BigInt(b)) * fnvPrime) & mask64;
    x ^= h;
  }
  return x;
}

function applyDiff(users: Set<string>, d: PresenceDiff): void {
  for (const u of d.joined) users.add(u);
  for (const u of d.left) users.delete(u);
}

function toBody(b: BodyInput): Body {
  if (typeof b === "string") return create(BodySchema, { kind: { case: "text", value: b } });
  if (b instanceof Uint8Array) return create(BodySchema, { kind: { case: "binary", value: b } });
  return create(BodySchema, { kind: { case: "data", value: fromJson(ValueSchema, b) } });
}
