// End-to-end test of the chat page: a real `hubbub serve` process, two pages
// in headless Chromium, and the Go client (through `hubbub chat`).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const repo = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
let tmp, bin, server, baseURL, browser;

function startServer() {
  return new Promise((resolve, reject) => {
    const proc = spawn(bin, ["serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--data-dir", join(tmp, "data")], { stdio: ["ignore", "ignore", "pipe"] });
    const timer = setTimeout(() => reject(new Error("server did not start")), 15000);
    createInterface({ input: proc.stderr }).on("line", (line) => {
      try {
        const rec = JSON.parse(line);
        if (rec.msg === "hubbub listening") {
          clearTimeout(timer);
          resolve({ proc, url: rec.url.replace(/^ws/, "http").replace(/\/ws$/, "") });
        }
      } catch { /* not a log record */ }
    });
    proc.on("exit", (code) => reject(new Error(`server exited ${code}`)));
  });
}

before(async () => {
  tmp = mkdtempSync(join(tmpdir(), "hubbub-web-"));
  bin = process.env.HUBBUB_BIN;
  if (!bin) {
    bin = join(tmp, "hubbub");
    execFileSync("go", ["build", "-o", bin, "./cmd/hubbub"], { cwd: repo, stdio: "inherit" });
  }
  const s = await startServer();
  server = s.proc;
  baseURL = s.url;
  browser = await chromium.launch({
    executablePath: chromiumPath,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  if (browser) await browser.close();
  if (server) server.kill("SIGTERM");
  rmSync(tmp, { recursive: true, force: true });
});

async function openChat(name, room, query = "") {
  const page = await browser.newPage();
  await page.goto(baseURL + "/" + query);
  await page.fill("#name", name);
  await page.fill("#room", room);
  await page.click("#join-button");
  await page.waitForSelector("#status[data-state=connected]");
  return page;
}

const lastTexts = (page) => page.$$eval("#messages li", (lis) => lis.map((li) => li.textContent));

test("two pages chat, see presence and typing, and receive the Go client's message", async () => {
  const ann = await openChat("ann", "web");
  const ben = await openChat("ben", "web");

  // Presence: each page lists both members.
  await ann.waitForFunction(() => [...document.querySelectorAll("#members li")].map((li) => li.textContent).join(",") === "ann,ben");
  await ben.waitForFunction(() => document.querySelectorAll("#members li").length === 2);

  // Typing: ben sees ann typing.
  await ann.type("#text", "hello from ann", { delay: 5 });
  await ben.waitForFunction(() => document.querySelector("#typing").textContent.includes("ann is typing"));
  await ann.press("#text", "Enter");
  await ben.waitForFunction(() => [...document.querySelectorAll("#messages li .text")].some((el) => el.textContent === "hello from ann"));

  await ben.fill("#text", "hi ann");
  await ben.press("#text", "Enter");
  await ann.waitForFunction(() => [...document.querySelectorAll("#messages li .text")].some((el) => el.textContent === "hi ann"));

  // The Go client, through `hubbub chat`, publishes into the same room.
  const wsURL = baseURL.replace(/^http/, "ws") + "/ws";
  execFileSync(bin, ["chat", "--url", wsURL, "--room", "web", "--name", "gopher"], { input: "hi from go\n", timeout: 20000 });
  for (const page of [ann, ben]) {
    await page.waitForFunction(() => [...document.querySelectorAll("#messages li")].some((li) => li.textContent.includes("gopher") && li.textContent.includes("hi from go")));
  }

  // Offsets are consecutive and identical on both pages.
  const offsets = (page) => page.$$eval("#messages li[data-offset]", (lis) => lis.map((li) => li.dataset.offset));
  assert.deepEqual(await offsets(ann), ["1", "2", "3"]);
  assert.deepEqual(await offsets(ben), ["1", "2", "3"]);
  if (process.env.SCREENSHOT) await ben.screenshot({ path: process.env.SCREENSHOT });
  const annTexts = await lastTexts(ann);
  assert.ok(annTexts.some((t) => t.includes("ben joined")), annTexts.join("|"));
});

test("a page that loses its connection reconnects and recovers exactly what it missed", async () => {
  // cat asks for compact pushes: live messages come as CompactMessage,
  // recovered ones as Message, and the page shows both the same way.
  const cat = await openChat("cat", "recover", "?compact=1");
  const dog = await openChat("dog", "recover");
  await dog.fill("#text", "before");
  await dog.press("#text", "Enter");
  await cat.waitForFunction(() => document.querySelectorAll("#messages li[data-offset]").length === 1);
  await cat.evaluate(() => window.hubbubDebug.drop(1500));
  await cat.waitForSelector("#status[data-state=reconnecting]");
  for (const text of ["gap 1", "gap 2", "gap 3"]) {
    await dog.fill("#text", text);
    await dog.press("#text", "Enter");
  }
  await dog.waitForFunction(() => document.querySelectorAll("#messages li[data-offset]").length === 4);
  await cat.waitForSelector("#status[data-state=connected]");
  await cat.waitForFunction(() => document.querySelectorAll("#messages li[data-offset]").length === 4);
  const texts = await cat.$$eval("#messages li[data-offset] .text", (els) => els.map((el) => el.textContent));
  assert.deepEqual(texts, ["before", "gap 1", "gap 2", "gap 3"]);
  const notices = await cat.$$eval("#messages li.notice", (els) => els.map((el) => el.textContent));
  assert.ok(!notices.some((n) => n.includes("missed")), notices.join("|"));
  const whos = await cat.$$eval("#messages li[data-offset] .who", (els) => els.map((el) => el.textContent));
  assert.deepEqual(whos, ["dog", "dog", "dog", "dog"]);
  // "before" arrived live, compact; the gap was recovered in the join reply.
  assert.ok(await cat.evaluate(() => window.hubbubDebug.compactPushes()) >= 1);
  await dog.fill("#text", "after");
  await dog.press("#text", "Enter");
  await cat.waitForFunction(() => document.querySelectorAll("#messages li[data-offset]").length === 5);
  assert.ok(await cat.evaluate(() => window.hubbubDebug.compactPushes()) >= 2);
  assert.deepEqual(await cat.evaluate(() => window.hubbubDebug.position().offset), "5");
});
