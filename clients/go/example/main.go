// Lists the job types, creates a demo job, watches it until it has written
// items, then deletes it.
//
//	go run ./example 127.0.0.1:50051   # INGEST_TOKEN if control has one
package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	ingestv1 "github.com/ingest-project/ingest/clients/go/ingestv1"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "example:", err)
		os.Exit(1)
	}
}

func run() error {
	address := "127.0.0.1:50051"
	if len(os.Args) > 1 {
		address = os.Args[1]
	}
	conn, err := grpc.NewClient(address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if token := os.Getenv("INGEST_TOKEN"); token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	jobs := ingestv1.NewJobServiceClient(conn)

	types, err := jobs.ListJobTypes(ctx, &ingestv1.ListJobTypesRequest{})
	if err != nil {
		return fmt.Errorf("list job types: %w", err)
	}
	names := make([]string, 0, len(types.JobTypes))
	for _, t := range types.JobTypes {
		names = append(names, t.Name)
	}
	fmt.Println("job types:", strings.Join(names, ", "))

	params, err := structpb.NewStruct(map[string]any{"items_per_run": 3})
	if err != nil {
		return err
	}
	created, err := jobs.CreateJob(ctx, &ingestv1.CreateJobRequest{
		JobId: "example-go",
		Job:   &ingestv1.Job{Name: "go example", Type: "demo", Params: params, Interval: durationpb.New(time.Second)},
	})
	if err != nil {
		return fmt.Errorf("create job: %w", err)
	}
	job := created.Job
	fmt.Println("created", job.Id, job.Status.State)

	// A snapshot of the jobs, then every change, until ours has written items.
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watch, err := jobs.WatchJobs(watchCtx, &ingestv1.WatchJobsRequest{Type: "demo"})
	if err != nil {
		return fmt.Errorf("watch jobs: %w", err)
	}
	var written uint64
	for written == 0 {
		update, err := watch.Recv()
		if err != nil {
			return fmt.Errorf("watch jobs: %w", err)
		}
		for _, event := range update.Events {
			if event.Job.GetId() == job.Id {
				written = event.Job.GetStatus().GetCounters().GetItemsWritten()
			}
		}
	}
	stopWatch()
	fmt.Println("items written:", written)

	if _, err := jobs.DeleteJob(ctx, &ingestv1.DeleteJobRequest{Id: job.Id}); err != nil {
		return fmt.Errorf("delete job: %w", err)
	}
	fmt.Println("deleted", job.Id)
	return nil
}
