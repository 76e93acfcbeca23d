/** Browser transports: gRPC-Web or Connect to the server's browser port (`start_server --web-port`). */
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import type { Interceptor } from "@connectrpc/connect";

import { MonaiLabelClient } from "./client.js";

/**
 * A client of the browser port at `baseUrl` (such as "http://127.0.0.1:8080").
 *
 * Connect uses the binary codec: Envoy's bridge hands the server gRPC in protobuf, which it speaks.
 */
export function connectWeb(baseUrl: string, protocol: "grpcweb" | "connect" = "grpcweb",
                           token?: string): MonaiLabelClient {
  const interceptors: Interceptor[] = token
    ? [(next) => (req) => { req.header.set("authorization", `Bearer ${token}`); return next(req); }] : [];
  const transport = protocol === "connect"
    ? createConnectTransport({ baseUrl, useBinaryFormat: true, interceptors })
    : createGrpcWebTransport({ baseUrl, interceptors });
  return new MonaiLabelClient(transport);
}

export * from "./index.js";
