import { ErrorCode } from "./gen/hubbub/v1/hubbub_pb.js";

/** A command the server refused: an `error` reply. */
export class ServerError extends Error {
  /** The error's code, e.g. ErrorCode.UNAUTHORIZED. */
  readonly code: ErrorCode;
  /** The code's name without its prefix, e.g. "UNAUTHORIZED". */
  readonly codeName: string;
  /** True when the same command may succeed if sent again later. */
  readonly temporary: boolean;
  constructor(code: ErrorCode, message: string, temporary: boolean) {
    const name = ErrorCode[code] ?? String(code);
    super(`${name}: ${message}`);
    this.name = "ServerError";
    this.code = code;
    this.codeName = name;
    this.temporary = temporary;
  }
}

/** The connection was closed and will not be reopened (the server said so, or close() was called). */
export class ClosedError extends Error {
  /** The WebSocket close code (see closeCodes); 1000 after close(). */
  readonly code: number;
  readonly reason: string;
  constructor(code: number, reason: string) {
    super(`connection closed: ${code} ${reason}`);
    this.name = "ClosedError";
    this.code = code;
    this.reason = reason;
  }
}

/** A command that was sent on a connection that broke before its reply, and is not retried. */
export class DisconnectedError extends Error {
  constructor() {
    super("disconnected before the reply");
    this.name = "DisconnectedError";
  }
}

/**
 * The server refused the WebSocket upgrade (HTTP status: 403 for a page from
 * an origin it does not allow, 429 when rate limited, 503 when full). Node
 * reports the status; browsers do not, so there status is 0.
 */
export class UpgradeError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.name = "UpgradeError";
    this.status = status;
  }
}

/**
 * The server's close codes and whether a client should reconnect after each
 * (the table in the server's wire/close.go, also served at /close-codes.js).
 */
export const closeCodes: ReadonlyArray<{ code: number; reason: string; reconnect: boolean }> = [
  { code: 1000, reason: "normal close", reconnect: false },
  { code: 1001, reason: "server shutting down", reconnect: true },
  { code: 1002, reason: "protocol error", reconnect: false },
  { code: 1003, reason: "wrong frame type for the subprotocol", reconnect: false },
  { code: 1007, reason: "malformed frame", reconnect: false },
  { code: 1008, reason: "rate limit exceeded repeatedly", reconnect: false },
  { code: 1009, reason: "frame too big", reconnect: false },
  { code: 1011, reason: "internal error", reconnect: true },
  { code: 1013, reason: "try again later", reconnect: true },
  { code: 4000, reason: "slow consumer", reconnect: true },
  { code: 4001, reason: "token expired", reconnect: true },
  { code: 4002, reason: "unauthorized", reconnect: false },
  { code: 4003, reason: "too many connections for this user", reconnect: false },
  { code: 4004, reason: "a joined room moved; rejoin", reconnect: true },
  { code: 4005, reason: "no connect in time", reconnect: true },
  { code: 4006, reason: "disconnected by the server", reconnect: true },
  { code: 4007, reason: "disconnected by the server; do not reconnect", reconnect: false },
];

/** Whether to reconnect after a close code; unknown codes (a broken network: 1006) are worth a retry. */
export function shouldReconnect(code: number): boolean {
  const c = closeCodes.find((x) => x.code === code);
  return c ? c.reconnect : true;
}
