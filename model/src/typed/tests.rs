use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::*;

#[derive(Debug, PartialEq, Serialize, Deserialize, ParamEnum)]
#[serde(rename_all = "lowercase")]
enum Listing {
    New,
    Hot,
}

#[derive(Debug, Deserialize, JobParams)]
#[params(rule = ParamRule::one_of(&[&["client_id", "client_secret"]], false))]
struct Example {
    /// The feed's URL
    /// (http or https).
    url: url::Url,
    /// Which listing.
    #[param(default = "new")]
    listing: Listing,
    /// Items per run.
    #[param(default = 20, min = 1, max = 200)]
    max_items: u32,
    /// A label.
    #[param(max_length = 10, pattern = "[a-z]+")]
    topic: Option<String>,
    /// A place.
    place: Option<String>,
    /// Symbols.
    #[param(default = ["A"], min = 1, max_length = 5)]
    symbols: Vec<String>,
    /// Application id.
    client_id: Option<Secret>,
    /// Application secret.
    client_secret: Option<Secret>,
    /// A body.
    body: Option<JsonText>,
}

fn spec() -> JobTypeSpec {
    spec_of::<Example>("example", "An example.", Duration::from_secs(60), Duration::from_secs(1))
}

#[test]
fn the_struct_is_the_spec() {
    let spec = spec();
    let names: Vec<&str> = spec.params.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["url", "listing", "max_items", "topic", "place", "symbols", "client_id", "client_secret", "body"]
    );
    let url = spec.param("url").expect("url");
    assert_eq!(
        (url.kind, url.required, url.description.as_str()),
        (ParamKind::Url, true, "The feed's URL (http or https).")
    );
    let listing = spec.param("listing").expect("listing");
    assert_eq!((listing.kind, listing.required), (ParamKind::Enum, false));
    assert_eq!(listing.allowed_values, ["new", "hot"]);
    assert_eq!(listing.default, Some(json!("new")));
    let max = spec.param("max_items").expect("max_items");
    assert_eq!(
        (max.kind, max.minimum, max.maximum, max.default.clone()),
        (ParamKind::Integer, Some(1.0), Some(200.0), Some(json!(20)))
    );
    let topic = spec.param("topic").expect("topic");
    assert_eq!((topic.required, topic.max_length, topic.pattern.as_deref()), (false, Some(10), Some("[a-z]+")));
    let symbols = spec.param("symbols").expect("symbols");
    assert_eq!((symbols.kind, symbols.minimum, symbols.max_length), (ParamKind::List, Some(1.0), Some(5)));
    assert_eq!(spec.param("client_id").map(|p| p.kind), Some(ParamKind::Secret));
    assert_eq!(spec.param("body").map(|p| p.kind), Some(ParamKind::Json));
    assert_eq!(spec.rules, [ParamRule::one_of(&[&["client_id", "client_secret"]], false)]);
}

#[test]
fn parsing_applies_defaults_and_takes_secrets_apart() {
    let params = json!({"url": "https://example.com/feed", "place": ""});
    let secrets = BTreeMap::from([
        ("client_id".to_string(), "id".to_string()),
        ("client_secret".to_string(), "s3cret".to_string()),
    ]);
    let parsed: Example = parse_params(&spec(), params.as_object().expect("object"), &secrets).expect("valid");
    assert_eq!(parsed.url.as_str(), "https://example.com/feed");
    assert_eq!(parsed.listing, Listing::New);
    assert_eq!(parsed.max_items, 20);
    assert_eq!(parsed.place, None, "an empty string is no value");
    assert_eq!(parsed.topic, None);
    assert_eq!(parsed.symbols, ["A"]);
    assert_eq!(parsed.client_id.as_ref().map(Secret::expose), Some("id"));
    assert_eq!(parsed.client_secret.as_ref().map(Secret::expose), Some("s3cret"));
    assert_eq!(parsed.body, None);
    assert!(!format!("{parsed:?}").contains("s3cret"), "secrets never print");
}

#[test]
fn parsing_refuses_what_control_refuses_by_field() {
    let no_secrets = BTreeMap::new();
    for (params, field) in [
        (json!({}), "params.url"),
        (json!({"url": "ftp://example.com/"}), "params.url"),
        (json!({"url": "https://example.com/", "max_items": 0}), "params.max_items"),
        (json!({"url": "https://example.com/", "listing": "old"}), "params.listing"),
        (json!({"url": "https://example.com/", "topic": "UPPER"}), "params.topic"),
        (json!({"url": "https://example.com/", "symbols": []}), "params.symbols"),
        (json!({"url": "https://example.com/", "body": "{not json"}), "params.body"),
    ] {
        let errors =
            parse_params::<Example>(&spec(), params.as_object().expect("object"), &no_secrets).expect_err("invalid");
        assert!(errors.iter().any(|v| v.field == field), "{params}: {errors:?}");
    }
    let half = BTreeMap::from([("client_id".to_string(), "id".to_string())]);
    let params = json!({"url": "https://example.com/"});
    let errors = parse_params::<Example>(&spec(), params.as_object().expect("object"), &half).expect_err("rule");
    assert!(errors.iter().any(|v| v.field.starts_with("params.client_")), "{errors:?}");
}
