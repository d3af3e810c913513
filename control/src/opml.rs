//! OPML subscription lists (OPML 1.0 and 2.0, as feed readers export them):
//! the feeds of a document, and a document of feeds.

use quick_xml::Reader;
use quick_xml::escape::escape;
use quick_xml::events::{BytesStart, Event};

/// Largest document read.
pub const MAX_OPML_BYTES: usize = 5 * 1024 * 1024;
/// Most feeds read from one document.
pub const MAX_FEEDS: usize = 10_000;
/// Deepest outline nesting read.
const MAX_DEPTH: usize = 64;

/// One feed of a subscription list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Feed {
    pub url: String,
    /// `title`, else `text`; may be empty.
    pub title: String,
    /// The `text` (or `title`) of the outline enclosing it, if any.
    pub category: Option<String>,
}

/// The feeds of `text`, in document order: every outline with an `xmlUrl`
/// (whatever its `type`, which readers write inconsistently), nested
/// outlines flattened. An error says what is wrong with the document.
pub fn parse(text: &str) -> Result<Vec<Feed>, String> {
    if text.len() > MAX_OPML_BYTES {
        return Err(format!("at most {MAX_OPML_BYTES} bytes allowed, got {}", text.len()));
    }
    let mut reader = Reader::from_str(text);
    reader.config_mut().trim_text(true);
    let mut feeds = Vec::new();
    // The enclosing outlines' names, innermost last.
    let mut outlines: Vec<Option<String>> = Vec::new();
    let mut saw_opml = false;
    let mut opml_closed = false;
    loop {
        let event =
            reader.read_event().map_err(|e| format!("not well-formed XML at byte {}: {e}", reader.error_position()))?;
        match event {
            Event::Start(e) if e.local_name().as_ref() == "opml" => saw_opml = true,
            Event::Empty(e) if e.local_name().as_ref() == "opml" => (saw_opml, opml_closed) = (true, true),
            Event::End(e) if e.local_name().as_ref() == "opml" => opml_closed = true,
            Event::Start(e) if e.local_name().as_ref() == "outline" => {
                if outlines.len() >= MAX_DEPTH {
                    return Err(format!("outlines nested deeper than {MAX_DEPTH}"));
                }
                let outline = read_outline(&e)?;
                // A folder names the feeds inside it; a feed does not.
                let name = if outline.is_some() { None } else { outline_name(&e) };
                if let Some(feed) = outline {
                    push(&mut feeds, feed, &outlines)?;
                }
                outlines.push(name);
            }
            Event::Empty(e) if e.local_name().as_ref() == "outline" => {
                if let Some(feed) = read_outline(&e)? {
                    push(&mut feeds, feed, &outlines)?;
                }
            }
            Event::End(e) if e.local_name().as_ref() == "outline" => {
                outlines.pop();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !saw_opml {
        return Err("not an OPML document: no <opml> element".to_string());
    }
    if !opml_closed || !outlines.is_empty() {
        // A cut upload: importing part of it would look like success.
        return Err("not well-formed XML: the document ends before its elements are closed".to_string());
    }
    Ok(feeds)
}

fn push(feeds: &mut Vec<Feed>, mut feed: Feed, outlines: &[Option<String>]) -> Result<(), String> {
    if feeds.len() == MAX_FEEDS {
        return Err(format!("at most {MAX_FEEDS} feeds per document"));
    }
    feed.category = outlines.iter().rev().find_map(Clone::clone);
    feeds.push(feed);
    Ok(())
}

/// The feed an outline names, if it has an `xmlUrl`.
fn read_outline(e: &BytesStart<'_>) -> Result<Option<Feed>, String> {
    let Some(url) = attribute(e, "xmlUrl")? else { return Ok(None) };
    let title = attribute(e, "title")?.filter(|t| !t.is_empty()).or(attribute(e, "text")?).unwrap_or_default();
    Ok(Some(Feed { url: url.trim().to_string(), title: title.trim().to_string(), category: None }))
}

/// A folder outline's name (`text`, else `title`).
fn outline_name(e: &BytesStart<'_>) -> Option<String> {
    let name = attribute(e, "text").ok().flatten().or_else(|| attribute(e, "title").ok().flatten())?;
    Some(name.trim().to_string()).filter(|n| !n.is_empty())
}

/// An attribute's unescaped value; names compared case-insensitively
/// (`xmlurl` is seen in the wild).
fn attribute(e: &BytesStart<'_>, name: &str) -> Result<Option<String>, String> {
    for attr in e.attributes().with_checks(false) {
        let attr = attr.map_err(|e| format!("bad attribute: {e}"))?;
        if attr.key.local_name().as_ref().eq_ignore_ascii_case(name) {
            let value = attr
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|e| format!("bad attribute value: {e}"))?;
            return Ok(Some(value.into_owned()));
        }
    }
    Ok(None)
}

/// An OPML 2.0 document listing `feeds` as (title, url).
pub fn write<'a>(title: &str, feeds: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<opml version=\"2.0\">\n  <head>\n");
    out.push_str(&format!("    <title>{}</title>\n  </head>\n  <body>\n", escape(title)));
    for (name, url) in feeds {
        out.push_str(&format!(
            "    <outline type=\"rss\" text=\"{name}\" title=\"{name}\" xmlUrl=\"{url}\"/>\n",
            name = escape(name),
            url = escape(url)
        ));
    }
    out.push_str("  </body>\n</opml>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nested_outlines_of_opml_1_and_2() {
        // As feed readers write them: a folder, odd attribute case, entities,
        // a feed without a title, a plain link outline (no xmlUrl).
        let doc = r#"<?xml version="1.0" encoding="utf-8"?>
<opml version="1.0">
  <head><title>My feeds</title></head>
  <body>
    <outline text="Tech &amp; Code" title="Tech &amp; Code">
      <outline type="rss" text="Rust Blog" xmlUrl="https://blog.rust-lang.org/feed.xml" htmlUrl="https://blog.rust-lang.org/"/>
      <outline type="rss" text="LWN" xmlurl="https://lwn.net/headlines/rss"></outline>
      <outline text="Not a feed" type="link" url="https://example.org/"/>
    </outline>
    <outline type="rss" xmlUrl=" https://example.com/a?b=1&amp;c=2 "/>
  </body>
</opml>"#;
        let feeds = parse(doc).expect("valid OPML");
        let seen: Vec<(&str, &str, Option<&str>)> =
            feeds.iter().map(|f| (f.url.as_str(), f.title.as_str(), f.category.as_deref())).collect();
        assert_eq!(
            seen,
            [
                ("https://blog.rust-lang.org/feed.xml", "Rust Blog", Some("Tech & Code")),
                ("https://lwn.net/headlines/rss", "LWN", Some("Tech & Code")),
                ("https://example.com/a?b=1&c=2", "", None),
            ]
        );
    }

    #[test]
    fn what_it_writes_it_reads_back() {
        let doc =
            write("ingest <feeds>", [("A & B \"quoted\"", "https://x.test/feed?a=1&b=2"), ("C", "https://y.test/")]);
        let feeds = parse(&doc).expect("own output");
        assert_eq!(feeds.len(), 2);
        assert_eq!(
            (feeds[0].title.as_str(), feeds[0].url.as_str()),
            ("A & B \"quoted\"", "https://x.test/feed?a=1&b=2")
        );
    }

    #[test]
    fn bad_documents_say_why() {
        for (doc, says) in [
            ("<html><body/></html>", "no <opml>"),
            ("<opml><body><outline xmlUrl='a'>", "not well-formed"),
            ("just text", "no <opml>"),
        ] {
            let err = parse(doc).expect_err(doc);
            assert!(err.contains(says), "{doc}: {err}");
        }
        let deep = format!("<opml><body>{}</body></opml>", "<outline text='x'>".repeat(100));
        assert!(parse(&deep).expect_err("deep").contains("nested deeper"));
        let many = format!("<opml><body>{}</body></opml>", "<outline xmlUrl='https://a.test/'/>".repeat(MAX_FEEDS + 1));
        assert!(parse(&many).expect_err("many").contains("at most"));
    }
}
