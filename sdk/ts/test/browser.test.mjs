// The SDK in a browser: bundled with esbuild into a page served from another
// origin that the server allows, run in headless Chromium (CHROMIUM, default
// /usr/bin/chromium) with the browser's own WebSocket, against a real
// `hubbub serve`. Run after `npm run build`.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { chromium } from "playwright-core";
import { hubbubBinary, startServer } from "../support/server.mjs";

const here = dirname(fileURLToPath(import.meta.url));
let tmp, bin, server, pageServer, pageOrigin, browser, bundle;

before(async () => {
  tmp = mkdtempSync(join(tmpdir(), "hubbub-sdk-browser-"));
  bin = hubbubBinary(tmp);
  const out = await build({ entryPoints: [join(here, "..", "dist", "index.js")], bundle: true, format: "esm", write: false, platform: "browser" });
  bundle = out.outputFiles[0].text;
  // The page's origin: a plain HTTP server on another port.
  pageServer = createServer((req, res) => {
    if (req.url === "/sdk.js") {
      res.writeHead(200, { "Content-Type": "text/javascript" });
      res.end(bundle);
      return;
    }
    res.writeHead(200, { "Content-Type": "text/html" });
    res.end(`<!doctype html><script type="module">import * as hubbub from "/sdk.js"; window.hubbub = hubbub; window.ready = true;</script>`);
  });
  await new Promise((r) => pageServer.listen(0, "127.0.0.1", r));
  pageOrigin = `http://127.0.0.1:${pageServer.address().port}`;
  server = await startServer(bin, ["--listen", "127.0.0.1:0", "--history-store", "memory", "--allowed-origins", pageOrigin]);
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  if (browser) await browser.close();
  if (server) server.proc.kill("SIGKILL");
  if (pageServer) pageServer.close();
  rmSync(tmp, { recursive: true, force: true });
});

test("in Chromium: both encodings and compact pushes, a dropped socket recovered, publishes in order", async () => {
  const page = await browser.newPage();
  await page.goto(pageOrigin + "/");
  await page.waitForFunction(() => window.ready === true);
  for (const encoding of ["proto", "json"]) {
    for (const compact of [false, true]) {
      const got = await page.evaluate(async ({ url, encoding, compact }) => {
        const { Client } = window.hubbub;
        const room = `browser-${encoding}-${compact}`;
        const sub = new Client({ url, encoding, compact, name: "reader", minReconnectDelayMs: 20, maxReconnectDelayMs: 100 });
        const pub = new Client({ url, encoding, name: "writer" });
        await sub.connect();
        await pub.connect();
        const texts = [];
        let done;
        const all = new Promise((r) => (done = r));
        await sub.join(room, { message: (m) => { texts.push(`${m.offset}:${m.body.kind.value}:${m.sender.user}:${m.room}`); if (texts.length === 6) done(); } });
        const acks = await Promise.all([1, 2, 3].map((i) => pub.publish(room, `m${i}`)));
        sub.dropConnection(); // as a network failure would
        for (const i of [4, 5, 6]) await pub.publish(room, `m${i}`);
        await Promise.race([all, new Promise((_, no) => setTimeout(() => no(new Error(`got ${texts}`)), 10000))]);
        sub.close();
        pub.close();
        return { texts, acks: acks.map((a) => String(a.offset)) };
      }, { url: server.url, encoding, compact });
      const room = `browser-${encoding}-${compact}`;
      assert.deepEqual(got.acks, ["1", "2", "3"]);
      assert.deepEqual(got.texts, [1, 2, 3, 4, 5, 6].map((i) => `${i}:m${i}:writer:${room}`));
    }
  }
  await page.close();
});
