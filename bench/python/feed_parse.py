"""The Python baseline of `ingest-bench parse`: feedparser over the given
files, on one core, repeated for at least --seconds. Prints
{"feeds": n, "items": n, "bytes": n, "failed": n, "seconds": s}; a feed
feedparser cannot read counts its bytes, no items, and one failure."""

import argparse
import json
import time

import feedparser


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    bodies = []
    for path in args.files:
        with open(path, "rb") as f:
            bodies.append(f.read())
    feeds = items = size = failed = 0
    rounds = 0
    started = time.perf_counter()
    while time.perf_counter() - started < args.seconds:
        rounds += 1
        for body in bodies:
            parsed = feedparser.parse(body)
            if parsed.bozo and not parsed.entries:
                failed += 1
            feeds += 1
            items += len(parsed.entries)
            size += len(body)
    seconds = time.perf_counter() - started
    print(json.dumps({"feeds": feeds, "items": items, "bytes": size, "failed": failed // max(rounds, 1),
                      "seconds": seconds}))


if __name__ == "__main__":
    main()
