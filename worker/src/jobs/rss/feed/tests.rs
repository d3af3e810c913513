//! The feed corpus in `worker/tests/feeds`: one small file per dialect and
//! per class of oddity, each with the documents it must give
//! (`<name>.json`: the feed's fields and, per entry, the document fields
//! that must be there — `null`: must be absent).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_json::Value;
use url::Url;

use super::parse;
use crate::jobs::rss::{entry_id, item};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/feeds")
}

fn base() -> Url {
    Url::parse("http://example.com/feeds/feed.xml").expect("url")
}

/// Every feed file with its expectations.
fn cases() -> Vec<(String, Vec<u8>, Value)> {
    let mut cases = Vec::new();
    for entry in std::fs::read_dir(corpus()).expect("corpus") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let stem = match (name.strip_suffix(".xml"), name.strip_suffix(".json.feed")) {
            (Some(stem), _) | (None, Some(stem)) => stem.to_string(),
            _ => continue,
        };
        let expected = std::fs::read(corpus().join(format!("{stem}.json"))).expect("expectations");
        let expected: Value = serde_json::from_slice(&expected).unwrap_or_else(|e| panic!("{stem}.json: {e}"));
        cases.push((name, std::fs::read(&path).expect("feed"), expected));
    }
    cases.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(cases.len() >= 15, "the corpus is there: {}", cases.len());
    cases
}

#[test]
fn every_feed_of_the_corpus_gives_its_documents() {
    let mut failures = Vec::new();
    for (name, body, expected) in cases() {
        let feed = match parse(&body, &base()) {
            Ok(feed) => feed,
            Err(error) => {
                failures.push(format!("{name}: not read: {error}"));
                continue;
            }
        };
        for (field, got) in [
            ("title", feed.title.clone().map(Value::from)),
            ("link", feed.link.clone().map(Value::from)),
            ("ttl", feed.ttl.map(Value::from)),
        ] {
            if let Some(want) = expected.get(field)
                && got.as_ref() != Some(want)
            {
                failures.push(format!("{name}: feed {field} is {got:?}, want {want}"));
            }
        }
        let broken = expected.get("trouble").and_then(Value::as_bool).unwrap_or(false);
        if feed.trouble.is_some() != broken {
            failures.push(format!("{name}: trouble {:?}, want {broken}", feed.trouble));
        }
        let want_entries = expected["entries"].as_array().cloned().unwrap_or_default();
        if feed.entries.len() != want_entries.len() {
            failures.push(format!("{name}: {} entries, want {}", feed.entries.len(), want_entries.len()));
            continue;
        }
        for (i, (entry, want)) in feed.entries.iter().zip(&want_entries).enumerate() {
            let doc = item(&feed, entry, &base(), entry_id(&base(), entry)).doc;
            for (field, want) in want.as_object().into_iter().flatten() {
                let got = doc.get(field).unwrap_or(&Value::Null);
                if got != want {
                    failures.push(format!("{name}: entry {i} {field} is {got}, want {want}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

/// Reading the same bytes again gives the same `_id`s, and no two entries of
/// a feed share one — with or without guids, ids or links.
#[test]
fn ids_are_stable_across_reads_and_distinct_within_a_feed() {
    for (name, body, _) in cases() {
        let ids = |body: &[u8]| -> Vec<String> {
            let feed = parse(body, &base()).expect("read");
            feed.entries.iter().map(|e| entry_id(&base(), e)).collect()
        };
        let first = ids(&body);
        assert_eq!(first, ids(&body), "{name}: ids changed between two reads");
        let distinct: HashSet<&String> = first.iter().collect();
        assert_eq!(distinct.len(), first.len(), "{name}: two entries share an id");
    }
}

#[test]
fn what_is_no_feed_is_an_error_and_an_empty_feed_reads_empty() {
    assert!(parse(b"", &base()).is_err());
    assert!(parse(b"hello", &base()).is_err());
    assert!(parse(b"<", &base()).is_err());
    let empty = parse(b"<rss version=\"2.0\"><channel><title>t</title></channel></rss>", &base()).expect("read");
    assert!(empty.entries.is_empty() && empty.trouble.is_none());
}

/// No DTD is read: an entity it declares stays as written, never expanded
/// (billion laughs and external entities cost nothing).
#[test]
fn declared_entities_are_never_expanded() {
    let body = br#"<?xml version="1.0"?>
<!DOCTYPE rss [<!ENTITY lol "lollollollollollollollollollol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY ext SYSTEM "file:///etc/passwd">]>
<rss version="2.0"><channel><title>t</title><item><title>&lol2; &ext;</title><guid>1</guid></item></channel></rss>"#;
    let feed = parse(body, &base()).expect("read");
    assert_eq!(feed.entries[0].title.as_deref(), Some("&lol2; &ext;"));
}

#[test]
fn relative_links_in_html_become_absolute_and_nothing_else_changes() {
    let base = Url::parse("http://example.com/blog/post/").expect("url");
    let html = r##"<a href="../x">x</a> <img SRC='i.png'> <a href="#top">t</a> <a data-href="keep">k</a> <a href="https://a.example/">a</a> 1=1"##;
    assert_eq!(
        super::absolute_links(html.to_string(), Some(&base)),
        r##"<a href="http://example.com/blog/x">x</a> <img SRC='http://example.com/blog/post/i.png'> <a href="#top">t</a> <a data-href="keep">k</a> <a href="https://a.example/">a</a> 1=1"##
    );
    assert_eq!(super::absolute_links("no links".to_string(), Some(&base)), "no links");
}

/// Millions of tiny elements (a 15 MB body of `<a/>`) cost bounded memory
/// and time: reading stops at the element cap, the entries before it stay.
#[test]
fn a_flood_of_elements_is_cut_off() {
    let mut body = String::from(
        "<rss version=\"2.0\"><channel><title>t</title><item><title>kept</title><guid>1</guid></item><item>",
    );
    body.push_str(&"<a/>".repeat(3_000_000));
    body.push_str("</item></channel></rss>");
    let started = std::time::Instant::now();
    let feed = parse(body.as_bytes(), &base()).expect("read up to the cap");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(feed.entries.len(), 1);
    assert!(feed.trouble.as_deref().unwrap_or_default().contains("elements"), "{:?}", feed.trouble);
}
