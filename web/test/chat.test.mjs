// End-to-end tests of the chat page and the admin console: a real
// `hubbub serve` process (with the server API and tracing on), pages in
// headless Chromium (CHROMIUM, default /usr/bin/chromium), and the Go client
// through `hubbub chat`. Screenshots go to ARTIFACTS (default
// web/test-artifacts). Run after scripts/build-web.sh; HUBBUB_BIN is a server
// built with the pages, else one is built here.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { hubbubBinary, startServer, stopServer } from "../../sdk/ts/support/server.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const artifacts = process.env.ARTIFACTS || join(here, "..", "test-artifacts");
const ADMIN_KEY = "console-admin-key-0123", READ_KEY = "console-read-key-0123";
let tmp, bin, server, baseURL, browser;

before(async () => {
  tmp = mkdtempSync(join(tmpdir(), "hubbub-web-"));
  mkdirSync(artifacts, { recursive: true });
  bin = hubbubBinary(tmp);
  const keys = join(tmp, "keys");
  writeFileSync(keys, `ops ${ADMIN_KEY} admin\nreports ${READ_KEY} read\n`);
  // Rooms keep 20 messages, so a page away for more sees a gap marker.
  server = await startServer(bin, ["--listen", "127.0.0.1:0", "--data-dir", join(tmp, "data"), "--history-size", "20",
    "--api-listen", "127.0.0.1:0", "--api-key-file", keys, "--otel-traces-exporter", "console"]);
  baseURL = server.url.replace(/^ws/, "http").replace(/\/ws$/, "");
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  if (browser) await browser.close();
  if (server) await stopServer(server, "SIGTERM");
  rmSync(tmp, { recursive: true, force: true });
});

async function openChat(name, room, { query = "", viewport } = {}) {
  const page = await browser.newPage(viewport ? { viewport } : {});
  await page.goto(baseURL + "/" + query);
  await page.fill("#name", name);
  await page.fill("#room", room);
  await page.click("#join-button");
  await page.waitForSelector("#status[data-state=connected]");
  return page;
}

async function say(page, text) {
  await page.fill("#text", text);
  await page.press("#text", "Enter");
}

const messageTexts = (page) => page.$$eval("#messages li.message .text", (els) => els.map((el) => el.textContent));
const offsets = (page) => page.$$eval("#messages li.message", (lis) => lis.map((li) => li.dataset.offset));
const count = (page, n) => page.waitForFunction((n) => document.querySelectorAll("#messages li.message").length === n, n);

test("two pages chat, see presence, typing and times, and receive the Go client's message", async () => {
  const ann = await openChat("ann", "web");
  const ben = await openChat("ben", "web", { query: "?encoding=json" });

  // Presence: each page lists both members.
  await ann.waitForFunction(() => [...document.querySelectorAll("#members li")].map((li) => li.textContent).join(",") === "ann,ben");
  await ben.waitForFunction(() => document.querySelectorAll("#members li").length === 2);
  await ann.waitForFunction(() => [...document.querySelectorAll("#messages li.notice")].some((li) => li.textContent === "ben joined"));

  // Typing: ben sees ann typing, and it clears when her message arrives.
  await ann.type("#text", "hello from ann", { delay: 5 });
  await ben.waitForFunction(() => document.querySelector("#typing").textContent.includes("ann is typing"));
  await ann.press("#text", "Enter");
  await ben.waitForFunction(() => [...document.querySelectorAll("#messages li .text")].some((el) => el.textContent === "hello from ann"));
  await ben.waitForFunction(() => document.querySelector("#typing").textContent === "");
  await say(ben, "hi ann");
  await ann.waitForFunction(() => [...document.querySelectorAll("#messages li .text")].some((el) => el.textContent === "hi ann"));

  // The Go client, through `hubbub chat`, publishes into the same room.
  execFileSync(bin, ["chat", "--url", server.url, "--room", "web", "--name", "gopher"], { input: "hi from go\n", timeout: 20000 });
  for (const page of [ann, ben]) await count(page, 3);

  // The same messages in the same order on both pages; each with its time,
  // and no raw offset anywhere in the text.
  assert.deepEqual(await offsets(ann), ["1", "2", "3"]);
  assert.deepEqual(await offsets(ben), ["1", "2", "3"]);
  assert.deepEqual(await messageTexts(ben), ["hello from ann", "hi ann", "hi from go"]);
  const whos = await ben.$$eval("#messages li.message .who", (els) => els.map((el) => el.textContent));
  assert.deepEqual(whos, ["ann", "ben", "gopher"]);
  const times = await ben.$$eval("#messages li.message time", (els) => els.map((el) => [el.textContent, el.dateTime]));
  assert.equal(times.length, 3);
  for (const [shown, iso] of times) {
    assert.match(shown, /\d{1,2}[:.]\d{2}/);
    assert.ok(Math.abs(Date.parse(iso) - Date.now()) < 120000, iso);
  }
  const text = await ben.$eval("#messages", (el) => el.innerText);
  assert.ok(!/#\d/.test(text), text);
  await ben.screenshot({ path: join(artifacts, "chat-desktop.png") });

  // A third page joining later sees the earlier messages from history.
  const cy = await openChat("cy", "web");
  await count(cy, 3);
  assert.deepEqual(await messageTexts(cy), ["hello from ann", "hi ann", "hi from go"]);
  for (const p of [ann, ben, cy]) await p.close();
});

test("on a phone-width screen the page fits and stays usable", async () => {
  const phone = await openChat("pat", "phone", { viewport: { width: 375, height: 740 } });
  const other = await openChat("quinn", "phone");
  await say(other, "a fairly long message that has to wrap on a narrow screen instead of pushing the page sideways");
  await say(phone, "ok");
  await count(phone, 2);
  const fit = await phone.evaluate(() => ({ page: document.documentElement.scrollWidth, view: window.innerWidth,
    input: document.querySelector("#text").getBoundingClientRect().right, members: document.querySelectorAll("#members li").length }));
  assert.ok(fit.page <= fit.view, `page ${fit.page}px wide in a ${fit.view}px screen`);
  assert.ok(fit.input <= fit.view, `input ends at ${fit.input}px`);
  await phone.waitForFunction(() => document.querySelectorAll("#members li").length === 2);
  await phone.screenshot({ path: join(artifacts, "chat-phone.png") });
  await phone.close();
  await other.close();
});

test("a page that loses its connection reconnects and recovers exactly what it missed", async () => {
  // cat asks for compact pushes: live messages come as CompactMessage,
  // recovered ones as Message, and the page shows both the same way.
  const cat = await openChat("cat", "recover", { query: "?compact=1" });
  const dog = await openChat("dog", "recover");
  assert.ok((await cat.evaluate(() => window.hubbubDebug.alias())) > 0, "no room alias: compact pushes were not negotiated");
  await say(dog, "before");
  await count(cat, 1);
  await cat.evaluate(() => window.hubbubDebug.drop(2000));
  await cat.waitForSelector("#status[data-state=reconnecting]");
  for (const text of ["gap 1", "gap 2", "gap 3"]) await say(dog, text);
  await count(dog, 4);
  await cat.waitForSelector("#status[data-state=connected]");
  await count(cat, 4);
  assert.deepEqual(await messageTexts(cat), ["before", "gap 1", "gap 2", "gap 3"]);
  assert.equal(await cat.$$eval("#messages li.gap", (els) => els.length), 0);
  await say(dog, "after");
  await count(cat, 5);
  assert.deepEqual(await cat.evaluate(() => window.hubbubDebug.position().offset), "5");
  await cat.close();
  await dog.close();
});

test("what could not be recovered shows as a gap marker, and the page goes on", async () => {
  const eve = await openChat("eve", "gap");
  const fay = await openChat("fay", "gap");
  await say(fay, "seen");
  await count(eve, 1);
  await eve.evaluate(() => window.hubbubDebug.drop(4000));
  await eve.waitForSelector("#status[data-state=reconnecting]");
  for (let i = 1; i <= 30; i++) await say(fay, `missed ${i}`); // the room keeps 20
  await count(fay, 31);
  await eve.waitForSelector("#status[data-state=connected]", { timeout: 20000 });
  await eve.waitForSelector("#messages li.gap");
  await say(fay, "after the gap");
  await eve.waitForFunction(() => [...document.querySelectorAll("#messages li .text")].some((el) => el.textContent === "after the gap"));
  const items = await eve.$$eval("#messages li", (lis) => lis.map((li) => li.className + ":" + (li.querySelector(".text")?.textContent ?? li.textContent)));
  const gapAt = items.findIndex((s) => s.startsWith("gap:"));
  assert.ok(gapAt > items.indexOf("message:seen"), items.join("|"));
  assert.equal(items[items.length - 1], "message:after the gap");
  assert.ok(!items.slice(gapAt).some((s) => s === "message:missed 1"), "a message the room no longer held was shown");
  assert.match(items[gapAt], /could not be recovered/);
  await eve.screenshot({ path: join(artifacts, "chat-gap.png") });
  await eve.close();
  await fay.close();
});

test("direct messages: /msg reaches every page of the user, once, and one sent while a page was away is recovered", async () => {
  const ann = await openChat("ann2", "dms");
  const ben = await openChat("ben2", "dms");
  const ben2 = await openChat("ben2", "elsewhere"); // ben's second device, in another room
  await say(ann, "/msg ben2 psst");
  await ann.waitForFunction(() => [...document.querySelectorAll("#messages li.direct")].some((li) => li.textContent.includes("you → ben2") && li.textContent.includes("psst")));
  for (const page of [ben, ben2]) {
    await page.waitForFunction(() => [...document.querySelectorAll("#messages li.direct")].some((li) => li.textContent.includes("ann2 → you") && li.textContent.includes("psst")));
  }
  await ben.evaluate(() => window.hubbubDebug.drop(2000));
  await ben.waitForSelector("#status[data-state=reconnecting]");
  await say(ann, "/msg ben2 while you were away");
  await ben2.waitForFunction(() => document.querySelectorAll("#messages li.direct").length === 2);
  await ben.waitForSelector("#status[data-state=connected]");
  await ben.waitForFunction(() => document.querySelectorAll("#messages li.direct").length === 2);
  const got = await ben.$$eval("#messages li.direct", (lis) => lis.map((li) => [li.dataset.directOffset, li.querySelector(".text").textContent]));
  assert.deepEqual(got, [["1", "psst"], ["2", "while you were away"]]);
  assert.equal(await ben.$$eval("#messages li.gap", (els) => els.length), 0);
  // A message the room does not carry: the typed command is not published.
  assert.equal(await ann.$$eval("#messages li.message", (els) => els.length), 0);
  // A bad recipient (over 64 bytes) is refused, said so, and the text kept in the input.
  const long = "x".repeat(70);
  await say(ann, `/msg ${long} hi`);
  await ann.waitForFunction(() => [...document.querySelectorAll("#messages li.notice")].some((li) => li.textContent.startsWith("not sent to")));
  assert.equal(await ann.inputValue("#text"), `/msg ${long} hi`);
  await ann.screenshot({ path: join(artifacts, "chat-direct.png") });
  for (const p of [ann, ben, ben2]) await p.close();
});

test("the admin console: a read key is refused; an admin key sees nodes and rooms, tails a room with trace ids, disconnects a user", async () => {
  const gil = await openChat("gil", "ops-room");
  const console_ = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  await console_.goto(server.api + "/admin/");
  await console_.fill("#key", READ_KEY);
  await console_.click("#signin button");
  await console_.waitForFunction(() => document.querySelector("#status").textContent.includes("lacks the admin scope"));
  assert.equal(await console_.isHidden("#console"), true);

  await console_.fill("#key", ADMIN_KEY);
  await console_.click("#signin button");
  await console_.waitForSelector("#console:not([hidden])");
  await console_.waitForFunction(() => document.querySelector("#status").textContent.includes("signed in as ops"));
  assert.equal(await console_.$$eval("#nodes tr", (rows) => rows.length), 1);
  await console_.waitForSelector('#rooms button[data-room="ops-room"]');
  const roomRow = await console_.$eval('#rooms button[data-room="ops-room"]', (b) => [...b.closest("tr").cells].map((c) => c.textContent));
  assert.equal(roomRow[2], "1", `members: ${roomRow}`);

  // Open the room: its facts, then a live tail that shows gil's message with its trace id.
  await console_.click('#rooms button[data-room="ops-room"]');
  await console_.waitForFunction(() => document.querySelector("#tail-state").textContent === "live");
  const facts = await console_.$eval("#room-facts", (el) => el.textContent);
  assert.match(facts, /presence\s*full/);
  await say(gil, "watched by ops");
  await console_.waitForSelector("#tail li[data-offset]");
  const tailed = await console_.$eval("#tail li[data-offset]", (li) => ({ text: li.querySelector(".text").textContent, who: li.querySelector(".who").textContent, trace: li.querySelector(".trace").textContent }));
  assert.equal(tailed.text, "watched by ops");
  assert.equal(tailed.who, "gil");
  assert.match(tailed.trace, /^[0-9a-f]{32}$/);
  // The delivery ledger of gil's message: one member, written (or acked).
  await console_.waitForFunction(() => {
    const row = document.querySelector("#ledger tr");
    return row && row.cells[0].textContent === "#1" && row.cells[1].textContent === "1" &&
      Number(row.cells[2].textContent) + Number(row.cells[3].textContent) === 1;
  });
  // The rate shows once the refresh picks it up.
  await console_.waitForFunction(() => {
    const row = document.querySelector('#rooms button[data-room="ops-room"]')?.closest("tr");
    return row && Number(row.cells[4].textContent) > 0 && row.cells[3].textContent === "1";
  });
  await console_.screenshot({ path: join(artifacts, "console-room.png"), fullPage: true });

  // Connections by user, then disconnect gil everywhere, without reconnect.
  await console_.fill("#user", "gil");
  await console_.click("#user-form button");
  await console_.waitForFunction(() => document.querySelectorAll("#connections tr").length === 1);
  await console_.check("#confirm-off");
  await console_.fill("#reason", "maintenance");
  await console_.click("#disconnect-user button");
  await console_.waitForFunction(() => document.querySelector("#flash").textContent.startsWith("disconnected 1 connection"));
  await gil.waitForSelector("#status[data-state=closed]");
  assert.match(await gil.textContent("#status"), /maintenance/);
  await console_.waitForFunction(() => document.querySelectorAll("#connections tr").length === 0);
  await console_.screenshot({ path: join(artifacts, "console-disconnect.png"), fullPage: true });
  await console_.close();
  await gil.close();
});
