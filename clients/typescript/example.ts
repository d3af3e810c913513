// Lists the job types, creates a demo job, watches it until it has written
// items, then deletes it.
//
//   npm ci && npm run build && node dist/example.js 127.0.0.1:50051   # INGEST_TOKEN if control has one

import { credentials, Metadata } from "@grpc/grpc-js";
import { Job, JobServiceClient, JobState, WatchJobsRequest, jobStateToJSON } from "./src";

const address = process.argv[2] ?? "127.0.0.1:50051";
const client = new JobServiceClient(address, credentials.createInsecure());
const metadata = new Metadata();
if (process.env.INGEST_TOKEN) metadata.set("authorization", `Bearer ${process.env.INGEST_TOKEN}`);
const deadline = () => ({ deadline: Date.now() + 10_000 });

/** A unary call as a promise. */
function unary<Req, Res>(
  method: (req: Req, md: Metadata, opts: object, cb: (err: Error | null, res: Res) => void) => unknown,
  request: Req,
): Promise<Res> {
  return new Promise((resolve, reject) =>
    method.call(client, request, metadata, deadline(), (err: Error | null, res: Res) => (err ? reject(err) : resolve(res))),
  );
}

async function main(): Promise<number> {
  const types = await unary(client.listJobTypes, {});
  console.log("job types:", types.jobTypes.map((t) => t.name).join(", "));

  const created = await unary(client.createJob, {
    jobId: "example-typescript",
    validateOnly: false,
    // fromPartial fills in every field left out, so new API fields need no change here.
    job: Job.fromPartial({
      name: "typescript example", type: "demo", params: { items_per_run: 3 }, interval: { seconds: "1", nanos: 0 },
    }),
  });
  const job = created.job!;
  console.log("created", job.id, jobStateToJSON(job.status?.state ?? JobState.JOB_STATE_UNSPECIFIED));

  // A snapshot of the jobs, then every change, until ours has written items.
  const written = await new Promise<number>((resolve, reject) => {
    const request = WatchJobsRequest.fromPartial({ type: "demo" });
    const watch = client.watchJobs(request, metadata, { deadline: Date.now() + 60_000 });
    watch.on("data", (update) => {
      for (const event of update.events) {
        const n = Number(event.job?.status?.counters?.itemsWritten ?? 0);
        if (event.job?.id === job.id && n > 0) {
          watch.cancel();
          resolve(n);
        }
      }
    });
    watch.on("error", (err: { code?: number }) => {
      if (err.code !== 1) reject(err); // 1: CANCELLED, by us
    });
  });
  console.log("items written:", written);

  await unary(client.deleteJob, { id: job.id, revision: "0" });
  console.log("deleted", job.id);
  return 0;
}

main()
  .then((code) => { client.close(); process.exitCode = code; })
  .catch((err) => { console.error("example:", err.message ?? err); client.close(); process.exitCode = 1; });
