// The SDK against a real `hubbub serve` process on 127.0.0.1, in Node, with
// the ws package's WebSocket. Run after `npm run build`; HUBBUB_BIN names the
// server binary (built here when unset).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { createHmac } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import WebSocket from "ws";
import { Client, ClosedError, ServerError, UpgradeError, closeCodes } from "../dist/index.js";
import { hubbubBinary, repo, startServer as startServerOf, stopServer } from "../support/server.mjs";

let tmp, bin;

before(() => {
  tmp = mkdtempSync(join(tmpdir(), "hubbub-sdk-"));
  bin = hubbubBinary(tmp);
});

after(() => rmSync(tmp, { recursive: true, force: true }));

function freePort() {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const startServer = (args) => startServerOf(bin, args);

function client(url, opts = {}) {
  return new Client({ url, WebSocket, minReconnectDelayMs: 50, maxReconnectDelayMs: 300, ...opts });
}

// collector returns subscription handlers and a way to wait for n messages.
function collector() {
  const messages = [];
  const notRecovered = [];
  let waiters = [];
  const check = () => {
    waiters = waiters.filter((w) => (messages.length >= w.n ? (w.resolve(), false) : true));
  };
  return {
    messages,
    notRecovered,
    handlers: {
      message: (m) => { messages.push(m); check(); },
      notRecovered: (p) => notRecovered.push(p),
    },
    waitFor(n, ms = 10000) {
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`${messages.length} messages, want ${n}`)), ms);
        waiters.push({ n, resolve: () => { clearTimeout(t); resolve(); } });
        check();
      });
    },
  };
}

const text = (m) => (m.body?.kind.case === "text" ? m.body.kind.value : undefined);

for (const encoding of ["proto", "json"]) {
  for (const compact of [false, true]) {
    test(`${encoding}${compact ? " compact" : ""}: pipelined publishes take effect in order and reach a member once each`, async () => {
      const s = await startServer(["--listen", "127.0.0.1:0", "--history-store", "memory"]);
      const sub = client(s.url, { encoding, compact, name: "sub" });
      const pub = client(s.url, { encoding, name: "pub" });
      try {
        await sub.connect();
        await pub.connect();
        const c = collector();
        const room = `order-${encoding}-${compact}`;
        const subscription = await sub.join(room, c.handlers);
        // 50 publishes without waiting, then one data and one binary body.
        const acks = await Promise.all([
          ...Array.from({ length: 50 }, (_, i) => pub.publish(room, `m${i}`)),
          pub.publish(room, { price: 101.5, sym: "HBB" }),
          pub.publish(room, new Uint8Array([0, 1, 255])),
        ]);
        assert.deepEqual(acks.map((a) => a.offset), Array.from({ length: 52 }, (_, i) => BigInt(i + 1)));
        await c.waitFor(52);
        assert.deepEqual(c.messages.slice(0, 50).map(text), Array.from({ length: 50 }, (_, i) => `m${i}`));
        for (const m of c.messages) {
          assert.equal(m.room, room);
          assert.equal(m.epoch, acks[0].epoch);
          assert.equal(m.sender.user, "pub");
        }
        assert.equal(c.messages[50].body.kind.case, "data");
        assert.deepEqual([...c.messages[51].body.kind.value], [0, 1, 255]);
        assert.equal(subscription.position.offset, 52n);
        const h = await pub.history(room, { sinceOffset: 50n });
        assert.deepEqual(h.messages.map((m) => m.offset), [51n, 52n]);
      } finally {
        sub.close();
        pub.close();
        await stopServer(s);
      }
    });
  }
}

test("a retried publish is stored once: same message id, and a publish made while the server is down", async () => {
  const port = await freePort();
  const dataDir = join(tmp, "dedupe");
  const args = ["--listen", `127.0.0.1:${port}`, "--data-dir", dataDir];
  let s = await startServer(args);
  const sub = client(s.url, { name: "sub" });
  const pub = client(s.url, { name: "pub" });
  try {
    await sub.connect();
    await pub.connect();
    const c = collector();
    await sub.join("dedupe", c.handlers);
    const a = await pub.publish("dedupe", "once", { messageId: "dup-1" });
    const b = await pub.publish("dedupe", "once", { messageId: "dup-1" });
    assert.equal(a.offset, 1n);
    assert.equal(b.offset, 1n);
    assert.equal(b.duplicate, true);
    await stopServer(s);
    const pending = pub.publish("dedupe", "while down");
    s = await startServer(args);
    const r = await pending;
    assert.equal(r.offset, 2n);
    await c.waitFor(2);
    assert.deepEqual(c.messages.map(text), ["once", "while down"]);
    assert.equal(c.notRecovered.length, 0);
  } finally {
    sub.close();
    pub.close();
    await stopServer(s);
  }
});

test("recovery: a dropped connection and a kill -9 and restart (embedded store) lose and repeat nothing", async () => {
  const port = await freePort();
  const args = ["--listen", `127.0.0.1:${port}`, "--data-dir", join(tmp, "recover")];
  let s = await startServer(args);
  const sub = client(s.url, { name: "sub", encoding: "json", compact: true });
  const pub = client(s.url, { name: "pub" });
  try {
    await sub.connect();
    await pub.connect();
    const c = collector();
    await sub.join("recover", c.handlers);
    for (let i = 0; i < 3; i++) await pub.publish("recover", `a${i}`);
    await c.waitFor(3);
    // The subscriber's socket drops; three messages go by meanwhile.
    sub.dropConnection();
    for (let i = 0; i < 3; i++) await pub.publish("recover", `b${i}`);
    await c.waitFor(6);
    // The server dies and comes back with its store.
    await stopServer(s);
    s = await startServer(args);
    for (let i = 0; i < 3; i++) await pub.publish("recover", `c${i}`);
    await c.waitFor(9);
    assert.deepEqual(c.messages.map(text), ["a0", "a1", "a2", "b0", "b1", "b2", "c0", "c1", "c2"]);
    assert.deepEqual(c.messages.map((m) => m.offset), [1n, 2n, 3n, 4n, 5n, 6n, 7n, 8n, 9n]);
    assert.equal(new Set(c.messages.map((m) => m.epoch)).size, 1);
    assert.equal(c.notRecovered.length, 0);
  } finally {
    sub.close();
    pub.close();
    await stopServer(s);
  }
});

test("history in memory lost with a restart: the member hears notRecovered, then the new stream", async () => {
  const port = await freePort();
  const args = ["--listen", `127.0.0.1:${port}`, "--history-store", "memory"];
  let s = await startServer(args);
  const sub = client(s.url, { name: "sub" });
  const pub = client(s.url, { name: "pub" });
  try {
    await sub.connect();
    await pub.connect();
    const c = collector();
    await sub.join("lost", c.handlers);
    await pub.publish("lost", "before");
    await c.waitFor(1);
    await stopServer(s);
    s = await startServer(args);
    // The rejoin finds a new epoch: the gap is reported, not hidden.
    const deadline = Date.now() + 10000;
    while (c.notRecovered.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.equal(c.notRecovered.length, 1);
    assert.notEqual(c.notRecovered[0].epoch, c.messages[0].epoch);
    await pub.publish("lost", "after");
    await c.waitFor(2);
    assert.equal(text(c.messages[1]), "after");
    assert.equal(c.messages[1].offset, 1n);
    assert.notEqual(c.messages[1].epoch, c.messages[0].epoch);
  } finally {
    sub.close();
    pub.close();
    await stopServer(s);
  }
});

function hs256(claims, secret) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const head = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  return `${head}.${createHmac("sha256", secret).update(head).digest("base64url")}`;
}

test("a bad token and a refused origin are typed errors; a good token connects", async () => {
  const secretFile = join(tmp, "secret");
  writeFileSync(secretFile, "sdk-test-secret\n");
  const s = await startServer(["--listen", "127.0.0.1:0", "--history-store", "memory", "--jwt-alg", "HS256", "--jwt-hmac-secret-file", secretFile]);
  try {
    const bad = client(s.url, { token: () => "not-a-token" });
    await assert.rejects(bad.connect(), (e) => e instanceof ServerError && e.codeName === "UNAUTHORIZED" && !e.temporary);
    assert.equal(bad.currentState, "closed");

    const good = client(s.url, {
      token: () => hs256({ sub: "ann", exp: Math.floor(Date.now() / 1000) + 3600, rooms: { join: ["*"], publish: ["*"], read: ["*"] } }, "sdk-test-secret"),
    });
    const reply = await good.connect();
    assert.equal(reply.client.user, "ann");
    await good.join("authed");
    const ack = await good.publish("authed", "hi");
    assert.equal(ack.offset, 1n);
    good.close();
    await assert.rejects(good.publish("authed", "after close"), ClosedError);

    // A token that expires in 3 s is refreshed before it does: the
    // connection stays up (no 4001, no reconnect) past the first expiry.
    let issued = 0;
    const states = [];
    const short = client(s.url, {
      onState: (st) => states.push(st),
      token: () => hs256({ sub: "bob", exp: Math.floor(Date.now() / 1000) + (issued++ === 0 ? 3 : 3600), rooms: { join: ["*"] } }, "sdk-test-secret"),
    });
    const first = await short.connect();
    await new Promise((r) => setTimeout(r, 4500));
    assert.equal(issued, 2, "the token was refreshed once");
    assert.deepEqual(states, ["connecting", "connected"]);
    assert.ok(short.info.expiresUnixMs > first.expiresUnixMs);
    await short.join("still-here");
    short.close();

    const foreign = client(s.url, { webSocketOptions: { headers: { Origin: "http://evil.example" } } });
    await assert.rejects(foreign.connect(), (e) => e instanceof UpgradeError && e.status === 403);
  } finally {
    await stopServer(s);
  }
});

test("the SDK's close-code table is the server's", async () => {
  const s = await startServer(["--listen", "127.0.0.1:0", "--history-store", "memory"]);
  try {
    const js = await (await fetch(s.url.replace(/^ws/, "http").replace(/\/ws$/, "/close-codes.js"))).text();
    const served = JSON.parse(js.slice(js.indexOf("["), js.lastIndexOf("]") + 1));
    assert.deepEqual(closeCodes.map((c) => [c.code, c.reconnect]), served.map((c) => [c.code, c.reconnect]));
  } finally {
    await stopServer(s);
  }
});

test("presence and typing helpers: a tracked member list follows joins and leaves; typists come and go", async () => {
  const s = await startServer(["--listen", "127.0.0.1:0", "--history-store", "memory", "--presence-interval", "100ms"]);
  let connects = 0;
  const ann = client(s.url, { name: "ann", onState: (st) => { if (st === "connected") connects++; } });
  const others = ["ben", "cat", "dan"].map((name) => client(s.url, { name }));
  const until = async (what, cond) => {
    const deadline = Date.now() + 10000;
    while (!cond()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  try {
    await ann.connect();
    await others[0].connect();
    await others[0].join("lobby");
    const sub = await ann.join("lobby", {}, { trackMembers: true });
    await until("the first page", () => sub.members() !== undefined);
    assert.deepEqual(sub.members(), ["ann", "ben"]);
    for (const c of others.slice(1)) {
      await c.connect();
      await c.join("lobby");
    }
    await until("cat and dan", () => sub.members().length === 4);
    assert.deepEqual(sub.members(), ["ann", "ben", "cat", "dan"]);
    others[1].close(); // cat's connection ends
    await until("cat's leave", () => sub.members().length === 3);
    assert.deepEqual(sub.members(), ["ann", "ben", "dan"]);
    // The list was checked against the room's digest (FNV-1a of the users)
    // and matched every time.
    const st = sub.presenceStats();
    assert.ok(st.verified >= 1, JSON.stringify(st));
    assert.equal(st.mismatches, 0);

    await others[2].typing("lobby", true);
    await until("dan typing", () => sub.typing().includes("dan"));
    await others[2].publish("lobby", "done typing");
    await until("dan's message to clear the indicator", () => !sub.typing().includes("dan"));
    // dan goes while ann's socket is down: the rejoin loads the list again
    // (or the diff says so, if ann is back first).
    ann.dropConnection();
    others[2].close();
    await until("the reconnect and the list again", () => connects === 2 && sub.members()?.length === 2);
    assert.deepEqual(sub.members(), ["ann", "ben"]);
  } finally {
    ann.close();
    for (const c of others) c.close();
    await stopServer(s);
  }
});

test("rooms the backend's connect hook joins: onServerJoin before their messages, recovered across a dropped socket", async () => {
  let hookBin = process.env.HOOKBACKEND_BIN;
  if (!hookBin) {
    hookBin = join(tmp, "hookbackend");
    execFileSync("go", ["build", "-o", hookBin, "./internal/hookbackend"], { cwd: repo, stdio: "inherit" });
  }
  const backend = spawn(hookBin, ["--listen", "127.0.0.1:0", "--quiet"], { stdio: ["ignore", "pipe", "ignore"] });
  const addr = await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error("hook backend did not start")), 10000);
    createInterface({ input: backend.stdout }).on("line", (line) => {
      const m = /^listening (\S+)/.exec(line);
      if (m) { clearTimeout(t); resolve(m[1]); }
    });
  });
  const s = await startServer(["--listen", "127.0.0.1:0", "--history-store", "memory", "--hook-url", `http://${addr}`, "--hooks", "connect"]);
  const got = { news: collector(), alerts: collector() };
  const joined = [];
  let connects = 0;
  const ann = client(s.url, {
    token: () => "user:ann/news,alerts",
    onState: (st) => { if (st === "connected") connects++; },
    onServerJoin: (sub) => { joined.push(sub.room); sub.on(got[sub.room].handlers); },
  });
  const pub = client(s.url, { token: () => "user:pub" });
  try {
    const reply = await ann.connect();
    assert.deepEqual([...reply.rooms].sort(), ["alerts", "news"]);
    assert.deepEqual(joined.sort(), ["alerts", "news"]);
    await pub.connect();
    await pub.publish("news", "n1");
    await pub.publish("alerts", "a1");
    await got.news.waitFor(1);
    await got.alerts.waitFor(1);
    ann.dropConnection();
    await pub.publish("news", "n2");
    await pub.publish("news", "n3");
    const deadline = Date.now() + 10000;
    while (connects < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    await got.news.waitFor(3);
    assert.deepEqual(got.news.messages.map(text), ["n1", "n2", "n3"]);
    assert.deepEqual(got.news.messages.map((m) => m.offset), [1n, 2n, 3n]);
    assert.equal(got.news.notRecovered.length, 0);
    assert.deepEqual(joined.sort(), ["alerts", "news"], "onServerJoin only the first time");
  } finally {
    ann.close();
    pub.close();
    await stopServer(s);
    backend.kill("SIGKILL");
  }
});

test("direct messages: every device of the user with its personal stream gets them once, a dropped device recovers, a retry is stored once", async () => {
  const s = await startServer(["--listen", "127.0.0.1:0", "--history-store", "memory"]);
  const streams = [collector(), collector()];
  let connects = 0;
  const devices = streams.map((c, i) => client(s.url, {
    name: "zoe", userStream: true, encoding: i === 0 ? "proto" : "json",
    onState: (st) => { if (i === 0 && st === "connected") connects++; },
    onServerJoin: (sub) => sub.on(c.handlers),
  }));
  const yan = client(s.url, { name: "yan" });
  try {
    for (const d of devices) {
      const reply = await d.connect();
      assert.equal(reply.userStream, "@zoe");
      assert.ok(reply.rooms.includes("@zoe"));
    }
    await yan.connect();
    const first = await yan.direct("zoe", "hello zoe", { messageId: "dm-1" });
    assert.equal(first.room, "@zoe");
    const dup = await yan.direct("zoe", "hello zoe", { messageId: "dm-1" });
    assert.equal(dup.duplicate, true);
    assert.equal(dup.offset, first.offset);
    for (const c of streams) await c.waitFor(1);
    // Device 0 drops; two direct messages while it is away; it recovers them.
    devices[0].dropConnection(500);
    await yan.direct("zoe", { kind: "ping", n: 2 });
    await yan.direct("zoe", "third");
    const deadline = Date.now() + 10000;
    while (connects < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    for (const c of streams) await c.waitFor(3);
    for (const c of streams) {
      assert.deepEqual(c.messages.map((m) => m.offset), [1n, 2n, 3n]);
      assert.equal(text(c.messages[0]), "hello zoe");
      assert.equal(c.messages[0].sender.user, "yan");
      assert.equal(c.messages[1].body.kind.case, "data");
      assert.equal(c.notRecovered.length, 0);
    }
    // Nobody else reads or joins zoe's stream.
    await assert.rejects(yan.history("@zoe"), (e) => e instanceof ServerError && /personal stream/.test(e.message));
    const own = await devices[1].history("@zoe");
    assert.equal(own.messages.length, 3);
  } finally {
    for (const d of devices) d.close();
    yan.close();
    await stopServer(s);
  }
});

test("read marks: mark() moves the user's marks forward only, the join reply carries them, members with receipts hear of reads", async () => {
  const s = await startServer(["--listen", "127.0.0.1:0", "--history-store", "memory", "--presence-interval", "200ms"]);
  const got = [];
  const watcher = client(s.url, { name: "wes" });
  const reader = client(s.url, { name: "rae", encoding: "json" });
  const device2 = client(s.url, { name: "rae" });
  try {
    await watcher.connect();
    await reader.connect();
    await watcher.join("marks", { receipts: (r) => got.push(...r.receipts) }, { receipts: true });
    await reader.join("marks", {});
    for (const t of ["a", "b", "c"]) await watcher.publish("marks", t);
    const ack = await reader.mark("marks", 3n);
    assert.equal(ack.marks.ackOffset, 3n);
    assert.equal(ack.marks.readOffset, 0n);
    const read = await reader.mark("marks", 2n, true);
    assert.equal(read.marks.readOffset, 2n);
    assert.equal(read.unread, 1n);
    const lower = await reader.mark("marks", 1n, true);
    assert.equal(lower.marks.readOffset, 2n, "a lower read mark changes nothing");
    await assert.rejects(reader.mark("marks", 99n, true), (e) => e instanceof ServerError && /past the room's position/.test(e.message));
    const deadline = Date.now() + 5000;
    while (got.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(got.map((r) => [r.user, r.offset]), [["rae", 2n]]);
    await device2.connect();
    const sub = await device2.join("marks", {});
    assert.equal(sub.reply.marks.readOffset, 2n);
    assert.equal(sub.reply.unread, 1n);
  } finally {
    watcher.close();
    reader.close();
    device2.close();
    await stopServer(s);
  }
});

test("device commands: sent again at every join until acked; the sender's stream gets the outcome", async () => {
  const s = await startServer(["--listen", "127.0.0.1:0", "--history-store", "memory"]);
  const opStream = collector();
  const devStream = collector();
  const pendings = [];
  const op = client(s.url, { name: "op", userStream: true, onServerJoin: (sub) => sub.on(opStream.handlers) });
  const dev = client(s.url, {
    name: "valve", userStream: true,
    onServerJoin: (sub) => sub.on({ ...devStream.handlers, commands: (cmds) => pendings.push(cmds.map((m) => m.messageId)) }),
  });
  try {
    await op.connect();
    await dev.connect();
    const sent = await op.direct("valve", { open: 40 }, { requireAck: true, ttlMs: 20000, messageId: "open-40" });
    await devStream.waitFor(1);
    assert.equal(devStream.messages[0].requireAck, true);
    dev.dropConnection(200); // not acked: it comes again at the rejoin
    const deadline = Date.now() + 10000;
    while (pendings.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(pendings, [["open-40"]]);
    await dev.mark("@valve", sent.offset);
    await opStream.waitFor(1);
    const outcome = opStream.messages[0].outcome;
    assert.equal(outcome.user, "valve");
    assert.equal(outcome.offset, sent.offset);
    assert.equal(outcome.state, 2); // COMMAND_STATE_ACKED
    assert.equal(outcome.clientId, dev.info.client.clientId);
  } finally {
    op.close();
    dev.close();
    await stopServer(s);
  }
});
