//! The HTML of a feed entry, made safe to show and made plain: `safe` keeps
//! the markup an article needs and drops scripts, styles, event handlers and
//! `javascript:` links (ammonia); `text` is what a reader sees, tags gone,
//! entities decoded, white space collapsed.

/// HTML that is safe to put in a page.
pub fn safe(html: &str) -> String {
    if !html.contains(['<', '&']) {
        return html.to_string();
    }
    ammonia::clean(html)
}

/// The text of `html` in paragraphs: block elements (`p`, headings, list
/// items, `br`, …) end one, paragraphs are separated by a blank line.
pub fn paragraphs(html: &str) -> String {
    scan(html, true).split('\n').map(collapse).filter(|p| !p.is_empty()).collect::<Vec<_>>().join("\n\n")
}

/// The text of `html`: tags dropped (and the contents of scripts, styles
/// and templates), character references decoded, white space collapsed. A
/// linear scan, not a parse: text is for searching and previews, `safe` is
/// what gets shown as HTML.
pub fn text(html: &str) -> String {
    collapse(&scan(html, false))
}

fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Tags out, references decoded; `blocks`: a block element's tag becomes a
/// line break (else a space).
fn scan(html: &str, blocks: bool) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    // Only tags break lines when `blocks`: line breaks in the text are spaces.
    let push_text = |out: &mut String, text: &str| {
        if blocks {
            out.extend(text.chars().map(|c| if c == '\n' || c == '\r' { ' ' } else { c }));
        } else {
            out.push_str(text);
        }
    };
    while let Some(at) = rest.find(['<', '&']) {
        push_text(&mut out, &rest[..at]);
        rest = &rest[at..];
        if rest.starts_with('&') {
            let (decoded, used) = reference(rest);
            out.push_str(decoded.as_deref().unwrap_or("&"));
            rest = &rest[used..];
            continue;
        }
        // Not a tag: `<` before anything but a name, `/`, `!` or `?` is text.
        if !rest[1..].starts_with(|c: char| c.is_ascii_alphabetic() || matches!(c, '/' | '!' | '?')) {
            out.push('<');
            rest = &rest[1..];
            continue;
        }
        // A tag (or a comment): skipped, with the content of code elements.
        let end =
            if rest.starts_with("<!--") { rest.find("-->").map(|e| e + 3) } else { rest.find('>').map(|e| e + 1) };
        let Some(end) = end else {
            push_text(&mut out, rest);
            rest = "";
            break;
        };
        let tag = rest[1..end - 1].trim_start().to_ascii_lowercase();
        rest = &rest[end..];
        let closing = tag.starts_with('/');
        let name: String = tag.trim_start_matches('/').chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        if !closing && ["script", "style", "template", "noscript"].contains(&name.as_str()) {
            let close = format!("</{name}");
            let lower = rest.to_ascii_lowercase();
            rest = lower.find(&close).map_or("", |at| &rest[at..]);
            continue;
        }
        // Block ends and breaks separate words (or paragraphs).
        let block = BREAKS.contains(&name.as_str()) || super::nesting::CLOSES_P.contains(&name.as_str());
        out.push(if blocks && block { '\n' } else { ' ' });
    }
    push_text(&mut out, rest);
    out
}

/// Tags that end a paragraph: the HTML block elements (those that close an
/// open `<p>`), and these.
const BREAKS: &[&str] = &["p", "br", "li", "tr", "dd", "dt", "figcaption"];

/// The character reference at the start of `text` and the bytes it takes;
/// `None` when it is none (a lone `&`).
fn reference(text: &str) -> (Option<String>, usize) {
    let Some(end) = text[1..].find(';').map(|e| e + 1).filter(|e| *e <= 32) else { return (None, 1) };
    let name = &text[1..end];
    let decoded = match name.strip_prefix('#') {
        Some(number) => {
            let code = match number.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok(),
                None => number.parse().ok(),
            };
            code.and_then(char::from_u32).map(String::from)
        }
        None => super::feed::html_entity(name).map(String::from),
    };
    match decoded {
        Some(decoded) => (Some(decoded), end + 1),
        None => (None, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_styles_and_handlers_go_text_stays() {
        let html = r#"<p onclick="steal()">Hello <b>world</b> &amp; friends</p><script>alert(1)</script>
            <style>p{}</style><a href="javascript:alert(1)">x</a><img src="http://example.com/a.png" onerror="e()">"#;
        let cleaned = safe(html);
        for gone in ["onclick", "script", "alert", "style", "onerror", "javascript"] {
            assert!(!cleaned.contains(gone), "{gone} left in {cleaned}");
        }
        assert!(cleaned.contains("<b>world</b>") && cleaned.contains("http://example.com/a.png"), "{cleaned}");
        assert_eq!(text(html), "Hello world & friends x");
        assert_eq!(
            text("<p>caf&eacute; &#233; &#xE9; &bogus; AT&T</p><!-- c --><p>next</p>"),
            "café é é &bogus; AT&T next"
        );
        assert_eq!(text("a <b>unclosed"), "a unclosed");
        assert_eq!(text("a < b and c > d"), "a < b and c > d");
        assert_eq!(
            paragraphs("<h1>Title</h1><p>One  <b>bold</b>\n word.</p><ul><li>A</li><li>B</li></ul>x<br>y"),
            "Title\n\nOne bold word.\n\nA\n\nB\n\nx\n\ny"
        );
        assert_eq!(text("  plain\n text "), "plain text");
        assert_eq!(safe("plain"), "plain");
    }
}
