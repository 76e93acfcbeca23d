/**
 * The TypeScript client against a real server (started by tests/integration/test_typescript_client.py,
 * which passes its addresses and a volume in the environment): Node's gRPC transport, and the browser
 * transports (gRPC-Web, Connect) through the server's browser port.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { Code, ConnectError } from "@connectrpc/connect";

import { connectNode, errorDetails, JobKind, JobState, MonaiLabelClient, sha256Hex, UploadError } from "../node.js";
import { connectWeb } from "../web.js";

const GRPC_URL = process.env.MONAILABEL_GRPC_URL ?? "";
const WEB_URL = process.env.MONAILABEL_WEB_URL ?? "";
const VOLUME = readFileSync(process.env.MONAILABEL_VOLUME ?? "");
const SHAPE = (process.env.MONAILABEL_VOLUME_SHAPE ?? "").split(",").map(Number);
const TRAIN_MODEL = process.env.MONAILABEL_TRAIN_MODEL ?? "segmentation";

const clients: Array<[string, () => MonaiLabelClient]> = [
  ["grpc", () => connectNode(GRPC_URL)],
  ["grpcweb", () => connectWeb(WEB_URL, "grpcweb")],
  ["connect", () => connectWeb(WEB_URL, "connect")],
];

for (const [name, make] of clients) {
  test(`${name}: upload in chunks, infer, the mask's checksum and geometry`, async () => {
    const client = make();
    const info = await client.info();
    assert.ok(info.limits && info.limits.maxVolumeBytes > 0n);
    const progress: number[] = [];
    const image = await client.uploadImage(`ts_${name}`, VOLUME, {
      fileExtension: ".nii.gz", chunkSize: 8 << 10, info: { client: "typescript" },
      onProgress: (committed) => progress.push(committed),
    });
    assert.equal(image.sha256, await sha256Hex(VOLUME));
    assert.ok(progress.length > 1 && progress.at(-1) === VOLUME.length);
    assert.equal(image.info?.client, "typescript");
    const listed = await client.listImages();
    assert.ok(listed.some((i) => i.imageId === `ts_${name}`));
    // a server stream that ends with one answer: the next sample, leased to this client
    const sample = await client.nextSample("random", `ts-${name}`);
    assert.ok(sample && listed.some((i) => i.imageId === sample.imageId));
    assert.equal(sample!.clientId, `ts-${name}`);

    const out = await client.infer("segmentation", { imageId: `ts_${name}` });
    const mask = out.mask!;
    assert.deepEqual(mask.shape, SHAPE);
    assert.equal(mask.data.length, SHAPE.reduce((a, b) => a * b, 1));
    const bytes = new Uint8Array(mask.data.buffer, mask.data.byteOffset, mask.data.byteLength);
    assert.equal(await sha256Hex(bytes), mask.sha256);
    assert.equal(mask.spacing.length, 3);
    assert.equal(mask.direction.length, 9);
    assert.deepEqual(out.labels, { organ: 1 });

    // the browser's InferVolume: a volume upload consumed by the inference
    const inline = await client.inferVolume("segmentation", VOLUME, { fileExtension: ".nii.gz" });
    assert.deepEqual(inline.mask!.shape, SHAPE);
    assert.equal(inline.mask!.sha256, mask.sha256);

    // a session: the volume uploaded once, then clicks
    const session = await client.openSession({ data: VOLUME, content: { fileExtension: ".nii.gz" } }, 60);
    assert.deepEqual(session.shape.map(Number), SHAPE);
    const clicked = await client.infer("segmentation", { sessionId: session.sessionId });
    assert.equal(clicked.mask!.sha256, mask.sha256);
    await client.infers.deleteSession({ sessionId: session.sessionId });
  });

  test(`${name}: a stopped upload resumes by its id`, async () => {
    const client = make();
    const abort = new AbortController();
    let stopped: UploadError | undefined;
    try {
      await client.uploadImage(`ts_resume_${name}`, VOLUME, {
        fileExtension: ".nii.gz", chunkSize: 4 << 10, signal: abort.signal,
        onProgress: (committed) => { if (committed >= 8 << 10) abort.abort(); },
      });
    } catch (error) {
      stopped = error as UploadError;
    }
    assert.ok(stopped instanceof UploadError, `expected an UploadError, got ${stopped}`);
    const status = await client.datastore.getUploadStatus({ uploadId: stopped.uploadId });
    assert.ok(status.committedSize >= 8n << 10n && status.committedSize < BigInt(VOLUME.length));
    const sent: number[] = [];
    const image = await client.uploadImage(`ts_resume_${name}`, VOLUME, {
      fileExtension: ".nii.gz", chunkSize: 4 << 10, uploadId: stopped.uploadId,
      onProgress: (committed) => sent.push(committed),
    });
    assert.equal(image.sha256, await sha256Hex(VOLUME));
    assert.ok(sent[0] > Number(status.committedSize), "the resumed upload sent only the rest");
  });

  test(`${name}: error codes and details`, async () => {
    const client = make();
    await assert.rejects(client.datastore.getImage({ imageId: "no_such_image" }), (error: unknown) => {
      assert.ok(error instanceof ConnectError);
      assert.equal(errorDetails(error).code, Code.NotFound);
      return true;
    });
    const created = await client.datastore.createUpload({ target: { case: "volume", value: {
      fileExtension: ".nii.gz", totalSize: BigInt(VOLUME.length) } } });
    await assert.rejects(
      client.datastore.appendUploadChunk({ uploadId: created.uploadId, chunk: { offset: 10n, data: VOLUME.subarray(0, 10) } }),
      (error: unknown) => {
        const d = errorDetails(error);
        assert.equal(d.code, Code.OutOfRange);
        assert.equal(d.reason, "UPLOAD_OFFSET_MISMATCH");
        assert.equal(d.metadata["committed_size"], "0");
        assert.ok(d.fieldViolations.some((v) => v.field === "chunk.offset"));
        return true;
      });
    await assert.rejects(client.infer("segmentation", { uploadId: created.uploadId }), (error: unknown) => {
      const d = errorDetails(error);
      assert.equal(d.code, Code.FailedPrecondition);
      assert.equal(d.reason, "UPLOAD_INCOMPLETE");
      return true;
    });
    // an input label the image does not have: the tag reaches the server, which names what is missing
    const [image] = await client.listImages();
    await assert.rejects(client.infer("segmentation", { imageId: image.imageId }, { inputLabelTag: "no_such_tag" }),
                         (error: unknown) => {
      assert.equal(errorDetails(error).code, Code.NotFound);
      return true;
    });
    await client.datastore.deleteUpload({ uploadId: created.uploadId });
    await assert.rejects(client.datastore.deleteUpload({ uploadId: created.uploadId }), (error: unknown) => {
      const d = errorDetails(error);
      assert.equal(d.code, Code.NotFound);
      assert.equal(d.resource?.type, "upload");
      return true;
    });
  });
}

test("grpc: watch a short training job to its end, then resume over the browser port", async () => {
  const client = connectNode(GRPC_URL);
  const started = await client.startTrainJob(TRAIN_MODEL, { maxEpochs: 1, device: "cpu", extra: { pretrained: false } });
  assert.equal(started.kind, JobKind.TRAIN);
  assert.equal(started.model, TRAIN_MODEL);
  const jobId = started.jobId;
  const sequences: bigint[] = [];
  let epochs = 0;
  const ended = await client.watchJob(jobId, (event) => {
    sequences.push(event.sequence);
    if (event.event.case === "epoch") epochs++;
  });
  assert.equal(ended.state, JobState.SUCCEEDED, ended.error);
  assert.equal(ended.jobId, jobId);
  assert.ok(ended.endTime, "an ended job has its end time");
  assert.ok(epochs >= 1);
  assert.deepEqual([...sequences].sort((a, b) => (a < b ? -1 : 1)), sequences, "events in order");
  assert.equal(new Set(sequences).size, sequences.length, "no event twice");
  // the job is listed among the training jobs of its model
  const listed = await client.jobs.listJobs({ kind: JobKind.TRAIN, model: TRAIN_MODEL });
  assert.ok(listed.jobs.some((j) => j.jobId === jobId && j.state === JobState.SUCCEEDED));
  // resuming after an event seen gives nothing twice: only what followed (the last event), here
  // over gRPC-Web as the viewer watches
  const web = connectWeb(WEB_URL, "grpcweb");
  const again: bigint[] = [];
  const resumed = await web.watchJob(jobId, (event) => again.push(event.sequence),
                                     { afterSequence: sequences[sequences.length - 2] });
  assert.equal(resumed.state, JobState.SUCCEEDED);
  assert.deepEqual(again, [sequences[sequences.length - 1]]);
  await assert.rejects(client.getJob("no_such_job"), (error: unknown) => {
    assert.equal(errorDetails(error).code, Code.NotFound);
    return true;
  });
});
