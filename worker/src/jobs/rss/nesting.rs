//! How deep markup nests, estimated in one linear pass before it is parsed.
//! HTML parsers check the stack of open elements for every tag, so a page of
//! 40 000 nested elements costs seconds per page; feeds nest a dozen levels
//! at most. Inputs deeper than the limit are refused before parsing.
//!
//! The estimate follows the parser's stack closely enough for real pages:
//! void elements and (in XML) `<x/>` push nothing, raw-text elements
//! (`script`, `style`, …) are skipped whole, an end tag closes up to its
//! open element and is ignored when none is open, and the end tags HTML
//! implies (a `<p>` or `<li>` closing the previous one, a block closing an
//! open `<p>`) are applied.

use std::collections::HashMap;

/// Deepest nesting accepted; far beyond real pages and feeds.
pub const MAX_DEPTH: usize = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Html,
    Xml,
}

const VOID: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr", "param",
    "keygen", "basefont", "bgsound", "frame", "isindex",
];
const RAW_TEXT: &[&str] =
    &["script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes", "plaintext"];
/// Elements whose start closes an open element of the same name.
const SELF_CLOSING_SIBLINGS: &[&str] =
    &["p", "li", "dt", "dd", "option", "optgroup", "tr", "td", "th", "rb", "rt", "rp", "tbody", "thead", "tfoot"];
/// Elements whose start closes an open `<p>`.
pub(super) const CLOSES_P: &[&str] = &[
    "address",
    "article",
    "aside",
    "blockquote",
    "details",
    "div",
    "dl",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hgroup",
    "hr",
    "main",
    "menu",
    "nav",
    "ol",
    "pre",
    "section",
    "table",
    "ul",
];

/// `Err(depth)` as soon as the nesting passes `limit`; else the deepest level seen.
pub fn check(text: &[u8], dialect: Dialect, limit: usize) -> Result<usize, usize> {
    let mut stack: Vec<String> = Vec::new();
    let mut open: HashMap<String, usize> = HashMap::new();
    let mut deepest = 0;
    let mut i = 0;
    while let Some(offset) = memchr(b'<', &text[i..]) {
        i += offset + 1;
        match text.get(i) {
            Some(b'!') => {
                let end: &[u8] = if text[i..].starts_with(b"!--") {
                    b"-->"
                } else if text[i..].starts_with(b"![CDATA[") {
                    b"]]>"
                } else {
                    b">"
                };
                i = find(text, i, end).map_or(text.len(), |at| at + end.len());
            }
            Some(b'?') => i = find(text, i, b"?>").map_or(text.len(), |at| at + 2),
            Some(b'/') => {
                let name = tag_name(text, i + 1, dialect);
                i = tag_end(text, i).0;
                if open.get(&name).copied().unwrap_or(0) > 0 {
                    while let Some(top) = stack.pop() {
                        let done = top == name;
                        close(&mut open, top);
                        if done {
                            break;
                        }
                    }
                }
            }
            Some(c) if c.is_ascii_alphabetic() => {
                let name = tag_name(text, i, dialect);
                let (end, self_closed) = tag_end(text, i);
                i = end;
                if dialect == Dialect::Html {
                    if VOID.contains(&name.as_str()) {
                        continue;
                    }
                    if RAW_TEXT.contains(&name.as_str()) {
                        let closing = format!("</{name}");
                        i = find_ascii_case_insensitive(text, i, closing.as_bytes()).unwrap_or(text.len());
                        continue;
                    }
                    let implied = if SELF_CLOSING_SIBLINGS.contains(&name.as_str()) {
                        Some(name.as_str())
                    } else if CLOSES_P.contains(&name.as_str()) {
                        Some("p")
                    } else {
                        None
                    };
                    if let Some(implied) = implied
                        && open.get(implied).copied().unwrap_or(0) > 0
                    {
                        while let Some(top) = stack.pop() {
                            let done = top == implied;
                            close(&mut open, top);
                            if done {
                                break;
                            }
                        }
                    }
                } else if self_closed {
                    continue;
                }
                *open.entry(name.clone()).or_default() += 1;
                stack.push(name);
                deepest = deepest.max(stack.len());
                if stack.len() > limit {
                    return Err(stack.len());
                }
            }
            _ => {}
        }
    }
    Ok(deepest)
}

fn close(open: &mut HashMap<String, usize>, name: String) {
    if let Some(count) = open.get_mut(&name) {
        *count = count.saturating_sub(1);
    }
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|b| *b == needle)
}

fn find(text: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    text.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|at| from + at)
}

fn find_ascii_case_insensitive(text: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    text.get(from..)?.windows(needle.len()).position(|w| w.eq_ignore_ascii_case(needle)).map(|at| from + at)
}

/// The element name at `from` (lowercased in HTML).
fn tag_name(text: &[u8], from: usize, dialect: Dialect) -> String {
    let name: Vec<u8> = text
        .get(from..)
        .unwrap_or_default()
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'-' | b'_' | b'.'))
        .take(64)
        .copied()
        .collect();
    let name = String::from_utf8_lossy(&name).into_owned();
    if dialect == Dialect::Html { name.to_ascii_lowercase() } else { name }
}

/// Where the tag starting before `from` ends (after its `>`, quotes
/// respected), and whether it ended with `/>`.
fn tag_end(text: &[u8], from: usize) -> (usize, bool) {
    let mut quote = None;
    let mut i = from;
    while i < text.len() {
        let b = text[i];
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'"' || b == b'\'' => quote = Some(b),
            None if b == b'>' => return (i + 1, i > from && text[i - 1] == b'/'),
            None => {}
        }
        i += 1;
    }
    (text.len(), false)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn real_pages_and_feeds_are_shallow() {
        let page = br#"<!doctype html><html><head><title>a <b> title</title><meta charset=utf-8>
            <script>if (a < b && c > d) { document.write("<div><div><div>") }</script></head>
            <body><div class="x > y"><p>one<p>two<ul><li>a<li>b<li>c</ul><img src=x><br>
            <!-- <div><div> --><p>three</div></body></html>"#;
        assert_eq!(check(page, Dialect::Html, MAX_DEPTH), Ok(5));
        // 10 000 paragraphs and list items never closed: siblings, not nesting.
        let mut unclosed = String::from("<html><body><div>");
        for _ in 0..10_000 {
            unclosed.push_str("<p>text <li>item ");
        }
        assert!(check(unclosed.as_bytes(), Dialect::Html, MAX_DEPTH).is_ok());
        let feed = br#"<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>
            <item><title>a</title><enclosure url="x" length="1"/><description><![CDATA[<div><div>]]></description></item>
            </channel></rss>"#;
        assert_eq!(check(feed, Dialect::Xml, MAX_DEPTH), Ok(4));
    }

    #[test]
    fn hostile_nesting_is_refused_at_once() {
        let deep = "<div>".repeat(40_000) + &"<p>x</p>".repeat(40_000);
        let started = Instant::now();
        assert_eq!(check(deep.as_bytes(), Dialect::Html, MAX_DEPTH), Err(MAX_DEPTH + 1));
        let spans = "<span><b><i>".repeat(20_000);
        assert!(check(spans.as_bytes(), Dialect::Html, MAX_DEPTH).is_err());
        // Stray end tags do not hide depth.
        let stray = "<div></nope>".repeat(2_000);
        assert!(check(stray.as_bytes(), Dialect::Html, MAX_DEPTH).is_err());
        let xml = "<a>".repeat(100_000);
        assert!(check(xml.as_bytes(), Dialect::Xml, MAX_DEPTH).is_err());
        assert!(started.elapsed() < Duration::from_secs(1), "linear: {:?}", started.elapsed());
        // Unterminated constructs end the scan, never loop.
        for odd in ["<", "<!--", "<![CDATA[", "<?", "</", "<a \"", "<script>"] {
            assert!(check(odd.as_bytes(), Dialect::Html, MAX_DEPTH).is_ok(), "{odd}");
        }
    }
}
