//! The rss type over a spread of feed dialects, hostile inputs, and a local
//! fixture server (conditional GET, changes, ttl), writing to local sinks.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap as AxumHeaders;
use axum::response::IntoResponse;
use axum::routing::get;
use ingest_sinks::{IndexSpec, Sinks};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::fence::Fence;
use crate::fetch::{FencedFetcher, FetchArgs, Fetcher};

const RSS2: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:content="http://purl.org/rss/1.0/modules/content/">
<channel><title>Example &amp; News</title><link>https://example.org/</link><ttl>30</ttl>
<item><title><![CDATA[First <b>story</b>]]></title><link>/stories/1</link><guid isPermaLink="false">story-1</guid>
  <dc:creator>Ada</dc:creator><category>science</category>
  <description>Caf&#233; &lt;p&gt;opens&lt;/p&gt;</description>
  <content:encoded><![CDATA[<p>Full text</p>]]></content:encoded>
  <pubDate>Tue, 10 Jun 2003 04:00:00 GMT</pubDate></item>
<item><title>No guid here</title><link>https://example.org/stories/2</link>
  <pubDate>Wed, 11 Jun 2003 09:39:21 +0200</pubDate></item>
</channel></rss>"#;

const ATOM: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Atom Example</title><id>urn:feed</id><updated>2003-12-13T18:30:02Z</updated>
<entry><title type="html">Atom &lt;i&gt;entry&lt;/i&gt;</title><link href="https://example.org/a/1"/><id>urn:uuid:1225c695</id>
<updated>2003-12-13T18:30:02Z</updated><published>2003-12-13T08:29:29-04:00</published><author><name>Bo</name></author>
<summary>Some text.</summary></entry></feed>"#;

const JSON_FEED: &str = r#"{"version": "https://jsonfeed.org/version/1.1", "title": "JSON Example",
"items": [{"id": "j1", "url": "https://example.org/j/1", "title": "JSON item", "content_html": "<p>Hi</p>",
"date_published": "2020-01-02T03:04:05Z", "tags": ["a", "b"], "authors": [{"name": "Cy"}]}]}"#;

const RSS1: &str = r#"<?xml version="1.0"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/">
<channel rdf:about="https://example.org/"><title>RDF Example</title><link>https://example.org/</link><description>d</description></channel>
<item rdf:about="https://example.org/r/1"><title>RDF item</title><link>https://example.org/r/1</link><dc:date>2004-05-06T07:08:09Z</dc:date></item>
</rdf:RDF>"#;

const RSS091: &str = r#"<?xml version="1.0"?><rss version="0.91"><channel><title>Old</title><link>https://example.org/</link>
<description>d</description><language>en</language><item><title>Old item</title><link>https://example.org/o/1</link></item></channel></rss>"#;

const LAUGHS: &str = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
<!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
<!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
<!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
<!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
<!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">]>
<rss version="2.0"><channel><title>&lol9;</title><item><title>&lol9;</title><guid>x</guid></item></channel></rss>"#;

fn base() -> Url {
    "https://example.org/feed.xml".parse().unwrap()
}

#[test]
fn dialects_map_to_documents() {
    let url = base();
    let feed = parse(RSS2.as_bytes(), &url).unwrap();
    let first = item(&feed, &feed.entries[0], &url, "id".into());
    assert_eq!(first.doc["title"], "First <b>story</b>");
    assert_eq!(first.doc["link"], "https://example.org/stories/1", "relative link resolved");
    assert_eq!(first.doc["authors"], json!(["Ada"]));
    assert_eq!(first.doc["categories"], json!(["science"]));
    assert_eq!(first.doc["summary"], "Café <p>opens</p>", "entities decoded");
    assert_eq!(first.doc["content"], "<p>Full text</p>");
    assert_eq!(first.doc["published"], "2003-06-10T04:00:00+00:00", "the item's date, not the fetch time");
    assert_eq!(first.doc["feed_title"], "Example & News");
    assert_eq!(feed.ttl, Some(30));
    let second = item(&feed, &feed.entries[1], &url, "id2".into());
    assert_eq!(second.doc["published"], "2003-06-11T07:39:21+00:00", "offset dates normalised");
    let again = parse(RSS2.as_bytes(), &url).unwrap();
    assert_eq!(entry_id(&url, &again.entries[1]), entry_id(&url, &feed.entries[1]), "no guid: still a stable id");

    let atom = parse(ATOM.as_bytes(), &url).unwrap();
    let entry = item(&atom, &atom.entries[0], &url, "a".into());
    assert_eq!(entry.doc["title"], "Atom <i>entry</i>");
    assert_eq!(entry.doc["published"], "2003-12-13T12:29:29+00:00");
    assert_eq!(entry.doc["authors"], json!(["Bo"]));

    let json_feed = parse(JSON_FEED.as_bytes(), &url).unwrap();
    let entry = item(&json_feed, &json_feed.entries[0], &url, "j".into());
    assert_eq!(
        (entry.doc["title"].as_str(), entry.doc["link"].as_str()),
        (Some("JSON item"), Some("https://example.org/j/1"))
    );
    assert_eq!(entry.doc["categories"], json!(["a", "b"]));

    let rdf = parse(RSS1.as_bytes(), &url).unwrap();
    assert_eq!(item(&rdf, &rdf.entries[0], &url, "r".into()).doc["published"], "2004-05-06T07:08:09+00:00");
    let old = parse(RSS091.as_bytes(), &url).unwrap();
    assert_eq!(item(&old, &old.entries[0], &url, "o".into()).doc["title"], "Old item");
}

#[test]
fn entity_bombs_and_broken_feeds_are_refused_or_contained() {
    let started = std::time::Instant::now();
    match parse(LAUGHS.as_bytes(), &base()) {
        Ok(feed) => {
            let title = feed.entries.first().and_then(|e| e.title.as_ref()).map_or(0, String::len);
            assert!(title < 1000, "entities were expanded: {title} bytes");
        }
        Err(error) => assert!(error.message.contains("not a feed"), "{}", error.message),
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    let truncated = &RSS2[..RSS2.len() / 2];
    let error = parse(truncated.as_bytes(), &base()).unwrap_err();
    assert!(error.message.contains("https://example.org/feed.xml is not a feed"), "{}", error.message);
    assert!(parse(b"<html><body>Not a feed</body></html>", &base()).is_err());
}

/// Serves `/feed` with an ETag; the body can change between requests.
async fn serve(body: Arc<Mutex<String>>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route(
            "/feed",
            get(|State(body): State<Arc<Mutex<String>>>, headers: AxumHeaders| async move {
                let body = body.lock().unwrap().clone();
                let etag = format!("\"{}\"", &sha256_hex(body.as_bytes())[..8]);
                if headers.get("if-none-match").is_some_and(|v| v.to_str().ok() == Some(etag.as_str())) {
                    return (axum::http::StatusCode::NOT_MODIFIED, [("etag", etag)], String::new()).into_response();
                }
                ([("etag", etag), ("content-type", "application/rss+xml".to_string())], body).into_response()
            }),
        )
        .with_state(body);
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test]
async fn polls_conditionally_and_indexes_each_entry_once() {
    let body = Arc::new(Mutex::new(RSS2.to_string()));
    let addr = serve(body.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let sinks = Arc::new(Sinks::local(dir.path(), std::time::Duration::from_secs(5)));
    let index = IndexSpec { name: "ingest-rss".into(), job_type: "rss".into(), mapping: Arc::new(json!({})) };
    let mut output = sinks.output("rss", "feed-1", index);
    let fetcher =
        Fetcher::new(&FetchArgs { fetch_allow: "127.0.0.1".parse().unwrap(), ..FetchArgs::default() }).unwrap();
    let fetcher = FencedFetcher::new(std::sync::Arc::new(fetcher), Fence::unbounded());
    let url: Url = format!("http://{addr}/feed").parse().unwrap();
    let mut job = Rss { url, articles: 0, headers: Vec::new(), filters: Filters::default() };
    let mut cursor = Value::Null;
    macro_rules! run {
        ($cursor:expr) => {{
            let cancel = CancellationToken::new();
            let mut ctx = RunContext { cursor: $cursor, cancel: &cancel, output: &mut output, fetch: &fetcher };
            job.run(&mut ctx).await
        }};
    }

    let first = run!(&mut cursor).unwrap();
    assert_eq!((first.report.items_fetched, first.report.items_written), (2, 2));
    assert_eq!(first.next, NextRun::AtLeast(Duration::from_secs(30 * 60)), "the feed's ttl");
    assert!(cursor["etag"].is_string());

    // Unchanged: a 304, nothing delivered.
    let second = run!(&mut cursor).unwrap();
    assert_eq!((second.report.items_fetched, second.report.bytes_fetched), (0, 0));

    // A new entry: only it is delivered.
    let changed = RSS2
        .replace("<item><title>No guid", "<item><title>Third</title><guid>story-3</guid></item><item><title>No guid");
    *body.lock().unwrap() = changed;
    let third = run!(&mut cursor).unwrap();
    assert_eq!(third.report.items_written, 1);

    let lines = std::fs::read_to_string(dir.path().join("documents/ingest-rss.jsonl")).unwrap();
    let docs: Vec<Value> = lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(docs.len(), 3, "{lines}");
    let ids: HashSet<&str> = docs.iter().filter_map(|d| d["_id"].as_str()).collect();
    assert_eq!(ids.len(), 3);
    let raw_key = docs[0]["_source"]["raw_key"].as_str().unwrap();
    assert!(raw_key.starts_with("rss/feed-1/") && raw_key.ends_with(".xml.gz"), "{raw_key}");
    assert!(dir.path().join("objects").join(raw_key).is_file());

    // A broken feed is a readable job error, and the cursor stays.
    *body.lock().unwrap() = "<rss><channel><item>".into();
    let before = cursor.clone();
    let error = run!(&mut cursor).unwrap_err();
    assert!(error.message.contains("is not a feed"), "{}", error.message);
    assert_eq!(cursor, before);
}

/// A feed whose entries link to pages on the same fixture server.
async fn serve_site() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let feed = format!(
        r#"<?xml version="1.0"?><rss version="2.0"><channel><title>Site</title>
        <item><title>With a page</title><link>http://{addr}/story</link><guid>p1</guid></item>
        <item><title>Gone</title><link>http://{addr}/missing</link><guid>p2</guid></item>
        </channel></rss>"#
    );
    let app = Router::new()
        .route("/feed", get(move || async move { feed }))
        .route(
            "/story",
            get(|| async {
                axum::response::Html(
                    r#"<html><head><meta property="og:image" content="/top.png"></head>
                    <body><nav><p>Menu</p></nav><article><h1>Big news</h1><p>Main text here.</p></article></body></html>"#,
                )
            }),
        )
        .route("/top.png", get(|| async { ([("content-type", "image/png")], b"\x89PNG\r\n\x1a\nfake".to_vec()) }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test]
async fn articles_are_extracted_and_archived_and_a_missing_page_is_noted() {
    let addr = serve_site().await;
    let mut harness = crate::jobs::testing::Harness::new(NAME);
    let url = format!("http://{addr}/feed").parse().unwrap();
    let mut job = Rss { url, articles: 10, headers: Vec::new(), filters: Filters::default() };
    let outcome = harness.run(&mut job).await.unwrap();
    assert_eq!(outcome.report.items_written, 2);
    let docs = harness.documents();
    let story = &docs[0]["_source"];
    let text = story["article_text"].as_str().unwrap();
    assert!(text.contains("Big news") && text.contains("Main text here."), "{text}");
    assert_eq!(story["article_image"], format!("http://{addr}/top.png"));
    let objects = harness.dir.path().join("objects");
    let image_key = story["article_image_key"].as_str().unwrap();
    assert!(image_key.ends_with(".png"));
    assert_eq!(std::fs::read(objects.join(image_key)).unwrap(), b"\x89PNG\r\n\x1a\nfake");
    let html_key = story["article_html_key"].as_str().unwrap();
    assert!(html_key.ends_with(".html.gz") && objects.join(html_key).is_file());
    let gone = &docs[1]["_source"];
    assert!(gone["article_error"].as_str().unwrap().contains("404"), "{gone}");
    assert!(gone.get("article_text").is_none());
}

/// A job's own User-Agent and headers reach the feed's site; its drop rule
/// leaves an entry out, counted as filtered and never delivered, and the
/// next read does not count it again.
#[tokio::test]
async fn user_agent_headers_and_filters_apply() {
    let seen: Arc<Mutex<Vec<AxumHeaders>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route(
            "/feed",
            get(|State(seen): State<Arc<Mutex<Vec<AxumHeaders>>>>, headers: AxumHeaders| async move {
                seen.lock().unwrap().push(headers);
                ([("content-type", "application/rss+xml")], RSS2).into_response()
            }),
        )
        .with_state(seen.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let params = json!({"url": format!("http://{addr}/feed"), "user_agent": "MyReader/1.0 (+https://example.org)",
        "headers": ["X-Token: abc", "Accept-Language: de"], "drop": ["title:no guid"]});
    let mut job = crate::jobs::testing::build::<Rss>(params, &Default::default()).unwrap();
    let mut harness = crate::jobs::testing::Harness::new(NAME);
    let first = harness.run(job.as_mut()).await.unwrap();
    assert_eq!((first.report.items_fetched, first.report.items_filtered, first.report.items_written), (2, 1, 1));
    let docs = harness.documents();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0]["_source"]["guid"], "story-1");
    let headers = seen.lock().unwrap()[0].clone();
    assert_eq!(headers["user-agent"], "MyReader/1.0 (+https://example.org)");
    assert_eq!((headers["x-token"].to_str().unwrap(), headers["accept-language"].to_str().unwrap()), ("abc", "de"));
    let again = harness.run(job.as_mut()).await.unwrap();
    assert_eq!((again.report.items_fetched, again.report.items_filtered), (0, 0), "seen, filtered or not");
}

/// More new entries than `max_articles`: all are indexed at once, and the
/// pages of the rest follow in later runs (their documents replaced, same
/// `_id`); a page that keeps failing is tried three times, then its entry
/// stays with the error. Nothing waits once every page is had.
#[tokio::test]
async fn pages_past_the_budget_follow_in_later_runs_and_failures_are_retried_a_few_times() {
    let missing_requests = Arc::new(Mutex::new(0u32));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let items: String = ["story?n=1", "missing", "story?n=3", "story?n=4"]
        .iter()
        .enumerate()
        .map(|(i, path)| {
            format!("<item><title>Entry {i}</title><link>http://{addr}/{path}</link><guid>p{i}</guid></item>")
        })
        .collect();
    let feed =
        format!(r#"<?xml version="1.0"?><rss version="2.0"><channel><title>Site</title>{items}</channel></rss>"#);
    let app = Router::new()
        .route("/feed", get(move || async move { feed }))
        .route(
            "/story",
            get(|| async {
                axum::response::Html("<html><body><article><h1>News</h1><p>Main text here.</p></article></body></html>")
            }),
        )
        .route(
            "/missing",
            get(|State(count): State<Arc<Mutex<u32>>>| async move {
                *count.lock().unwrap() += 1;
                axum::http::StatusCode::NOT_FOUND
            }),
        )
        .with_state(missing_requests.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut harness = crate::jobs::testing::Harness::new(NAME);
    let url = format!("http://{addr}/feed").parse().unwrap();
    let mut job = Rss { url, articles: 1, headers: Vec::new(), filters: Filters::default() };
    let latest = |harness: &crate::jobs::testing::Harness| {
        let mut by_guid = std::collections::BTreeMap::new();
        for doc in harness.documents() {
            by_guid.insert(doc["_source"]["guid"].as_str().unwrap_or_default().to_string(), doc["_source"].clone());
        }
        by_guid
    };
    let first = harness.run(&mut job).await.unwrap();
    assert_eq!(first.report.items_written, 4, "every entry indexed at once");
    let docs = latest(&harness);
    assert!(docs["p0"]["article_text"].is_string());
    assert!(docs["p2"].get("article_text").is_none() && docs["p3"].get("article_text").is_none());
    assert_eq!(harness.cursor["articles"].as_array().map(Vec::len), Some(3), "{}", harness.cursor);
    for _ in 0..5 {
        harness.run(&mut job).await.unwrap();
    }
    let docs = latest(&harness);
    for guid in ["p0", "p2", "p3"] {
        let text = docs[guid]["article_text"].as_str().unwrap_or_default();
        assert!(text.contains("Main text here."), "{guid}: {text}");
    }
    assert!(docs["p1"]["article_error"].as_str().unwrap_or_default().contains("404"), "{}", docs["p1"]);
    assert_eq!(*missing_requests.lock().unwrap(), 3, "three tries, then the entry stays without its page");
    assert!(harness.cursor.get("articles").is_none(), "nothing waits: {}", harness.cursor);
}
