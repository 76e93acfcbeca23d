/**
 * Job watching with resume: a watch that breaks reconnects from the last event's sequence number, so
 * no event is lost or seen twice. Written against TrainService.WatchTrainJob (the one module to adapt
 * when jobs move to a service of their own).
 */
import { Code } from "@connectrpc/connect";

import type { MonaiLabelClient } from "./client.js";
import { JobState, type TrainJobEvent } from "./gen/monailabel/v1/train_pb.js";
import { errorDetails } from "./errors.js";

export { JobState };

const ENDED = new Set([JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED]);

/** Options of a watch. */
export interface WatchOptions {
  /** Events after this sequence number only (0: from the start). */
  afterSequence?: bigint;
  /** Reconnects after a broken stream before the watch fails. */
  reconnects?: number;
  signal?: AbortSignal;
}

/**
 * Watches a training job until it ends; calls `onEvent` for each event, in order.
 *
 * @returns the job's final state.
 */
export async function watchTrainJob(client: MonaiLabelClient, jobId: string,
                                    onEvent: (event: TrainJobEvent) => void,
                                    options: WatchOptions = {}): Promise<JobState> {
  let after = options.afterSequence ?? 0n;
  let reconnects = options.reconnects ?? 5;
  for (;;) {
    try {
      for await (const res of client.train.watchTrainJob({ jobId, afterSequence: after },
                                                         { signal: options.signal })) {
        const event = res.event;
        if (!event) continue;
        after = event.sequence;
        onEvent(event);
        if (event.event.case === "stateChange" && ENDED.has(event.event.value.state)) {
          return event.event.value.state;
        }
      }
      // the stream ended without a final state: ask for it
      const job = (await client.train.getTrainJob({ jobId })).job;
      if (job && ENDED.has(job.state)) return job.state;
    } catch (error) {
      const code = errorDetails(error).code;
      if (!(code === Code.Unavailable || code === Code.DeadlineExceeded || code === Code.Internal)
          || reconnects-- <= 0 || options.signal?.aborted) throw error;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}
