//! The `_bulk` wire format: NDJSON requests and per-item results.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Document;

/// Appends the `index` action and the source of `doc` to a bulk body.
/// `index` (not `create`) with the deterministic id: writing a document
/// again replaces it, so redelivery never duplicates.
pub fn encode(doc: &Document, out: &mut Vec<u8>) {
    #[derive(Serialize)]
    struct Meta<'a> {
        _index: &'a str,
        _id: &'a str,
    }
    #[derive(Serialize)]
    struct Action<'a> {
        index: Meta<'a>,
    }
    let action = Action { index: Meta { _index: &doc.index, _id: &doc.id } };
    // Serializing two &str fields cannot fail.
    let _ = serde_json::to_writer(&mut *out, &action);
    out.push(b'\n');
    out.extend_from_slice(&doc.source);
    out.push(b'\n');
}

/// Bytes `encode` writes for `doc`, near enough for batching.
pub fn encoded_len(doc: &Document) -> usize {
    doc.source.len() + doc.index.len() + doc.id.len() + 36
}

/// What the server did with one document of a bulk request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemResult {
    Written,
    /// Refused for now (429 and the like): send again.
    Retry(String),
    /// Refused for good: goes to the dead letters.
    Rejected {
        status: u16,
        reason: String,
    },
}

/// The response fields we ask for with `filter_path`.
pub const FILTER_PATH: &[&str] = &["errors", "items.*.status", "items.*.error.type", "items.*.error.reason"];

#[derive(Deserialize)]
struct Response {
    #[serde(default)]
    errors: bool,
    #[serde(default)]
    items: Vec<std::collections::HashMap<String, ItemStatus>>,
}

#[derive(Deserialize)]
struct ItemStatus {
    status: u16,
    #[serde(default)]
    error: Option<Value>,
}

/// Parses a `_bulk` response for `expected` documents, in request order.
pub fn parse_response(body: &[u8], expected: usize) -> Result<Vec<ItemResult>, String> {
    let response: Response =
        serde_json::from_slice(body).map_err(|e| format!("unreadable _bulk response ({e}): {}", snippet(body)))?;
    if !response.errors && response.items.is_empty() {
        return Ok(vec![ItemResult::Written; expected]);
    }
    if response.items.len() != expected {
        return Err(format!("_bulk answered for {} of {expected} documents", response.items.len()));
    }
    Ok(response.items.into_iter().map(|item| item.into_values().next().map_or_else(missing, classify)).collect())
}

fn missing() -> ItemResult {
    ItemResult::Retry("empty item in the _bulk response".to_string())
}

fn classify(item: ItemStatus) -> ItemResult {
    match item.status {
        200..=299 => ItemResult::Written,
        429 | 503 => ItemResult::Retry(reason(item.status, item.error.as_ref())),
        status => ItemResult::Rejected { status, reason: reason(status, item.error.as_ref()) },
    }
}

fn reason(status: u16, error: Option<&Value>) -> String {
    let field = |name| error.and_then(|e| e.get(name)).and_then(Value::as_str);
    match (field("type"), field("reason")) {
        (Some(kind), Some(reason)) => format!("{status} {kind}: {reason}"),
        (Some(kind), None) => format!("{status} {kind}"),
        _ => format!("status {status}"),
    }
}

/// The start of a body, for error messages.
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    text.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: &str, source: &str) -> Document {
        Document { index: "ingest-demo".into(), id: id.into(), source: source.to_string().into() }
    }

    #[test]
    fn encodes_an_index_action_and_the_source_per_document() {
        let mut out = Vec::new();
        encode(&doc("a\"1", r#"{"x":1}"#), &mut out);
        encode(&doc("b", r#"{"y":"line\nbreak"}"#), &mut out);
        let text = String::from_utf8(out.clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        let action: Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(action, serde_json::json!({"index": {"_index": "ingest-demo", "_id": "a\"1"}}));
        assert_eq!(lines[3], r#"{"y":"line\nbreak"}"#);
        assert!(text.ends_with('\n'));
        let estimated: usize =
            [doc("a\"1", r#"{"x":1}"#), doc("b", r#"{"y":"line\nbreak"}"#)].iter().map(encoded_len).sum();
        assert!(estimated >= out.len(), "{estimated} < {}", out.len());
    }

    #[test]
    fn classifies_items_in_order() {
        let body = br#"{"errors":true,"items":[
            {"index":{"status":201}},
            {"index":{"status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}},
            {"index":{"status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [seq]"}}},
            {"index":{"status":200}}]}"#;
        let results = parse_response(body, 4).unwrap();
        assert_eq!(results[0], ItemResult::Written);
        assert_eq!(results[1], ItemResult::Retry("429 es_rejected_execution_exception: queue full".into()));
        assert_eq!(
            results[2],
            ItemResult::Rejected {
                status: 400,
                reason: "400 mapper_parsing_exception: failed to parse field [seq]".into()
            }
        );
        assert_eq!(results[3], ItemResult::Written);
    }

    #[test]
    fn a_short_or_unreadable_response_is_an_error() {
        assert!(parse_response(br#"{"errors":true,"items":[{"index":{"status":201}}]}"#, 2).is_err());
        let err = parse_response(b"<html>bad gateway</html>", 1).unwrap_err();
        assert!(err.contains("bad gateway"), "{err}");
        assert_eq!(parse_response(br#"{"errors":false}"#, 3).unwrap(), vec![ItemResult::Written; 3]);
    }
}
