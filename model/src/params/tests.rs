use std::time::Duration;

use serde_json::{Map, Value, json};

use super::*;

fn spec() -> JobTypeSpec {
    JobTypeSpec {
        name: "t".into(),
        description: String::new(),
        params: vec![
            ParamSpec::new("url", ParamKind::Url, "feed").required(),
            ParamSpec::new("count", ParamKind::Integer, "n").bounds(Some(1.0), Some(10.0)),
            ParamSpec::new("ratio", ParamKind::Number, "r").bounds(Some(0.0), Some(1.0)),
            ParamSpec::new("flag", ParamKind::Boolean, "f"),
            ParamSpec::new("mode", ParamKind::Enum, "m").allowed(&["a", "b"]),
            ParamSpec::new("every", ParamKind::Duration, "d").bounds(Some(60.0), None),
            ParamSpec::new("tags", ParamKind::List, "l").max_length(2),
            ParamSpec::new("label", ParamKind::String, "s").max_length(5),
            ParamSpec::new("token", ParamKind::Secret, "k").required(),
        ],
        default_interval: Duration::from_secs(60),
        min_interval: Duration::from_secs(1),
        rules: Vec::new(),
    }
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn fields(result: Result<SplitParams, Vec<FieldViolation>>) -> Vec<String> {
    let mut f: Vec<String> = result.err().unwrap_or_default().into_iter().map(|v| v.field).collect();
    f.sort();
    f
}

#[test]
fn valid_params_are_normalised_and_secrets_split_out() {
    let input = obj(json!({
        "url": "https://example.org/feed.xml", "count": 5.0, "ratio": 0.5, "flag": true,
        "mode": "b", "every": "15m", "tags": ["x", "y"], "label": "abc", "token": "s3cr3t"
    }));
    let split = validate_params(&spec(), &input, &[], "job.params").expect("valid");
    assert_eq!(split.params.get("count"), Some(&json!(5)), "5.0 from a gRPC Struct becomes the integer 5");
    assert!(!split.params.contains_key("token"));
    assert_eq!(split.secrets.get("token").map(String::as_str), Some("s3cr3t"));
    assert!(!format!("{split:?}").contains("s3cr3t"), "Debug must not print secret values");
}

#[test]
fn every_bad_field_gets_its_own_violation() {
    let input = obj(json!({
        "url": "ftp://example.org/x", "count": 11, "ratio": "high", "flag": "yes",
        "mode": "c", "every": "10s", "tags": ["a", "b", "c"], "label": "toolong", "nope": 1
    }));
    let got = fields(validate_params(&spec(), &input, &[], "job.params"));
    let want: Vec<String> = ["count", "every", "flag", "label", "mode", "nope", "ratio", "tags", "token", "url"]
        .iter()
        .map(|n| format!("job.params.{n}"))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn messages_tell_the_user_what_to_write() {
    let input = obj(json!({"url": "https://a.example", "token": "k", "every": "soon", "count": 2.5}));
    let violations = validate_params(&spec(), &input, &[], "p").unwrap_err();
    let text: Vec<String> = violations.iter().map(ToString::to_string).collect();
    assert!(text.iter().any(|t| t.starts_with("p.every:") && t.contains("15m")), "{text:?}");
    assert!(text.iter().any(|t| t.starts_with("p.count:") && t.contains("whole number")), "{text:?}");
}

#[test]
fn kept_secret_satisfies_a_required_secret_on_update() {
    let input = obj(json!({"url": "https://a.example"}));
    assert_eq!(fields(validate_params(&spec(), &input, &[], "p")), vec!["p.token"]);
    let split = validate_params(&spec(), &input, &["token".to_string()], "p").expect("kept secret counts");
    assert!(split.secrets.is_empty());
}

#[test]
fn null_counts_as_absent_and_empty_secret_is_refused() {
    let input = obj(json!({"url": "https://a.example", "count": null, "token": ""}));
    assert_eq!(fields(validate_params(&spec(), &input, &[], "p")), vec!["p.token"]);
}

#[test]
fn urls_need_a_host_and_a_web_scheme() {
    for bad in ["not a url", "/relative", "file:///etc/passwd", "javascript:alert(1)", "http://"] {
        let input = obj(json!({"url": bad, "token": "k"}));
        assert_eq!(fields(validate_params(&spec(), &input, &[], "p")), vec!["p.url"], "{bad}");
    }
}

#[test]
fn specs_round_trip_through_json() {
    let s = spec();
    let text = serde_json::to_string(&s).expect("serialise");
    let back: JobTypeSpec = serde_json::from_str(&text).expect("deserialise");
    assert_eq!(back, s);
}

#[test]
fn patterns_are_whole_value_matches() {
    let spec = JobTypeSpec {
        name: "p".into(),
        description: String::new(),
        params: vec![ParamSpec::new("index", ParamKind::String, "i").pattern("[a-z0-9][a-z0-9._-]*")],
        default_interval: Duration::from_secs(60),
        min_interval: Duration::from_secs(1),
        rules: Vec::new(),
    };
    assert!(validate_params(&spec, &obj(json!({"index": "news-2026.11"})), &[], "params").is_ok());
    for bad in ["News", "-x", "a/b", "ok then", ""] {
        let err = validate_params(&spec, &obj(json!({"index": bad})), &[], "params").unwrap_err();
        assert_eq!(err[0].field, "params.index");
        assert!(err[0].description.contains("must match the pattern"), "{bad}: {}", err[0].description);
    }
    let mut broken = spec.clone();
    broken.params[0].pattern = Some("(".into());
    let err = validate_params(&broken, &obj(json!({"index": "x"})), &[], "params").unwrap_err();
    assert!(err[0].description.contains("invalid"), "{}", err[0].description);
}

/// Shaped like the twitter type: a mode that needs its own parameter, and a
/// bearer token or four OAuth secrets.
fn ruled() -> JobTypeSpec {
    let secret = |name: &str| ParamSpec::new(name, ParamKind::Secret, name);
    JobTypeSpec {
        name: "ruled".into(),
        description: String::new(),
        params: vec![
            ParamSpec::new("mode", ParamKind::Enum, "m").allowed(&["search", "timeline"]).default_value("search"),
            ParamSpec::new("query", ParamKind::String, "q"),
            ParamSpec::new("user_id", ParamKind::String, "u"),
            secret("bearer"),
            secret("key"),
            secret("secret"),
        ],
        default_interval: Duration::from_secs(60),
        min_interval: Duration::from_secs(1),
        rules: vec![
            ParamRule::required_if("query", "mode", "search"),
            ParamRule::required_if("user_id", "mode", "timeline"),
            ParamRule::one_of(&[&["bearer"], &["key", "secret"]], true),
        ],
    }
}

fn violations(input: Value, kept: &[&str]) -> Vec<(String, String)> {
    let kept: Vec<String> = kept.iter().map(|s| s.to_string()).collect();
    match validate_params(&ruled(), &obj(input), &kept, "job.params") {
        Ok(_) => Vec::new(),
        Err(v) => v.into_iter().map(|v| (v.field, v.description)).collect(),
    }
}

#[test]
fn rules_across_parameters_name_the_field_to_fix() {
    assert!(violations(json!({"query": "rust", "bearer": "t"}), &[]).is_empty());
    assert!(violations(json!({"mode": "timeline", "user_id": "42", "key": "k", "secret": "s"}), &[]).is_empty());
    // The default mode counts.
    assert_eq!(
        violations(json!({"bearer": "t"}), &[]),
        [("job.params.query".to_string(), "required when mode is search".to_string())]
    );
    assert_eq!(violations(json!({"mode": "timeline", "bearer": "t"}), &[])[0].0, "job.params.user_id");
    assert_eq!(
        violations(json!({"query": "q"}), &[]),
        [("job.params.bearer".to_string(), "required: give bearer; or key, secret".to_string())]
    );
    assert_eq!(
        violations(json!({"query": "q", "key": "k"}), &[]),
        [("job.params.secret".to_string(), "key, secret go together; missing: secret".to_string())]
    );
    assert_eq!(
        violations(json!({"query": "q", "bearer": "t", "key": "k", "secret": "s"}), &[]),
        [("job.params.key".to_string(), "give only one of: bearer; or key, secret".to_string())]
    );
    // On update, secrets already stored count as given.
    assert!(violations(json!({"query": "q"}), &["bearer"]).is_empty());
    assert!(violations(json!({"query": "q", "secret": "s"}), &["key"]).is_empty());
}

#[test]
fn rules_survive_the_round_trip_through_the_store() {
    let spec = ruled();
    let text = serde_json::to_string(&spec).expect("serialise");
    assert!(text.contains(r#""one_of":{"sets":[["bearer"],["key","secret"]],"required":true}"#), "{text}");
    assert_eq!(serde_json::from_str::<JobTypeSpec>(&text).expect("deserialise"), spec);
    // A spec published without rules (an older worker) still reads.
    let mut old: Value = serde_json::from_str(&text).expect("json");
    old.as_object_mut().expect("object").remove("rules");
    assert!(serde_json::from_value::<JobTypeSpec>(old).expect("older spec").rules.is_empty());
}

#[test]
fn moved_origins_compare_scheme_host_and_port_with_defaults() {
    let spec = JobTypeSpec {
        name: "t".into(),
        description: String::new(),
        params: vec![
            ParamSpec::new("url", ParamKind::Url, "u"),
            ParamSpec::new("base_url", ParamKind::Url, "b").default_value("https://api.example.org/"),
            ParamSpec::new("key", ParamKind::Secret, "k"),
        ],
        default_interval: std::time::Duration::from_secs(60),
        min_interval: std::time::Duration::from_secs(1),
        rules: Vec::new(),
    };
    let map = |v: serde_json::Value| v.as_object().cloned().unwrap_or_default();
    let before = map(serde_json::json!({"url": "https://example.org/a"}));
    // Another path, query or the default port spelled out: the same origin.
    let same =
        map(serde_json::json!({"url": "https://example.org:443/b?x=1", "base_url": "https://api.example.org/v2"}));
    assert_eq!(moved_origins(&spec, &before, &same), []);
    // Another port, scheme or host: moved, with both origins named.
    for (to, origin) in [
        ("https://example.org:8443/a", "https://example.org:8443"),
        ("http://example.org/a", "http://example.org"),
        ("https://evil.example/a", "https://evil.example"),
    ] {
        let moved = moved_origins(&spec, &before, &map(serde_json::json!({"url": to})));
        assert_eq!(moved, [MovedOrigin { param: "url".into(), from: "https://example.org".into(), to: origin.into() }]);
    }
    // A default replaced by another origin moves too.
    let moved = moved_origins(
        &spec,
        &before,
        &map(serde_json::json!({"url": "https://example.org/a", "base_url": "http://127.0.0.1:9/"})),
    );
    assert_eq!(moved.len(), 1);
    assert_eq!((moved[0].param.as_str(), moved[0].to.as_str()), ("base_url", "http://127.0.0.1:9"));
}
