/**
 * Job watching with resume, for jobs of every kind (training, scoring, batch inference) through
 * JobService: a watch that breaks reconnects from the last event's sequence number, so no event is
 * lost or seen twice.
 */
import { Code } from "@connectrpc/connect";

import type { MonaiLabelClient } from "./client.js";
import { type Job, type JobEvent, JobKind, JobState } from "./gen/monailabel/v1/job_pb.js";
import { errorDetails } from "./errors.js";

export { JobKind, JobState };
export type { Job, JobEvent };

const ENDED = new Set([JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED]);

/** Whether a job's state is final (succeeded, failed or cancelled). */
export function jobEnded(state: JobState): boolean {
  return ENDED.has(state);
}

/** Options of a watch. */
export interface WatchOptions {
  /** Events after this sequence number only (0: from the start). */
  afterSequence?: bigint;
  /** Reconnects after a broken stream before the watch fails. */
  reconnects?: number;
  signal?: AbortSignal;
}

/**
 * Watches a job until it ends; calls `onEvent` for each event, in order.
 *
 * @returns the job as it ended (its final state, error, result and progress).
 */
export async function watchJob(client: MonaiLabelClient, jobId: string,
                               onEvent: (event: JobEvent) => void,
                               options: WatchOptions = {}): Promise<Job> {
  let after = options.afterSequence ?? 0n;
  let reconnects = options.reconnects ?? 5;
  const call = { signal: options.signal };
  for (;;) {
    try {
      for await (const res of client.jobs.watchJob({ jobId, afterSequence: after }, call)) {
        const event = res.event;
        if (!event) continue;
        after = event.sequence;
        onEvent(event);
        if (event.event.case === "stateChange" && ENDED.has(event.event.value.state)) break;
      }
      // the final state was seen, or the stream ended without it: the job itself tells
      const job = (await client.jobs.getJob({ jobId }, call)).job;
      if (job && ENDED.has(job.state)) return job;
      if (reconnects-- <= 0) throw new Error(`the watch of job ${jobId} ended before the job did`);
    } catch (error) {
      const code = errorDetails(error).code;
      if (!(code === Code.Unavailable || code === Code.DeadlineExceeded || code === Code.Internal)
          || reconnects-- <= 0 || options.signal?.aborted) throw error;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}
