//! A tolerant feed reader. XML feeds of every dialect — RSS 0.90 to 2.0
//! (whatever the `version` attribute says, with or without a namespace or a
//! `<channel>`), RSS 1.0/RDF, Atom 0.3 and 1.0 — are read into one model by
//! their elements' local names; namespaces only tell the vocabularies apart
//! (Dublin Core, DC terms, `content:`, Media RSS, iTunes, Atom inside RSS).
//! An odd element costs at most its field, never the feed; a document that
//! stops being well-formed keeps the entries read before (and says so).
//! JSON Feed goes through feed-rs. Why not feed-rs for XML too: it picks a
//! parser by root name, version and namespace and reads unknown dialects
//! as empty feeds (see ARCHITECTURE.md, "Feeds").
//!
//! No DTD is read: entities are the XML ones, numeric references and the
//! HTML names feeds use (`&nbsp;`, `&mdash;` …); any other is kept as
//! written, never expanded.

use std::rc::Rc;

use base64::Engine;
use chrono::{DateTime, Utc};
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;
use url::Url;

use super::dates::parse_date;

/// Deepest element nesting read (feeds need a handful).
const MAX_DEPTH: usize = 256;
/// Most elements read: a feed of 5 000 entries of 40 elements each fits;
/// a body of millions of empty elements stops here, its memory bounded.
const MAX_ELEMENTS: usize = 200_000;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Feed {
    pub title: Option<String>,
    /// The site's address.
    pub link: Option<String>,
    pub language: Option<String>,
    /// Minutes the feed asks to be left alone (RSS `ttl`).
    pub ttl: Option<u32>,
    pub entries: Vec<Entry>,
    /// Why reading stopped early, when it did (what was read before is kept).
    pub trouble: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Entry {
    /// The entry's own id: `guid`, Atom `id` or `rdf:about`.
    pub id: Option<String>,
    pub title: Option<String>,
    pub link: Option<String>,
    pub authors: Vec<Person>,
    pub categories: Vec<Category>,
    /// Summary (RSS `description`), HTML as the feed gives it.
    pub summary: Option<String>,
    /// Full content (`content:encoded`, Atom `content`), HTML.
    pub content: Option<String>,
    pub published: Option<DateTime<Utc>>,
    pub updated: Option<DateTime<Utc>>,
    pub enclosures: Vec<Enclosure>,
    /// Media RSS thumbnails.
    pub thumbnails: Vec<String>,
    /// The entry's image (`itunes:image`, an image `media:content`).
    pub image: Option<String>,
    /// `itunes:duration` as written.
    pub duration: Option<String>,
    /// The base relative links in its HTML resolve against (`xml:base`, the
    /// feed's address).
    pub base: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Person {
    pub name: Option<String>,
    pub email: Option<String>,
    pub uri: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Category {
    pub term: String,
    pub label: Option<String>,
    pub scheme: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Enclosure {
    pub url: String,
    pub mime_type: Option<String>,
    pub length: Option<u64>,
}

/// Parses a feed (XML of any dialect, or JSON Feed); relative links resolve
/// against `base`. Err only when nothing can be read at all.
pub fn parse(body: &[u8], base: &Url) -> Result<Feed, String> {
    let text = decode(body);
    let start = text.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    match start.chars().next() {
        Some('{') => json_feed(start.as_bytes(), base),
        Some('<') => {
            let tree = read_tree(start, base)?;
            let feed = interpret(&tree.node, tree.trouble)?;
            match &feed.trouble {
                Some(trouble) if feed.entries.is_empty() => Err(trouble.clone()),
                _ => Ok(feed),
            }
        }
        _ => Err("neither XML nor JSON".to_string()),
    }
}

/// The vocabulary an element belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ns {
    /// No namespace, or an RSS one (0.90, 1.0, userland's 2.0).
    Rss,
    Atom,
    Rdf,
    Dc,
    DcTerms,
    Content,
    Media,
    Itunes,
    Xhtml,
    Other,
}

impl Ns {
    fn of_uri(uri: &str) -> Ns {
        let uri = uri.trim().trim_end_matches(['/', '#']).to_ascii_lowercase();
        match uri.as_str() {
            "http://purl.org/rss/1.0"
            | "http://my.netscape.com/rdf/simple/0.9"
            | "http://backend.userland.com/rss2"
            | "http://backend.userland.com/rss"
            | "http://blogs.law.harvard.edu/tech/rss"
            | "http://purl.org/net/rss1.1" => Ns::Rss,
            "http://www.w3.org/2005/atom" | "http://purl.org/atom/ns" => Ns::Atom,
            "http://www.w3.org/1999/02/22-rdf-syntax-ns" => Ns::Rdf,
            "http://purl.org/dc/elements/1.1" => Ns::Dc,
            "http://purl.org/dc/terms" => Ns::DcTerms,
            "http://purl.org/rss/1.0/modules/content" => Ns::Content,
            "http://search.yahoo.com/mrss" | "http://video.search.yahoo.com/mrss" => Ns::Media,
            "http://www.itunes.com/dtds/podcast-1.0.dtd" => Ns::Itunes,
            "http://www.w3.org/1999/xhtml" => Ns::Xhtml,
            _ => Ns::Other,
        }
    }

    /// An undeclared prefix, as feeds use them.
    fn of_prefix(prefix: &str) -> Ns {
        match prefix.to_ascii_lowercase().as_str() {
            "dc" => Ns::Dc,
            "dcterms" => Ns::DcTerms,
            "content" => Ns::Content,
            "media" => Ns::Media,
            "itunes" => Ns::Itunes,
            "atom" | "atom10" | "atom03" => Ns::Atom,
            "rdf" => Ns::Rdf,
            "xhtml" => Ns::Xhtml,
            _ => Ns::Other,
        }
    }
}

#[derive(Debug, Default)]
struct Node {
    ns: Option<Ns>,
    /// Local name.
    name: String,
    /// Qualified name as written (for markup kept as HTML).
    qname: String,
    /// Attributes by local name (`xml:base` as such), values unescaped.
    attrs: Vec<(String, String)>,
    children: Vec<Child>,
    /// `xml:base` in force here (shared with the elements it covers).
    base: Option<Rc<Url>>,
    /// Its end tag was read (not closed by a document that stopped early).
    complete: bool,
}

#[derive(Debug)]
enum Child {
    Element(Node),
    Text(String),
}

struct Tree {
    node: Node,
    trouble: Option<String>,
}

impl Node {
    fn ns(&self) -> Ns {
        self.ns.unwrap_or(Ns::Rss)
    }

    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn elements(&self) -> impl Iterator<Item = &Node> {
        self.children.iter().filter_map(|c| match c {
            Child::Element(e) => Some(e),
            Child::Text(_) => None,
        })
    }

    /// Children named `name` in one of `namespaces`.
    fn all<'a>(&'a self, namespaces: &[Ns], name: &str) -> impl Iterator<Item = &'a Node> {
        self.elements().filter(move |e| e.name.eq_ignore_ascii_case(name) && namespaces.contains(&e.ns()))
    }

    fn first(&self, namespaces: &[Ns], name: &str) -> Option<&Node> {
        self.all(namespaces, name).next()
    }

    /// The text inside, markup dropped, trimmed; `None` when empty.
    fn text(&self) -> Option<String> {
        let mut text = String::new();
        self.collect_text(&mut text);
        let text = text.trim();
        (!text.is_empty()).then(|| text.to_string())
    }

    fn collect_text(&self, out: &mut String) {
        for child in &self.children {
            match child {
                Child::Text(t) => out.push_str(t),
                Child::Element(e) => e.collect_text(out),
            }
        }
    }

    /// The content as HTML: escaped HTML (the usual) comes out as it was
    /// meant; markup written unescaped inside (XHTML, or HTML a feed did not
    /// escape) is kept as markup; base64 (Atom 0.3 `mode="base64"`, a binary
    /// `type`) is decoded.
    fn html(&self) -> Option<String> {
        let mode = self.attr("mode").unwrap_or_default();
        let kind = self.attr("type").unwrap_or_default().to_ascii_lowercase();
        let base64 = mode.eq_ignore_ascii_case("base64")
            || (kind.contains('/') && !kind.starts_with("text/") && !kind.contains("xml") && !kind.contains("html"));
        if base64 {
            let raw: String = self.text()?.split_whitespace().collect();
            let bytes = base64::engine::general_purpose::STANDARD.decode(raw.as_bytes()).ok()?;
            let text = String::from_utf8_lossy(&bytes).trim().to_string();
            return (!text.is_empty()).then_some(text);
        }
        let mut html = String::new();
        for child in &self.children {
            match child {
                Child::Text(t) if kind == "text" => html.push_str(&escape(t)),
                Child::Text(t) => html.push_str(t),
                // An XHTML wrapper `<div>` is the container, not content.
                Child::Element(e) if kind == "xhtml" && self.elements().count() == 1 && e.name == "div" => {
                    e.inner_markup(&mut html)
                }
                Child::Element(e) => e.markup(&mut html),
            }
        }
        let html = html.trim();
        (!html.is_empty()).then(|| html.to_string())
    }

    fn markup(&self, out: &mut String) {
        let name = if self.ns() == Ns::Xhtml { self.name.as_str() } else { self.qname.as_str() };
        out.push('<');
        out.push_str(name);
        for (attr, value) in &self.attrs {
            if attr == "xml:base" || attr.starts_with("xmlns") {
                continue;
            }
            out.push_str(&format!(" {attr}=\"{}\"", escape(value).replace('"', "&quot;")));
        }
        if VOID.contains(&name.to_ascii_lowercase().as_str()) {
            // What an unclosed `<br>` swallowed follows it.
            out.push('>');
            self.inner_markup(out);
            return;
        }
        out.push('>');
        self.inner_markup(out);
        out.push_str(&format!("</{name}>"));
    }

    fn inner_markup(&self, out: &mut String) {
        for child in &self.children {
            match child {
                Child::Text(t) => out.push_str(&escape(t)),
                Child::Element(e) => e.markup(out),
            }
        }
    }

    /// `value` resolved against this element's base (an absolute URL is
    /// kept as written).
    fn resolve(&self, value: &str) -> String {
        let value = value.trim();
        match &self.base {
            Some(base) if Url::parse(value).is_err() => {
                base.join(value).map_or_else(|_| value.to_string(), String::from)
            }
            _ => value.to_string(),
        }
    }
}

const VOID: &[&str] = &["br", "img", "hr", "input", "meta", "link", "source", "wbr", "area", "col", "embed", "param"];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Reads the document into a tree, tolerating what can be tolerated: stray
/// `&`, unknown entities, end tags that do not match. Reading stops at the
/// first error it cannot pass; what was read stays.
fn read_tree(text: &str, base: &Url) -> Result<Tree, String> {
    let mut reader = NsReader::from_str(text);
    let config = reader.config_mut();
    config.expand_empty_elements = true;
    config.allow_dangling_amp = true;
    config.check_end_names = false;
    config.allow_unmatched_ends = true;
    let mut stack: Vec<Node> = vec![Node { base: Some(Rc::new(base.clone())), ..Node::default() }];
    let mut elements = 0usize;
    let mut trouble = None;
    loop {
        let (resolved, event) = match reader.read_resolved_event() {
            Ok(read) => read,
            Err(error) => {
                trouble = Some(format!("not well-formed XML at byte {}: {error}", reader.buffer_position()));
                break;
            }
        };
        match event {
            Event::Start(start) => {
                if stack.len() > MAX_DEPTH {
                    trouble = Some(format!("elements nest more than {MAX_DEPTH} deep"));
                    break;
                }
                elements += 1;
                if elements > MAX_ELEMENTS {
                    trouble = Some(format!("more than {MAX_ELEMENTS} elements"));
                    break;
                }
                let qname = start.name().as_ref().to_string();
                let name = start.local_name().as_ref().to_string();
                let ns = match resolved {
                    ResolveResult::Bound(ns) => Some(Ns::of_uri(ns.as_ref())),
                    ResolveResult::Unbound => None,
                    ResolveResult::Unknown(prefix) => Some(Ns::of_prefix(&prefix)),
                };
                let mut attrs = Vec::new();
                for attr in start.attributes().with_checks(false).flatten() {
                    let key = attr.key;
                    let local = key.local_name().as_ref().to_string();
                    let prefix = key.prefix().map(|p| p.as_ref().to_string());
                    let value = attr
                        .normalized_value_with(quick_xml::XmlVersion::Implicit1_0, 64, html_entity)
                        .map_or_else(|_| attr.value.to_string(), |v| v.into_owned());
                    let name = match prefix.as_deref() {
                        Some("xml") => format!("xml:{local}"),
                        Some("xmlns") => format!("xmlns:{local}"),
                        _ => local,
                    };
                    attrs.push((name, value));
                }
                let parent_base = stack.last().and_then(|p| p.base.clone());
                let base = match attrs.iter().find(|(n, _)| n == "xml:base") {
                    Some((_, value)) => match &parent_base {
                        Some(parent) => parent.join(value.trim()).ok().map(Rc::new).or(Some(parent.clone())),
                        None => Url::parse(value.trim()).ok().map(Rc::new),
                    },
                    None => parent_base,
                };
                stack.push(Node { ns, name, qname, attrs, children: Vec::new(), base, complete: false });
            }
            // An end tag closes its element and whatever was left open in
            // it (`<br>` in unescaped HTML); one that closes nothing open is
            // ignored, so a stray tag cannot shift the rest of the feed.
            Event::End(end) => {
                let name = end.name();
                let Some(at) = stack.iter().rposition(|n| n.qname == name.as_ref()).filter(|at| *at > 0) else {
                    continue;
                };
                while stack.len() > at {
                    let mut node = stack.pop().unwrap_or_default();
                    node.complete = true;
                    if let Some(parent) = stack.last_mut() {
                        parent.children.push(Child::Element(node));
                    }
                }
            }
            Event::Text(text) => push_text(&mut stack, &text.xml10_content()),
            Event::CData(data) => push_text(&mut stack, &data.xml10_content()),
            Event::GeneralRef(reference) => {
                let text = match reference.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    _ => {
                        let name = reference.xml10_content();
                        html_entity(&name).map_or_else(|| format!("&{name};"), str::to_string)
                    }
                };
                push_text(&mut stack, &text);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    // Close what the document left open (it stopped early).
    if trouble.is_none() && stack.len() > 2 {
        let open = stack.last().map(|n| n.qname.clone()).unwrap_or_default();
        trouble = Some(format!("the document ends inside <{open}>"));
    }
    while stack.len() > 1 {
        let node = stack.pop().unwrap_or_default();
        if let Some(parent) = stack.last_mut() {
            parent.children.push(Child::Element(node));
        }
    }
    let document = stack.pop().unwrap_or_default();
    let root = document.children.into_iter().find_map(|c| match c {
        Child::Element(e) => Some(e),
        Child::Text(_) => None,
    });
    match root {
        Some(node) => Ok(Tree { node, trouble }),
        None => Err(trouble.unwrap_or_else(|| "no XML element in it".to_string())),
    }
}

/// The document as text: in the encoding its BOM or XML declaration names
/// (UTF-8 when none does); bytes that are not of it become U+FFFD rather
/// than end the read. UTF-8 input is borrowed, not copied.
fn decode(body: &[u8]) -> std::borrow::Cow<'_, str> {
    let (bom, skip) = encoding_rs::Encoding::for_bom(body).map_or((None, 0), |(e, n)| (Some(e), n));
    let body = &body[skip..];
    let encoding = bom.or_else(|| declared_encoding(&body[..body.len().min(512)])).unwrap_or(encoding_rs::UTF_8);
    if encoding == encoding_rs::UTF_8 {
        return String::from_utf8_lossy(body);
    }
    encoding.decode_without_bom_handling(body).0
}

/// The `encoding` of an XML declaration at the start of `head`.
fn declared_encoding(head: &[u8]) -> Option<&'static encoding_rs::Encoding> {
    let head = String::from_utf8_lossy(head);
    let declaration = head.trim_start().strip_prefix("<?xml")?;
    let declaration = &declaration[..declaration.find("?>")?];
    let value = declaration.split_once("encoding")?.1.trim_start().strip_prefix('=')?.trim_start();
    let quote = value.chars().next().filter(|q| *q == '"' || *q == '\'')?;
    let label = &value[1..][..value[1..].find(quote)?];
    // A document in UTF-16 would not read this far as ASCII: a declaration
    // saying so is wrong, and UTF-8 is what it is.
    encoding_rs::Encoding::for_label(label.trim().as_bytes())
        .filter(|e| *e != encoding_rs::UTF_16LE && *e != encoding_rs::UTF_16BE)
}

fn push_text(stack: &mut [Node], text: &str) {
    if let Some(node) = stack.last_mut() {
        match node.children.last_mut() {
            Some(Child::Text(last)) => last.push_str(text),
            _ => node.children.push(Child::Text(text.to_string())),
        }
    }
}

/// The feed in the tree, whatever its dialect; a document that is no feed
/// (an HTML page, say) is an error.
fn interpret(root: &Node, trouble: Option<String>) -> Result<Feed, String> {
    let core = [Ns::Rss, Ns::Atom];
    let root_name = root.name.to_ascii_lowercase();
    // Where the feed's own fields are, and where its entries are.
    let (channel, entries): (&Node, Vec<&Node>) = match root_name.as_str() {
        "feed" => (root, root.all(&core, "entry").collect()),
        "entry" | "item" => (root, vec![root]),
        _ => {
            let channel = root.first(&core, "channel").unwrap_or(root);
            // RSS 2.0 keeps items in the channel; RSS 0.90/1.0 beside it.
            let mut items: Vec<&Node> = channel.all(&core, "item").chain(channel.all(&core, "entry")).collect();
            if !std::ptr::eq(channel, root) {
                items.extend(root.all(&core, "item"));
            }
            (channel, items)
        }
    };
    // Entries where no dialect puts them (RSS 1.1's <items>, a wrapper
    // element): found anywhere rather than read as an empty feed.
    let entries = if entries.is_empty() {
        let mut found = Vec::new();
        descendant_entries(root, &mut found);
        found
    } else {
        entries
    };
    let known = ["rss", "rdf", "feed", "channel", "entry", "item"].contains(&root_name.as_str());
    if !known && std::ptr::eq(channel, root) && entries.is_empty() {
        return Err(format!("the document is <{}>, not a feed", root.qname));
    }
    let feed_link = link_of(channel);
    Ok(Feed {
        title: channel.first(&core, "title").and_then(Node::text).or_else(|| text_of(channel, Ns::Dc, "title")),
        link: feed_link,
        language: channel
            .first(&core, "language")
            .and_then(Node::text)
            .or_else(|| text_of(channel, Ns::Dc, "language"))
            .or_else(|| root.attr("xml:lang").map(str::to_string)),
        ttl: channel.first(&core, "ttl").and_then(Node::text).and_then(|t| t.parse().ok()),
        // An entry cut off by the end of a broken document is not read half.
        entries: entries.into_iter().filter(|e| e.complete).map(entry).collect(),
        trouble,
    })
}

/// The `item` and `entry` elements under `node`, outermost only.
fn descendant_entries<'a>(node: &'a Node, found: &mut Vec<&'a Node>) {
    for child in node.elements() {
        let entry = ["item", "entry"].iter().any(|n| child.name.eq_ignore_ascii_case(n));
        if entry && matches!(child.ns(), Ns::Rss | Ns::Atom) {
            found.push(child);
        } else {
            descendant_entries(child, found);
        }
    }
}

fn text_of(node: &Node, ns: Ns, name: &str) -> Option<String> {
    node.first(&[ns], name).and_then(Node::text)
}

/// A page link: RSS `<link>` text, else an Atom `<link href>` that is
/// `alternate` (or has no `rel`), preferring HTML.
fn link_of(node: &Node) -> Option<String> {
    if let Some(link) = node.all(&[Ns::Rss], "link").find_map(|l| l.text()) {
        return Some(node.resolve(&link));
    }
    let alternates: Vec<&Node> = node
        .all(&[Ns::Atom, Ns::Rss], "link")
        .filter(|l| l.attr("href").is_some())
        .filter(|l| l.attr("rel").is_none_or(|r| r.eq_ignore_ascii_case("alternate")))
        .collect();
    let html = alternates.iter().find(|l| l.attr("type").is_some_and(|t| t.contains("html")));
    html.or(alternates.first()).and_then(|l| l.attr("href")).map(|href| node.resolve(href))
}

fn entry(node: &Node) -> Entry {
    let core = [Ns::Rss, Ns::Atom];
    let guid = node.first(&[Ns::Rss], "guid");
    let id = guid
        .and_then(Node::text)
        .or_else(|| node.first(&core, "id").and_then(Node::text))
        .or_else(|| node.attr("about").map(str::to_string).filter(|a| !a.trim().is_empty()));
    let mut link = link_of(node);
    // A permalink guid is the link when there is none.
    if link.is_none()
        && let Some(guid) = guid
        && !guid.attr("isPermaLink").is_some_and(|p| p.trim().eq_ignore_ascii_case("false"))
        && let Some(text) = guid.text().filter(|t| t.starts_with("http://") || t.starts_with("https://"))
    {
        link = Some(text);
    }
    let date = |ns: &[Ns], names: &[&str]| {
        names.iter().find_map(|name| node.all(ns, name).find_map(|d| d.text().as_deref().and_then(parse_date)))
    };
    let dc_date = date(&[Ns::Dc], &["date"]);
    let published = date(&core, &["pubDate", "published", "issued"])
        .or_else(|| date(&[Ns::DcTerms], &["issued", "created"]))
        .or(dc_date);
    let updated = date(&core, &["updated", "modified"]).or_else(|| date(&[Ns::DcTerms], &["modified"])).or(dc_date);
    let summary = node
        .first(&core, "description")
        .or_else(|| node.first(&core, "summary"))
        .or_else(|| node.first(&[Ns::Dc], "description"))
        .or_else(|| node.first(&[Ns::Itunes], "summary"))
        .and_then(Node::html);
    let content = node
        .first(&[Ns::Content], "encoded")
        .or_else(|| node.first(&[Ns::Atom], "content").filter(|c| c.attr("src").is_none()))
        .or_else(|| node.first(&[Ns::Rss], "content"))
        .or_else(|| node.first(&[Ns::Xhtml], "body"))
        .and_then(Node::html);
    let mut enclosures: Vec<Enclosure> = node
        .all(&[Ns::Rss], "enclosure")
        .filter_map(|e| {
            Some(Enclosure {
                url: node.resolve(e.attr("url")?),
                mime_type: e.attr("type").map(str::to_string),
                length: e.attr("length").and_then(|l| l.trim().parse().ok()),
            })
        })
        .collect();
    enclosures.extend(node.all(&core, "link").filter(|l| l.attr("rel") == Some("enclosure")).filter_map(|l| {
        Some(Enclosure {
            url: node.resolve(l.attr("href")?),
            mime_type: l.attr("type").map(str::to_string),
            length: l.attr("length").and_then(|n| n.trim().parse().ok()),
        })
    }));
    // Media RSS: directly in the item or in a media:group.
    let media: Vec<&Node> = node
        .elements()
        .filter(|e| e.ns() == Ns::Media)
        .flat_map(|e| if e.name == "group" { e.elements().collect() } else { vec![e] })
        .collect();
    let thumbnails: Vec<String> =
        media.iter().filter(|m| m.name == "thumbnail").filter_map(|m| m.attr("url")).map(|u| node.resolve(u)).collect();
    let media_image = media
        .iter()
        .filter(|m| m.name == "content")
        .find(|m| m.attr("medium") == Some("image") || m.attr("type").is_some_and(|t| t.starts_with("image/")))
        .and_then(|m| m.attr("url"));
    let image = node
        .first(&[Ns::Itunes], "image")
        .and_then(|i| i.attr("href").map(str::to_string).or_else(|| i.text()))
        .or_else(|| media_image.map(str::to_string))
        .or_else(|| {
            enclosures
                .iter()
                .find(|e| e.mime_type.as_deref().is_some_and(|t| t.starts_with("image/")))
                .map(|e| e.url.clone())
        })
        .map(|u| node.resolve(&u));
    Entry {
        id,
        title: node.first(&core, "title").and_then(title).or_else(|| text_of(node, Ns::Dc, "title")),
        link,
        authors: authors(node),
        categories: categories(node),
        summary: summary.map(|html| absolute_links(html, node.base.as_deref())),
        content: content.map(|html| absolute_links(html, node.base.as_deref())),
        published,
        updated,
        enclosures,
        thumbnails,
        image,
        duration: text_of(node, Ns::Itunes, "duration"),
        base: node.base.as_deref().map(Url::to_string),
    }
}

/// `html` with its relative `href` and `src` values resolved against
/// `base` (the entry's `xml:base`, else the feed's address), so links and
/// images in a summary work wherever the document is shown.
fn absolute_links(html: String, base: Option<&Url>) -> String {
    let Some(base) = base else { return html };
    if !html.contains('=') {
        return html;
    }
    let bytes = html.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut from = 0;
    while let Some(equals) = html[from..].find('=').map(|at| from + at) {
        from = equals + 1;
        // An `href=` or `src=` attribute: the name follows white space.
        let name_at = ["href", "src"].iter().find_map(|name| {
            let start = equals.checked_sub(name.len())?;
            let named = html.get(start..equals)?.eq_ignore_ascii_case(name);
            (named && start > 0 && bytes[start - 1].is_ascii_whitespace()).then_some(start)
        });
        let (Some(_), Some(quote)) = (name_at, bytes.get(equals + 1).filter(|q| **q == b'"' || **q == b'\'')) else {
            continue;
        };
        let value_at = equals + 2;
        let Some(len) = html[value_at..].find(*quote as char) else { break };
        let value = &html[value_at..value_at + len];
        from = value_at + len;
        let relative = !value.is_empty() && !value.starts_with('#') && Url::parse(value).is_err();
        if let (true, Ok(absolute)) = (relative, base.join(value)) {
            out.push_str(&html[copied..value_at]);
            out.push_str(absolute.as_str());
            copied = value_at + len;
        }
    }
    if copied == 0 {
        return html;
    }
    out.push_str(&html[copied..]);
    out
}

/// A title: text, or the HTML an Atom title of `type="html"`/`"xhtml"`
/// holds (kept as HTML, as other readers keep it), or base64 decoded.
fn title(node: &Node) -> Option<String> {
    let kind = node.attr("type").unwrap_or_default().to_ascii_lowercase();
    if kind.contains("html")
        || kind.contains('/')
        || node.attr("mode").is_some_and(|m| m.eq_ignore_ascii_case("base64"))
    {
        return node.html();
    }
    node.text()
}

fn authors(node: &Node) -> Vec<Person> {
    let mut people = Vec::new();
    for author in node.all(&[Ns::Rss, Ns::Atom], "author") {
        if author.elements().next().is_some() {
            // Atom: name, email, uri.
            let person = Person {
                name: author.first(&[Ns::Atom, Ns::Rss], "name").and_then(Node::text),
                email: author.first(&[Ns::Atom, Ns::Rss], "email").and_then(Node::text),
                uri: author
                    .first(&[Ns::Atom, Ns::Rss], "uri")
                    .or_else(|| author.first(&[Ns::Atom], "url"))
                    .and_then(Node::text),
            };
            if person != Person::default() {
                people.push(person);
            }
        } else if let Some(text) = author.text() {
            people.push(person_from_text(&text));
        }
    }
    for name in ["creator", "author"] {
        people.extend(node.all(&[Ns::Dc], name).filter_map(Node::text).map(|t| person_from_text(&t)));
    }
    if people.is_empty() {
        people.extend(text_of(node, Ns::Itunes, "author").map(|t| person_from_text(&t)));
    }
    people
}

/// `email (Name)`, `Name <email>`, an address alone, or a name alone.
fn person_from_text(text: &str) -> Person {
    let text = text.trim();
    if let Some((email, rest)) = text.split_once('(')
        && email.contains('@')
        && !email.trim().contains(' ')
    {
        let name = rest.trim_end().trim_end_matches(')').trim();
        return Person {
            name: (!name.is_empty()).then(|| name.to_string()),
            email: Some(email.trim().to_string()),
            uri: None,
        };
    }
    if let Some((name, rest)) = text.split_once('<')
        && let Some(email) = rest.strip_suffix('>')
        && email.contains('@')
    {
        let name = name.trim().trim_matches('"').trim();
        return Person {
            name: (!name.is_empty()).then(|| name.to_string()),
            email: Some(email.trim().to_string()),
            uri: None,
        };
    }
    if text.contains('@') && !text.contains(' ') {
        return Person { name: None, email: Some(text.trim_start_matches("mailto:").to_string()), uri: None };
    }
    Person { name: Some(text.to_string()), email: None, uri: None }
}

fn categories(node: &Node) -> Vec<Category> {
    let mut found = Vec::new();
    for category in node.all(&[Ns::Rss, Ns::Atom], "category") {
        let label = category.attr("label").map(str::trim).filter(|l| !l.is_empty()).map(str::to_string);
        let scheme = category.attr("scheme").or_else(|| category.attr("domain")).map(|s| s.trim().to_string());
        let term =
            category.attr("term").map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).or_else(|| category.text());
        if let Some(term) = term {
            found.push(Category { term, label, scheme });
        }
    }
    for subject in node.all(&[Ns::Dc], "subject").filter_map(Node::text) {
        found.push(Category { term: subject, label: None, scheme: None });
    }
    found
}

/// HTML entities feeds use without declaring them (RSS 0.91 had the DTD).
pub(super) fn html_entity(name: &str) -> Option<&'static str> {
    Some(match name {
        "amp" => "&",
        "lt" => "<",
        "gt" => ">",
        "quot" => "\"",
        "apos" => "'",
        "nbsp" => "\u{a0}",
        "iexcl" => "¡",
        "cent" => "¢",
        "pound" => "£",
        "euro" => "€",
        "yen" => "¥",
        "sect" => "§",
        "copy" => "©",
        "reg" => "®",
        "trade" => "™",
        "deg" => "°",
        "plusmn" => "±",
        "para" => "¶",
        "middot" => "·",
        "laquo" => "«",
        "raquo" => "»",
        "iquest" => "¿",
        "times" => "×",
        "divide" => "÷",
        "ndash" => "–",
        "mdash" => "—",
        "lsquo" => "‘",
        "rsquo" => "’",
        "sbquo" => "‚",
        "ldquo" => "“",
        "rdquo" => "”",
        "bdquo" => "„",
        "hellip" => "…",
        "bull" => "•",
        "dagger" => "†",
        "prime" => "′",
        "Agrave" => "À",
        "Aacute" => "Á",
        "Acirc" => "Â",
        "Auml" => "Ä",
        "Aring" => "Å",
        "Ccedil" => "Ç",
        "Egrave" => "È",
        "Eacute" => "É",
        "Ecirc" => "Ê",
        "Euml" => "Ë",
        "Iacute" => "Í",
        "Ntilde" => "Ñ",
        "Oacute" => "Ó",
        "Ocirc" => "Ô",
        "Ouml" => "Ö",
        "Oslash" => "Ø",
        "Uacute" => "Ú",
        "Uuml" => "Ü",
        "szlig" => "ß",
        "agrave" => "à",
        "aacute" => "á",
        "acirc" => "â",
        "atilde" => "ã",
        "auml" => "ä",
        "aring" => "å",
        "aelig" => "æ",
        "ccedil" => "ç",
        "egrave" => "è",
        "eacute" => "é",
        "ecirc" => "ê",
        "euml" => "ë",
        "igrave" => "ì",
        "iacute" => "í",
        "icirc" => "î",
        "iuml" => "ï",
        "ntilde" => "ñ",
        "ograve" => "ò",
        "oacute" => "ó",
        "ocirc" => "ô",
        "otilde" => "õ",
        "ouml" => "ö",
        "oslash" => "ø",
        "ugrave" => "ù",
        "uacute" => "ú",
        "ucirc" => "û",
        "uuml" => "ü",
        "yacute" => "ý",
        "yuml" => "ÿ",
        _ => return None,
    })
}

/// JSON Feed 1.0/1.1, read by feed-rs, in this model.
fn json_feed(body: &[u8], base: &Url) -> Result<Feed, String> {
    // An item without an id gets none here (not one made up by feed-rs):
    // its document id then comes from its link or content, as for XML.
    let feed = feed_rs::parser::Builder::new()
        .base_uri(Some(base.as_str()))
        .id_generator(|_, _, _| String::new())
        .build()
        .parse(body)
        .map_err(|e| e.to_string())?;
    let text =
        |t: &Option<feed_rs::model::Text>| t.as_ref().map(|t| t.content.trim().to_string()).filter(|t| !t.is_empty());
    let entries = feed
        .entries
        .iter()
        .map(|e| Entry {
            id: Some(e.id.clone()).filter(|id| !id.is_empty()),
            title: text(&e.title),
            link: e.links.first().map(|l| l.href.clone()),
            authors: e
                .authors
                .iter()
                .map(|p| Person {
                    name: p.name.clone().filter(|n| !n.is_empty()),
                    email: p.email.clone(),
                    uri: p.uri.clone(),
                })
                .collect(),
            categories: e
                .categories
                .iter()
                .map(|c| Category { term: c.term.clone(), label: c.label.clone(), scheme: c.scheme.clone() })
                .collect(),
            summary: text(&e.summary),
            content: e.content.as_ref().and_then(|c| c.body.clone()),
            published: e.published,
            updated: e.updated,
            enclosures: e
                .media
                .iter()
                .flat_map(|m| &m.content)
                .filter_map(|c| {
                    Some(Enclosure {
                        url: c.url.as_ref()?.to_string(),
                        mime_type: c.content_type.as_ref().map(ToString::to_string),
                        length: c.size,
                    })
                })
                .collect(),
            thumbnails: Vec::new(),
            image: None,
            duration: None,
            base: Some(base.to_string()),
        })
        .collect();
    Ok(Feed {
        title: text(&feed.title),
        link: feed.links.first().map(|l| l.href.clone()),
        language: feed.language.clone(),
        ttl: feed.ttl,
        entries,
        trouble: None,
    })
}

#[cfg(test)]
mod tests;
