/**
 * The server's error details (google.rpc BadRequest, ErrorInfo, ResourceInfo, RetryInfo), read from
 * a ConnectError whatever the transport (gRPC, gRPC-Web, Connect).
 *
 * The four messages are decoded here with protobuf-es's wire reader, so the client needs no copy of
 * googleapis. Envoy's Connect bridge names a detail's type by its full type URL; both forms are read.
 */
import { BinaryReader } from "@bufbuild/protobuf/wire";
import { Code, ConnectError } from "@connectrpc/connect";

export { Code, ConnectError };

/** A field the request got wrong (google.rpc.BadRequest.FieldViolation). */
export interface FieldViolation {
  field: string;
  description: string;
}

/** What the server says about an error, beyond its code and message. */
export interface ErrorDetails {
  code: Code;
  message: string;
  /** ErrorInfo.reason, such as UPLOAD_OFFSET_MISMATCH. */
  reason?: string;
  /** ErrorInfo.metadata, such as {committed_size: "1048576"}. */
  metadata: Record<string, string>;
  /** BadRequest's field violations. */
  fieldViolations: FieldViolation[];
  /** ResourceInfo: the resource the error concerns. */
  resource?: { type: string; name: string; description: string };
  /** RetryInfo: seconds to wait before trying again. */
  retryAfterSeconds?: number;
}

function fields(bytes: Uint8Array, each: (field: number, reader: BinaryReader, wireType: number) => boolean): void {
  const reader = new BinaryReader(bytes);
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (!each(field, reader, wireType)) reader.skip(wireType);
  }
}

function decodeDetail(type: string, value: Uint8Array, out: ErrorDetails): void {
  const name = type.split("/").pop();
  if (name === "google.rpc.ErrorInfo") {
    fields(value, (field, r) => {
      if (field === 1) out.reason = r.string();
      else if (field === 3) {
        let key = "", val = "";
        fields(r.bytes(), (f, e) => {
          if (f === 1) key = e.string();
          else if (f === 2) val = e.string();
          else return false;
          return true;
        });
        out.metadata[key] = val;
      } else return false;
      return true;
    });
  } else if (name === "google.rpc.BadRequest") {
    fields(value, (field, r) => {
      if (field !== 1) return false;
      const v: FieldViolation = { field: "", description: "" };
      fields(r.bytes(), (f, e) => {
        if (f === 1) v.field = e.string();
        else if (f === 2) v.description = e.string();
        else return false;
        return true;
      });
      out.fieldViolations.push(v);
      return true;
    });
  } else if (name === "google.rpc.ResourceInfo") {
    const res = { type: "", name: "", description: "" };
    fields(value, (field, r) => {
      if (field === 1) res.type = r.string();
      else if (field === 2) res.name = r.string();
      else if (field === 4) res.description = r.string();
      else return false;
      return true;
    });
    out.resource = res;
  } else if (name === "google.rpc.RetryInfo") {
    fields(value, (field, r) => {
      if (field !== 1) return false;
      let seconds = 0, nanos = 0;
      fields(r.bytes(), (f, e) => {
        if (f === 1) seconds = Number(e.int64());
        else if (f === 2) nanos = e.int32();
        else return false;
        return true;
      });
      out.retryAfterSeconds = seconds + nanos / 1e9;
      return true;
    });
  }
}

/** Reads the server's details out of any error a call threw (a non-Connect error gives code Unknown). */
export function errorDetails(error: unknown): ErrorDetails {
  const err = ConnectError.from(error);
  const out: ErrorDetails = { code: err.code, message: err.rawMessage, metadata: {}, fieldViolations: [] };
  for (const detail of err.details) {
    if ("type" in detail && "value" in detail && detail.value instanceof Uint8Array) {
      decodeDetail(detail.type, detail.value, out);
    }
  }
  return out;
}
