// The server API's service and message types (hubbub.api.v1), for backends
// and consoles that call it with Connect:
//
//   import { createClient } from "@connectrpc/connect";
//   import { createConnectTransport } from "@connectrpc/connect-node";
//   import { ServerAPI } from "@hubbub-chat/client/api";
//   const api = createClient(ServerAPI, createConnectTransport({ baseUrl: "http://127.0.0.1:8081", httpVersion: "1.1" }));
export * from "./gen/hubbub/api/v1/api_pb.js";
