// Command feedparse is the Go baseline of `ingest-bench parse`: it parses
// every feed file given, with gofeed, on one core, over and over for at least
// -seconds, and prints {"feeds": n, "items": n, "bytes": n, "failed": n, "seconds": s}.
// A feed gofeed cannot read counts its bytes, no items, and one failure.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/mmcdole/gofeed"
)

func main() {
	seconds := flag.Float64("seconds", 3, "minimum measuring time")
	flag.Parse()
	runtime.GOMAXPROCS(1)
	var bodies [][]byte
	var size int
	for _, path := range flag.Args() {
		body, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		bodies = append(bodies, body)
		size += len(body)
	}
	parser := gofeed.NewParser()
	feeds, items, failed := 0, 0, 0
	start := time.Now()
	for time.Since(start).Seconds() < *seconds {
		for _, body := range bodies {
			feeds++
			feed, err := parser.Parse(bytes.NewReader(body))
			if err != nil {
				failed++
				continue
			}
			items += len(feed.Items)
		}
	}
	elapsed := time.Since(start).Seconds()
	rounds := feeds / len(bodies)
	out, _ := json.Marshal(map[string]any{"feeds": feeds, "items": items, "bytes": size * rounds, "failed": failed / rounds, "seconds": elapsed})
	fmt.Println(string(out))
}
