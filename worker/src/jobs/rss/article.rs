//! Article extraction for feed entries, as the service this one replaces
//! did: the linked page's main text and top image. The page's HTML (gzipped)
//! and the image are archived through the object sink; the document gets
//! the text and the keys.

use scraper::{ElementRef, Html, Selector};
use url::Url;

use super::nesting::{self, Dialect};

/// Longest main text kept, in characters.
const MAX_TEXT: usize = 100_000;
/// Most bytes of a page read for extraction (the main text comes early).
pub const MAX_HTML_BYTES: usize = 2 * 1024 * 1024;

/// What a page yields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Article {
    pub title: Option<String>,
    pub text: String,
    /// Absolute URL of the top image.
    pub image: Option<Url>,
}

fn selector(css: &str) -> Option<Selector> {
    Selector::parse(css).ok()
}

/// Extracts the main text and top image of an HTML page. The main text is
/// that of the `<article>` (else `<main>`, else the body) paragraphs and
/// headings; the top image is `og:image` / `twitter:image`, else the first
/// image of the main element. Only the first [`MAX_HTML_BYTES`] are read;
/// a page nesting deeper than [`nesting::MAX_DEPTH`] elements is refused
/// (parsing it would take seconds). CPU-heavy: call it through `crate::cpu`.
pub fn extract(html: &[u8], page: &Url) -> Result<Article, String> {
    let html = &html[..html.len().min(MAX_HTML_BYTES)];
    if let Err(depth) = nesting::check(html, Dialect::Html, nesting::MAX_DEPTH) {
        return Err(format!(
            "the page nests elements more than {} deep (at least {depth}): not extracted",
            nesting::MAX_DEPTH
        ));
    }
    let html = String::from_utf8_lossy(html);
    let document = Html::parse_document(&html);
    let main = ["article", "main", "[role=main]", "body"]
        .iter()
        .filter_map(|css| selector(css))
        .find_map(|s| document.select(&s).next());
    let text = main.map(main_text).unwrap_or_default();
    let meta_image = ["meta[property='og:image']", "meta[name='twitter:image']", "meta[property='twitter:image']"]
        .iter()
        .filter_map(|css| selector(css))
        .find_map(|s| document.select(&s).find_map(|m| m.value().attr("content").map(str::to_string)));
    let first_image = || {
        let img = selector("img[src]")?;
        main?.select(&img).find_map(|i| i.value().attr("src").map(str::to_string))
    };
    let image = meta_image
        .or_else(first_image)
        .and_then(|src| page.join(src.trim()).ok())
        .filter(|u| matches!(u.scheme(), "http" | "https"));
    let title = selector("meta[property='og:title']")
        .and_then(|s| document.select(&s).find_map(|m| m.value().attr("content").map(str::to_string)))
        .or_else(|| {
            let s = selector("title")?;
            document.select(&s).next().map(|t| t.text().collect::<String>())
        })
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    Ok(Article { title, text, image })
}

/// The text of the block elements under `main`, in document order, each
/// block once (a `<p>` inside an `<li>` is part of the `<li>`). One walk
/// of the tree: linear in its size whatever the nesting.
fn main_text(main: ElementRef<'_>) -> String {
    let mut text = String::new();
    let mut pending: Vec<_> = main.children().rev().collect();
    while let Some(node) = pending.pop() {
        let Some(element) = ElementRef::wrap(node) else { continue };
        if !is_block(&element) {
            pending.extend(node.children().rev());
            continue;
        }
        let words: Vec<&str> = element.text().flat_map(str::split_whitespace).collect();
        if words.is_empty() {
            continue;
        }
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        text.push_str(&words.join(" "));
        if text.len() > MAX_TEXT {
            let mut end = MAX_TEXT;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            break;
        }
    }
    text
}

fn is_block(element: &ElementRef<'_>) -> bool {
    matches!(element.value().name(), "p" | "h1" | "h2" | "h3" | "h4" | "li" | "blockquote" | "pre")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"<!doctype html><html><head><title>Fallback title</title>
        <meta property="og:image" content="/images/top.jpg"><script>var tracking = 1;</script></head>
        <body><nav><p>Home | About</p></nav>
        <article><h1>The headline</h1><p>First   paragraph,
        with words.</p><ul><li><p>Nested item</p></li></ul><script>ignored()</script>
        <p>Second paragraph &amp; more.</p><img src="inline.png"></article>
        <footer><p>Copyright</p></footer></body></html>"#;

    #[test]
    fn takes_the_article_text_and_the_top_image() {
        let page: Url = "https://example.org/news/story.html".parse().unwrap();
        let article = extract(PAGE.as_bytes(), &page).unwrap();
        assert_eq!(
            article.text,
            "The headline\n\nFirst paragraph, with words.\n\nNested item\n\nSecond paragraph & more."
        );
        assert_eq!(article.image.unwrap().as_str(), "https://example.org/images/top.jpg");
        assert_eq!(article.title.as_deref(), Some("Fallback title"));
    }

    #[test]
    fn falls_back_to_the_first_image_and_the_body() {
        let page: Url = "https://example.org/a/".parse().unwrap();
        let article =
            extract(b"<html><body><p>Only text</p><img src='pic.png'><img src='b.png'></body></html>", &page).unwrap();
        assert_eq!(article.text, "Only text");
        assert_eq!(article.image.unwrap().as_str(), "https://example.org/a/pic.png");
        let none = extract(b"<html><body><img src='javascript:alert(1)'></body></html>", &page).unwrap();
        assert_eq!((none.text.as_str(), none.image), ("", None));
    }

    /// Pages built to be slow: each is refused or extracted within a second.
    #[test]
    fn hostile_pages_cost_little() {
        let page: Url = "https://example.org/".parse().unwrap();
        let deep = "<div>".repeat(40_000) + &"<p>x</p>".repeat(40_000);
        let wide = "<p>".to_string() + &"<b>word</b> ".repeat(200_000);
        let nested_blocks = "<ul>".to_string() + &"<li><blockquote>".repeat(200) + "text";
        let huge = "<p>".to_string() + &"a".repeat(20 * 1024 * 1024);
        for (name, html) in [("deep", deep), ("wide", wide), ("nested blocks", nested_blocks), ("huge", huge)] {
            let started = std::time::Instant::now();
            let result = extract(html.as_bytes(), &page);
            let took = started.elapsed();
            assert!(took < std::time::Duration::from_secs(3), "{name}: {took:?}");
            match name {
                "deep" => assert!(result.unwrap_err().contains("nests elements more than 512 deep")),
                "huge" => assert!(result.unwrap().text.len() <= MAX_TEXT),
                _ => assert!(!result.unwrap().text.is_empty(), "{name}"),
            }
        }
    }
}
