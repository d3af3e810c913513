//! Which search server answers: Elasticsearch or OpenSearch, and its
//! version. Versions that lack what the sink uses (composable index
//! templates: Elasticsearch 7.8, OpenSearch 1.0) are refused.

use std::fmt;

use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Product {
    Elasticsearch,
    OpenSearch,
}

/// The server the sink writes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    pub product: Product,
    /// major, minor, patch
    pub version: (u32, u32, u32),
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (major, minor, patch) = self.version;
        let name = match self.product {
            Product::Elasticsearch => "Elasticsearch",
            Product::OpenSearch => "OpenSearch",
        };
        write!(f, "{name} {major}.{minor}.{patch}")
    }
}

impl Server {
    /// `mapping` in this server's words: a `flattened` field (Elasticsearch
    /// 7.3+) is a `flat_object` on OpenSearch 2.7+ (which takes no
    /// parameters), and a stored, unindexed object on older OpenSearch.
    pub fn mapping(&self, mapping: &Value) -> Value {
        match mapping {
            Value::Object(fields) if fields.get("type").and_then(Value::as_str) == Some("flattened") => {
                match self.product {
                    Product::Elasticsearch => mapping.clone(),
                    Product::OpenSearch if self.version >= (2, 7, 0) => serde_json::json!({"type": "flat_object"}),
                    Product::OpenSearch => serde_json::json!({"type": "object", "enabled": false}),
                }
            }
            Value::Object(fields) => Value::Object(fields.iter().map(|(k, v)| (k.clone(), self.mapping(v))).collect()),
            other => other.clone(),
        }
    }

    /// From the answer to `GET /` (`{"version": {"number", "distribution"}}`)
    /// or to `GET /_nodes/_local` (`{"nodes": {<id>: {"version"}}}`), and the
    /// `X-Elastic-Product` header Elasticsearch 7.14+ sends with every answer.
    pub fn from_answer(body: &Value, elastic_product_header: Option<&str>) -> Result<Self, String> {
        let (number, product) = match body.pointer("/version/number").and_then(Value::as_str) {
            // `GET /`: OpenSearch names itself in `distribution`, Elasticsearch never does.
            Some(number) => match body.pointer("/version/distribution").and_then(Value::as_str) {
                Some("opensearch") => (number, Product::OpenSearch),
                _ => (number, Product::Elasticsearch),
            },
            None => {
                let node = body.get("nodes").and_then(Value::as_object).and_then(|nodes| nodes.values().next());
                let number = node.and_then(|n| n.get("version")).and_then(Value::as_str);
                let number = number.ok_or("the answer names no version")?;
                // Elasticsearch 7.14+ sends its product header; without it,
                // OpenSearch (1.x to 3.x) is the server whose nodes answer.
                let opensearch = elastic_product_header != Some("Elasticsearch")
                    && matches!(number.split('.').next(), Some("1" | "2" | "3"));
                (number, if opensearch { Product::OpenSearch } else { Product::Elasticsearch })
            }
        };
        Ok(Self { product, version: parse_version(number)? })
    }

    /// An error naming what is missing when this server cannot work.
    pub fn check_supported(&self) -> Result<(), String> {
        let ok = match self.product {
            Product::Elasticsearch => self.version >= (7, 8, 0),
            Product::OpenSearch => self.version >= (1, 0, 0),
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "{self} is not supported: ingest needs composable index templates \
                 (Elasticsearch 7.8 or newer, OpenSearch 1.0 or newer); point --elasticsearch-url at a newer cluster"
            ))
        }
    }
}

/// "9.1.0", "8.19.0-SNAPSHOT", "2.19.6" → (major, minor, patch).
fn parse_version(number: &str) -> Result<(u32, u32, u32), String> {
    let core = number.split(['-', '+']).next().unwrap_or(number);
    let mut parts = core.split('.').map(str::parse::<u32>);
    match (parts.next(), parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor)), patch) => Ok((major, minor, patch.and_then(Result::ok).unwrap_or(0))),
        _ => Err(format!("version '{number}' is not major.minor.patch")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn flattened_fields_speak_each_servers_language() {
        let mapping = serde_json::json!({"properties": {"data": {"type": "flattened", "ignore_above": 8191},
            "name": {"type": "keyword"}}});
        let server = |product, version| Server { product, version };
        assert_eq!(server(Product::Elasticsearch, (9, 1, 0)).mapping(&mapping), mapping);
        let opensearch = server(Product::OpenSearch, (2, 19, 6)).mapping(&mapping);
        assert_eq!(opensearch["properties"]["data"], serde_json::json!({"type": "flat_object"}));
        assert_eq!(opensearch["properties"]["name"], serde_json::json!({"type": "keyword"}));
        let old = server(Product::OpenSearch, (2, 5, 0)).mapping(&mapping);
        assert_eq!(old["properties"]["data"], serde_json::json!({"type": "object", "enabled": false}));
    }

    #[test]
    fn tells_the_products_and_versions_apart() {
        let opensearch = json!({"version": {"distribution": "opensearch", "number": "2.19.6", "build_type": "zip"}});
        let server = Server::from_answer(&opensearch, None).unwrap();
        assert_eq!(server.to_string(), "OpenSearch 2.19.6");
        assert!(server.check_supported().is_ok());

        let es9 = json!({"version": {"number": "9.1.0", "build_flavor": "default"}});
        let server = Server::from_answer(&es9, Some("Elasticsearch")).unwrap();
        assert_eq!((server.product, server.version), (Product::Elasticsearch, (9, 1, 0)));

        let nodes = json!({"nodes": {"x1": {"version": "8.19.0", "name": "n"}}});
        let server = Server::from_answer(&nodes, Some("Elasticsearch")).unwrap();
        assert_eq!(server.to_string(), "Elasticsearch 8.19.0");
        let opensearch_nodes = json!({"nodes": {"x1": {"version": "2.19.6"}}});
        assert_eq!(Server::from_answer(&opensearch_nodes, None).unwrap().product, Product::OpenSearch);
    }

    #[test]
    fn refuses_servers_without_composable_templates() {
        let old = Server::from_answer(&json!({"version": {"number": "7.7.1"}}), None).unwrap();
        let error = old.check_supported().unwrap_err();
        assert!(error.contains("Elasticsearch 7.7.1 is not supported") && error.contains("7.8"), "{error}");
        let edge = Server::from_answer(&json!({"version": {"number": "7.8.0"}}), None).unwrap();
        assert!(edge.check_supported().is_ok());
        let old = Server::from_answer(&json!({"version": {"number": "6.8.23"}}), None).unwrap();
        assert!(old.check_supported().is_err());
    }

    #[test]
    fn odd_answers_are_errors_not_panics() {
        assert!(Server::from_answer(&json!({}), None).is_err());
        assert!(Server::from_answer(&json!({"version": {"number": "nine"}}), None).is_err());
        assert!(Server::from_answer(&json!({"nodes": {}}), None).is_err());
        assert_eq!(parse_version("8.19.0-SNAPSHOT"), Ok((8, 19, 0)));
        assert_eq!(parse_version("9.1"), Ok((9, 1, 0)));
    }
}
