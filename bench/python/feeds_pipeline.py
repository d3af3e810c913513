"""The baseline of `ingest-bench feeds`: a plain Python feed pipeline.

Fetches each feed (urllib), parses it with feedparser, maps entries to the
same documents as ingest's rss type, and indexes them with opensearch-py's
bulk helper using the same chunk bounds. Prints {"seconds": ..., "items": ...}.
"""

import argparse
import hashlib
import json
import time
import urllib.request

import feedparser
from opensearchpy import OpenSearch, helpers


def actions(urls, index):
    for url in urls:
        with urllib.request.urlopen(url, timeout=30) as response:
            body = response.read()
        feed = feedparser.parse(body)
        feed_title = feed.feed.get("title")
        for entry in feed.entries:
            entry_id = entry.get("id") or entry.get("link") or entry.get("title", "")
            doc = {
                "guid": entry_id,
                "title": entry.get("title"),
                "link": entry.get("link"),
                "authors": [a.get("name") for a in entry.get("authors", []) if a.get("name")],
                "categories": [t.get("term") for t in entry.get("tags", [])],
                "summary": entry.get("summary"),
                "published": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", entry.published_parsed)
                if entry.get("published_parsed")
                else None,
                "feed_title": feed_title,
                "feed_url": url,
                "job_id": "python",
                "job_type": "rss",
            }
            yield {
                "_index": index,
                "_id": hashlib.sha256(f"{url}\n{entry_id}".encode()).hexdigest(),
                "_source": {k: v for k, v in doc.items() if v is not None},
            }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--urls", required=True)
    parser.add_argument("--opensearch", required=True)
    parser.add_argument("--index", required=True)
    parser.add_argument("--chunk-docs", type=int, default=5000)
    parser.add_argument("--chunk-bytes", type=int, default=5 * 1024 * 1024)
    args = parser.parse_args()
    with open(args.urls) as f:
        urls = [line.strip() for line in f if line.strip()]
    client = OpenSearch(args.opensearch, timeout=60)
    started = time.perf_counter()
    items, errors = helpers.bulk(
        client,
        actions(urls, args.index),
        chunk_size=args.chunk_docs,
        max_chunk_bytes=args.chunk_bytes,
        raise_on_error=True,
    )
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "items": items}))


if __name__ == "__main__":
    main()
