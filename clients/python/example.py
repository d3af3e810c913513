"""List the job types, create a demo job, watch it until it has written
items, then delete it.

    pip install ./clients/python
    python clients/python/example.py 127.0.0.1:50051   # INGEST_TOKEN if control has one
"""

import os
import sys

import grpc
from google.protobuf import duration_pb2, struct_pb2

from ingest.v1 import jobs_pb2 as pb
from ingest.v1 import jobs_pb2_grpc as rpc


def main() -> int:
    address = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051"
    token = os.environ.get("INGEST_TOKEN")
    metadata = [("authorization", f"Bearer {token}")] if token else []
    with grpc.insecure_channel(address) as channel:
        jobs = rpc.JobServiceStub(channel)
        types = jobs.ListJobTypes(pb.ListJobTypesRequest(), metadata=metadata, timeout=10)
        print("job types:", ", ".join(t.name for t in types.job_types))

        params = struct_pb2.Struct()
        params.update({"items_per_run": 3})
        new = pb.Job(name="python example", type="demo", params=params, interval=duration_pb2.Duration(seconds=1))
        try:
            job = jobs.CreateJob(pb.CreateJobRequest(job_id="example-python", job=new), metadata=metadata, timeout=10).job
        except grpc.RpcError as error:
            print(f"cannot create the job: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
        print("created", job.id, pb.JobState.Name(job.status.state))

        # A snapshot of the jobs, then every change, until ours has written items.
        watch = jobs.WatchJobs(pb.WatchJobsRequest(type="demo"), metadata=metadata, timeout=60)
        written = 0
        for update in watch:
            for event in update.events:
                if event.job.id == job.id:
                    written = event.job.status.counters.items_written
            if written > 0:
                watch.cancel()
                break
        print("items written:", written)

        jobs.DeleteJob(pb.DeleteJobRequest(id=job.id), metadata=metadata, timeout=10)
        print("deleted", job.id)
    return 0 if written > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
