"""The Python baseline of `ingest-bench parse`: feedparser over the given
files, on one core, repeated for at least --seconds. Prints
{"feeds": n, "items": n, "bytes": n, "seconds": s}."""

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
    feeds = items = size = 0
    started = time.perf_counter()
    while time.perf_counter() - started < args.seconds:
        for body in bodies:
            parsed = feedparser.parse(body)
            if parsed.bozo and not parsed.entries:
                raise SystemExit(f"feedparser could not read a feed: {parsed.bozo_exception}")
            feeds += 1
            items += len(parsed.entries)
            size += len(body)
    seconds = time.perf_counter() - started
    print(json.dumps({"feeds": feeds, "items": items, "bytes": size, "seconds": seconds}))


if __name__ == "__main__":
    main()
