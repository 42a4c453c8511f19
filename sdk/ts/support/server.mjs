// Helpers the SDK's tests and the web pages' tests share: the server binary
// and `hubbub serve` processes.
import { spawn, execFileSync } from "node:child_process";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";

export const repo = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

// hubbubBinary is HUBBUB_BIN, or the server built into dir.
export function hubbubBinary(dir) {
  if (process.env.HUBBUB_BIN) return process.env.HUBBUB_BIN;
  const bin = join(dir, "hubbub");
  execFileSync("go", ["build", "-o", bin, "./cmd/hubbub"], { cwd: repo, stdio: "inherit" });
  return bin;
}

// startServer runs `hubbub serve` and resolves with the process, its
// WebSocket URL and, with --api-listen, the server API's base URL, once it
// listens.
export function startServer(bin, args) {
  return new Promise((resolve, reject) => {
    const proc = spawn(bin, ["serve", "--log-format", "json", ...args], { stdio: ["ignore", "ignore", "pipe"] });
    const timer = setTimeout(() => reject(new Error("server did not start")), 15000);
    const found = { proc, url: "", api: "" };
    const wantAPI = args.includes("--api-listen");
    createInterface({ input: proc.stderr }).on("line", (line) => {
      try {
        const rec = JSON.parse(line);
        if (rec.msg === "hubbub listening") found.url = rec.url;
        if (rec.msg === "server API listening") found.api = `http://${rec.addr}`;
      } catch { /* not a log record */ }
      if (found.url && (found.api || !wantAPI)) {
        clearTimeout(timer);
        resolve(found);
      }
    });
    proc.on("exit", (code) => { clearTimeout(timer); reject(new Error(`server exited ${code}`)); });
  });
}

// stopServer signals the process (kill -9 by default) and waits for its end.
export function stopServer(s, signal = "SIGKILL") {
  return new Promise((resolve) => {
    if (s.proc.exitCode !== null) return resolve();
    s.proc.once("exit", () => resolve());
    s.proc.kill(signal);
  });
}
