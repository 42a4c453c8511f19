// Helpers the SDK's tests share: the server binary and `hubbub serve` processes.
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

// startServer runs `hubbub serve` and resolves with the process and its
// WebSocket URL when it listens.
export function startServer(bin, args) {
  return new Promise((resolve, reject) => {
    const proc = spawn(bin, ["serve", "--log-format", "json", ...args], { stdio: ["ignore", "ignore", "pipe"] });
    const timer = setTimeout(() => reject(new Error("server did not start")), 15000);
    createInterface({ input: proc.stderr }).on("line", (line) => {
      try {
        const rec = JSON.parse(line);
        if (rec.msg === "hubbub listening") {
          clearTimeout(timer);
          resolve({ proc, url: rec.url });
        }
      } catch { /* not a log record */ }
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
