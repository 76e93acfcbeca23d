/**
 * The hand-written layer over the generated services: uploads (chunked, checksummed, resumable) and
 * inference with the mask as a typed array and its geometry. Every call is unary or a server stream,
 * so the same code runs over gRPC (Node) and over gRPC-Web or Connect (browsers).
 */
import type { JsonObject, MessageInitShape } from "@bufbuild/protobuf";
import { type CallOptions, type Client, Code, createClient, type Transport } from "@connectrpc/connect";

import { AppService, type GetAppInfoResponse } from "./gen/monailabel/v1/app_pb.js";
import { type ContentHeader, type ContentHeaderSchema, DataType, Encoding } from "./gen/monailabel/v1/common_pb.js";
import { DatasetService } from "./gen/monailabel/v1/dataset_pb.js";
import { DatastoreService, type Image, type Label } from "./gen/monailabel/v1/datastore_pb.js";
import { InferService, type InferResult, type Session } from "./gen/monailabel/v1/infer_pb.js";
import { type Job, type JobEvent, JobService } from "./gen/monailabel/v1/job_pb.js";
import { ModelService } from "./gen/monailabel/v1/model_pb.js";
import { ServerService } from "./gen/monailabel/v1/server_pb.js";
import { type NextSample, StrategyService } from "./gen/monailabel/v1/strategy_pb.js";
import { type StartTrainJobRequestSchema, TrainService } from "./gen/monailabel/v1/train_pb.js";
import { errorDetails } from "./errors.js";
import { watchJob, type WatchOptions } from "./jobs.js";
import { bytesOf, sha256Hex } from "./sha256.js";

export { DataType, Encoding };

/** What the bytes of an upload are. */
export interface ContentOptions {
  /** The encoding; unset guesses from fileExtension. */
  encoding?: Encoding;
  /** Such as ".nii.gz". */
  fileExtension?: string;
}

/** Options of an upload. */
export interface UploadOptions extends ContentOptions {
  /** Bytes per AppendUploadChunk; at most the server's limit (CreateUpload tells it). Default 1 MiB. */
  chunkSize?: number;
  /** Continue this upload (from an UploadError, or GetUploadStatus) instead of starting a new one. */
  uploadId?: string;
  /** Called after each chunk with the committed and total sizes. */
  onProgress?: (committed: number, total: number) => void;
  /** Times a chunk is retried after UNAVAILABLE or DEADLINE_EXCEEDED before the upload fails. */
  retries?: number;
  /** Cancels the upload (what was committed stays, resumable by its id). */
  signal?: AbortSignal;
}

/** An upload that stopped: resume it with `uploadId` (and the same bytes) while it has not expired. */
export class UploadError extends Error {
  constructor(readonly uploadId: string, readonly committed: number, readonly cause: unknown) {
    super(`upload ${uploadId} stopped after ${committed} bytes: ${errorDetails(cause).message}`);
    this.name = "UploadError";
  }
}

/** Interactive-model parameters of an inference. */
export interface InferOptions {
  /** Foreground clicks, as voxel indices. */
  foreground?: number[][];
  /** Background clicks. */
  background?: number[][];
  /** Device: "cpu", "cuda" or "cuda:N". */
  device?: string;
  /** App-specific keys. */
  extra?: JsonObject;
  /** Also save the mask as the image's `original` label (datastore images). */
  saveLabel?: boolean;
  /** Element type of the mask. */
  resultDtype?: DataType;
  /** A label of the datastore image (by tag) as the model's input label (scribbles, a label to edit). */
  inputLabelTag?: string;
  signal?: AbortSignal;
}

/** A voxel array: its element type and the geometry that places it (RAS+, first axis fastest). */
export interface Mask {
  data: Uint8Array | Int8Array | Uint16Array | Int16Array | Uint32Array | Int32Array | Float32Array | Float64Array | BigInt64Array;
  dataType: DataType;
  shape: number[];
  spacing: number[];
  origin: number[];
  direction: number[];
  /** SHA-256 of the mask's bytes, as the server announced it and the client verified it. */
  sha256: string;
}

/** The outcome of an inference. */
export interface InferOutcome {
  result: JsonObject;
  labels: Record<string, number>;
  latencySeconds: Record<string, number>;
  mask?: Mask;
  savedLabel?: Label;
}

export type InferSource = { imageId: string } | { sessionId: string } | { uploadId: string };

const TRANSIENT = new Set([Code.Unavailable, Code.DeadlineExceeded]);

function concat(parts: Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function typed(bytes: Uint8Array, dataType: DataType): Mask["data"] {
  const buf = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  switch (dataType) {
    case DataType.UINT8: return new Uint8Array(buf);
    case DataType.INT8: return new Int8Array(buf);
    case DataType.UINT16: return new Uint16Array(buf);
    case DataType.INT16: return new Int16Array(buf);
    case DataType.UINT32: return new Uint32Array(buf);
    case DataType.INT32: return new Int32Array(buf);
    case DataType.FLOAT32: return new Float32Array(buf);
    case DataType.FLOAT64: return new Float64Array(buf);
    case DataType.INT64: return new BigInt64Array(buf);
    default: throw new Error(`mask of unknown data type ${dataType}`);
  }
}

/** The MONAI Label API over one transport (see `./node.js` and `./web.js` for making one). */
export class MonaiLabelClient {
  readonly app: Client<typeof AppService>;
  readonly datastore: Client<typeof DatastoreService>;
  readonly infers: Client<typeof InferService>;
  readonly train: Client<typeof TrainService>;
  readonly strategy: Client<typeof StrategyService>;
  /** Jobs of every kind (training, scoring, batch inference): get, list, cancel, watch. */
  readonly jobs: Client<typeof JobService>;
  readonly models: Client<typeof ModelService>;
  readonly datasets: Client<typeof DatasetService>;
  readonly server: Client<typeof ServerService>;

  constructor(readonly transport: Transport) {
    this.app = createClient(AppService, transport);
    this.datastore = createClient(DatastoreService, transport);
    this.infers = createClient(InferService, transport);
    this.train = createClient(TrainService, transport);
    this.strategy = createClient(StrategyService, transport);
    this.jobs = createClient(JobService, transport);
    this.models = createClient(ModelService, transport);
    this.datasets = createClient(DatasetService, transport);
    this.server = createClient(ServerService, transport);
  }

  /** The app's info, with the server's limits. */
  info(options?: CallOptions): Promise<GetAppInfoResponse> {
    return this.app.getAppInfo({}, options);
  }

  /** Every image of the datastore (all pages). */
  async listImages(options?: CallOptions): Promise<Image[]> {
    const images: Image[] = [];
    let pageToken = "";
    for (let page = 0; page < 100000; page++) {
      const res = await this.datastore.listImages({ pageSize: 1000, pageToken }, options);
      images.push(...res.images);
      pageToken = res.nextPageToken;
      if (!pageToken) break;
    }
    return images;
  }

  // -- uploads ------------------------------------------------------------------------------------

  /** Uploads an image (creates it; `overwrite` replaces one). */
  async uploadImage(imageId: string, data: Uint8Array | Blob,
                    options: UploadOptions & { info?: JsonObject; overwrite?: boolean } = {}): Promise<Image> {
    const bytes = await bytesOf(data);
    const content = await this.content(bytes, options);
    const uploadId = await this.upload(bytes, options, () => ({
      target: { case: "image", value: { imageId, content, info: options.info, overwrite: options.overwrite } },
    }));
    const res = await this.datastore.commitUpload({ uploadId }, { signal: options.signal });
    if (res.resource.case !== "image") throw new Error("the server committed no image");
    return res.resource.value;
  }

  /** Saves a label of an image under a tag (default `final`). */
  async saveLabel(imageId: string, data: Uint8Array | Blob,
                  options: UploadOptions & { tag?: string; info?: JsonObject } = {}): Promise<Label> {
    const bytes = await bytesOf(data);
    const content = await this.content(bytes, options);
    const uploadId = await this.upload(bytes, options, () => ({
      target: { case: "label", value: { imageId, tag: options.tag ?? "", content, info: options.info } },
    }));
    const res = await this.datastore.commitUpload({ uploadId }, { signal: options.signal });
    if (res.resource.case !== "label") throw new Error("the server committed no label");
    return res.resource.value;
  }

  /** Uploads a volume to infer on (for `infer({uploadId})` or `openSession`); returns its upload id. */
  async uploadVolume(data: Uint8Array | Blob, options: UploadOptions = {}): Promise<string> {
    const bytes = await bytesOf(data);
    const content = await this.content(bytes, options);
    return this.upload(bytes, options, () => ({ target: { case: "volume", value: content } }));
  }

  private async content(bytes: Uint8Array, options: ContentOptions): Promise<MessageInitShape<typeof ContentHeaderSchema>> {
    return {
      encoding: options.encoding ?? Encoding.UNSPECIFIED,
      fileExtension: options.fileExtension ?? "",
      totalSize: BigInt(bytes.length),
      sha256: await sha256Hex(bytes),
    };
  }

  /** Creates (or resumes) an upload and appends every chunk; returns its id. */
  private async upload(bytes: Uint8Array, options: UploadOptions,
                       request: () => Parameters<Client<typeof DatastoreService>["createUpload"]>[0]): Promise<string> {
    const call = { signal: options.signal };
    let uploadId = options.uploadId ?? "";
    let chunkSize = options.chunkSize ?? 1 << 20;
    let offset = 0;
    if (uploadId) {
      const status = await this.datastore.getUploadStatus({ uploadId }, call);
      offset = Number(status.committedSize);
    } else {
      const created = await this.datastore.createUpload(request(), call);
      uploadId = created.uploadId;
      chunkSize = Math.min(chunkSize, created.maxChunkSize || chunkSize);
    }
    const total = bytes.length;
    const retries = options.retries ?? 3;
    let failures = 0;
    // every turn either commits bytes or counts a failure: the loop is bounded
    while (offset < total) {
      const end = Math.min(offset + chunkSize, total);
      try {
        const res = await this.datastore.appendUploadChunk(
          { uploadId, chunk: { offset: BigInt(offset), data: bytes.subarray(offset, end) } }, call);
        offset = Number(res.committedSize);
        failures = 0;
        options.onProgress?.(offset, total);
      } catch (error) {
        const d = errorDetails(error);
        const where = d.metadata["committed_size"];
        if (d.code === Code.OutOfRange && d.reason === "UPLOAD_OFFSET_MISMATCH" && where !== undefined
            && failures++ < retries) {
          offset = Number(where); // a chunk whose answer was lost did arrive: go on from the server's size
          continue;
        }
        if (TRANSIENT.has(d.code) && failures++ < retries && !options.signal?.aborted) {
          await new Promise((r) => setTimeout(r, 200 * 2 ** failures));
          try {
            offset = Number((await this.datastore.getUploadStatus({ uploadId }, call)).committedSize);
          } catch {
            /* the next append tells */
          }
          continue;
        }
        throw new UploadError(uploadId, offset, error);
      }
    }
    return uploadId;
  }

  // -- downloads ------------------------------------------------------------------------------------

  /** Downloads an image's file (checksum verified). */
  async downloadImage(imageId: string, options?: CallOptions): Promise<Uint8Array> {
    return this.collect(this.datastore.downloadImage({ imageId }, options));
  }

  /** Downloads a label's file (checksum verified). */
  async downloadLabel(imageId: string, tag = "final", options?: CallOptions): Promise<Uint8Array> {
    return this.collect(this.datastore.downloadLabel({ imageId, tag }, options));
  }

  private async collect(stream: AsyncIterable<{ part: { case: "header"; value: ContentHeader } | { case: "chunk"; value: { offset: bigint; data: Uint8Array } } | { case: undefined; value?: undefined } }>): Promise<Uint8Array> {
    let header: ContentHeader | undefined;
    const parts: Uint8Array[] = [];
    let size = 0;
    for await (const message of stream) {
      if (message.part.case === "header") header = message.part.value;
      else if (message.part.case === "chunk") {
        if (Number(message.part.value.offset) !== size) throw new Error("download chunks out of order");
        parts.push(message.part.value.data);
        size += message.part.value.data.length;
      }
    }
    const data = concat(parts, size);
    if (header?.sha256 && (await sha256Hex(data)) !== header.sha256) throw new Error("download checksum mismatch");
    return data;
  }

  // -- inference ------------------------------------------------------------------------------------

  /** Runs a model; the mask comes back as raw voxels, verified against its checksum. */
  async infer(model: string, source: InferSource, options: InferOptions = {}): Promise<InferOutcome> {
    const src = "imageId" in source ? { case: "imageId" as const, value: source.imageId }
      : "sessionId" in source ? { case: "sessionId" as const, value: source.sessionId }
      : { case: "uploadId" as const, value: source.uploadId };
    const stream = this.infers.infer({
      model,
      source: src,
      params: {
        foreground: (options.foreground ?? []).map((p) => ({ coordinates: p.map(BigInt) })),
        background: (options.background ?? []).map((p) => ({ coordinates: p.map(BigInt) })),
        device: options.device ?? "",
        extra: options.extra,
        resultDtype: options.resultDtype ?? DataType.UNSPECIFIED,
      },
      output: { encoding: Encoding.RAW, saveLabel: options.saveLabel ?? false },
      inputLabelTag: options.inputLabelTag ?? "",
    }, { signal: options.signal });
    let result: InferResult | undefined;
    const parts: Uint8Array[] = [];
    let size = 0;
    for await (const message of stream) {
      if (message.part.case === "result") result = message.part.value;
      else if (message.part.case === "chunk") {
        if (Number(message.part.value.offset) !== size) throw new Error("mask chunks out of order");
        parts.push(message.part.value.data);
        size += message.part.value.data.length;
      }
    }
    if (!result) throw new Error("the server sent no result");
    const outcome: InferOutcome = {
      result: result.result ?? {},
      labels: Object.fromEntries(Object.entries(result.labels).map(([k, v]) => [k, Number(v)])),
      latencySeconds: { ...(result.latency ?? {}) } as unknown as Record<string, number>,
      savedLabel: result.savedLabel,
    };
    const header = result.mask;
    if (header) {
      const bytes = concat(parts, size);
      if (bytes.length !== Number(header.totalSize)) throw new Error("mask size differs from its header");
      const digest = await sha256Hex(bytes);
      if (digest !== header.sha256) throw new Error(`mask checksum mismatch: ${digest} != ${header.sha256}`);
      outcome.mask = {
        data: typed(bytes, header.dataType),
        dataType: header.dataType,
        shape: header.shape.map(Number),
        spacing: header.geometry?.spacing ?? [],
        origin: header.geometry?.origin ?? [],
        direction: header.geometry?.direction ?? [],
        sha256: digest,
      };
    }
    return outcome;
  }

  /** Runs a model on a volume sent with the call (uploaded first, then consumed by the inference). */
  async inferVolume(model: string, data: Uint8Array | Blob, content: ContentOptions,
                    options: InferOptions = {}): Promise<InferOutcome> {
    const uploadId = await this.uploadVolume(data, { ...content, signal: options.signal });
    return this.infer(model, { uploadId }, options);
  }

  /** Opens an interactive session on a datastore image or a volume (uploaded once, then kept decoded). */
  async openSession(source: { imageId: string } | { data: Uint8Array | Blob; content: ContentOptions },
                    ttlSeconds = 0, options?: CallOptions): Promise<Session> {
    const src = "imageId" in source
      ? { case: "imageId" as const, value: source.imageId }
      : { case: "uploadId" as const, value: await this.uploadVolume(source.data, source.content) };
    const res = await this.infers.openSession({ ttl: { seconds: BigInt(ttlSeconds) }, source: src }, options);
    if (!res.session) throw new Error("the server sent no session");
    return res.session;
  }

  /** Asks a strategy for the next image to label. */
  async nextSample(strategy: string, clientId: string, options?: CallOptions): Promise<NextSample | undefined> {
    let sample: NextSample | undefined;
    for await (const message of this.strategy.getNextSample({ strategy, clientId }, options)) {
      if (message.part.case === "sample") sample = message.part.value;
    }
    return sample;
  }

  // -- jobs -----------------------------------------------------------------------------------------

  /** Starts a training job of a model (`request`: the rest of StartTrainJobRequest); returns the job. */
  async startTrainJob(model: string, request: Omit<MessageInitShape<typeof StartTrainJobRequestSchema>, "model" | "$typeName"> = {},
                      options?: CallOptions): Promise<Job> {
    const res = await this.train.startTrainJob({ ...request, model }, options);
    if (!res.job) throw new Error("the server sent no job");
    return res.job;
  }

  /** A job as it is now. */
  async getJob(jobId: string, options?: CallOptions): Promise<Job> {
    const res = await this.jobs.getJob({ jobId }, options);
    if (!res.job) throw new Error("the server sent no job");
    return res.job;
  }

  /** Cancels a job; returns it as it is then. */
  async cancelJob(jobId: string, options?: CallOptions): Promise<Job> {
    const res = await this.jobs.cancelJob({ jobId }, options);
    if (!res.job) throw new Error("the server sent no job");
    return res.job;
  }

  /**
   * Watches a job (of any kind) until it ends, resuming after broken streams; `afterSequence`
   * skips the events already seen. Returns the job as it ended.
   */
  watchJob(jobId: string, onEvent: (event: JobEvent) => void, options: WatchOptions = {}): Promise<Job> {
    return watchJob(this, jobId, onEvent, options);
  }
}
