/** Node transport: plain gRPC over HTTP/2 to the server's gRPC port. */
import { createGrpcTransport } from "@connectrpc/connect-node";
import type { Interceptor } from "@connectrpc/connect";

import { MonaiLabelClient } from "./client.js";

/** A client of the gRPC port at `baseUrl` (such as "http://127.0.0.1:50051"); `token` adds a bearer token. */
export function connectNode(baseUrl: string, token?: string): MonaiLabelClient {
  const interceptors: Interceptor[] = token
    ? [(next) => (req) => { req.header.set("authorization", `Bearer ${token}`); return next(req); }] : [];
  return new MonaiLabelClient(createGrpcTransport({ baseUrl, interceptors }));
}

export * from "./index.js";
