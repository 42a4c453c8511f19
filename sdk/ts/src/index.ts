export { Client, Subscription, SUBPROTOCOL_JSON, SUBPROTOCOL_PROTO } from "./client.js";
export type {
  BodyInput,
  ClientOptions,
  JoinOptions,
  PublishOptions,
  State,
  SubscriptionHandlers,
  WebSocketConstructor,
} from "./client.js";
export { ClosedError, DisconnectedError, ServerError, UpgradeError, closeCodes, shouldReconnect } from "./errors.js";
export * from "./gen/hubbub/v1/hubbub_pb.js";
