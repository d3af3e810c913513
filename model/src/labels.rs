//! Job labels (`key=value` pairs an operator attaches to jobs) and label
//! selectors that pick jobs by them, in the syntax of Kubernetes label
//! selectors: `team=news,env!=test,tier in (a,b),!legacy`.

use std::collections::BTreeMap;

use crate::FieldViolation;

/// A job's labels.
pub type Labels = BTreeMap<String, String>;

/// The most labels a job may carry.
pub const MAX_LABELS: usize = 64;
/// The longest label name (after an optional `prefix/`) and value.
pub const MAX_LABEL_PART: usize = 63;
/// The longest prefix of a label key (a DNS subdomain such as `example.com`).
pub const MAX_LABEL_PREFIX: usize = 253;
/// The longest selector accepted.
pub const MAX_SELECTOR_LEN: usize = 4096;

/// Checks a job's labels; one violation per bad label, on `field.<key>`.
pub fn validate_labels(labels: &Labels, field: &str) -> Vec<FieldViolation> {
    let mut violations = Vec::new();
    if labels.len() > MAX_LABELS {
        violations
            .push(FieldViolation::new(field, format!("at most {MAX_LABELS} labels allowed, got {}", labels.len())));
    }
    for (key, value) in labels {
        if let Err(e) = check_key(key) {
            violations.push(FieldViolation::new(format!("{field}.{key}"), format!("label key: {e}")));
        } else if let Err(e) = check_value(value) {
            violations.push(FieldViolation::new(format!("{field}.{key}"), format!("label value: {e}")));
        }
    }
    violations
}

/// A key: `name` or `prefix/name`; the name 1 to 63 letters, digits, `-`,
/// `_` or `.`, starting and ending with a letter or digit; the prefix a DNS
/// subdomain (lowercase).
fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let ok = !prefix.is_empty()
            && prefix.len() <= MAX_LABEL_PREFIX
            && prefix.split('.').all(|part| {
                !part.is_empty()
                    && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            });
        if !ok {
            return Err(format!(
                "'{}' is not a valid prefix: a lowercase DNS name such as example.com, at most {MAX_LABEL_PREFIX} characters",
                shown(prefix)
            ));
        }
    }
    if name.is_empty() {
        return Err("the name must not be empty".to_string());
    }
    check_part(name)
}

/// A value: empty, or like a key's name.
fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() { Ok(()) } else { check_part(value) }
}

fn check_part(part: &str) -> Result<(), String> {
    if part.len() > MAX_LABEL_PART {
        return Err(format!("at most {MAX_LABEL_PART} characters allowed, got {}", part.len()));
    }
    let alnum = |c: char| c.is_ascii_alphanumeric();
    let inner = |c: char| alnum(c) || matches!(c, '-' | '_' | '.');
    let ok = part.chars().all(inner) && part.starts_with(alnum) && part.ends_with(alnum);
    if !ok {
        return Err(format!(
            "'{}' is not allowed: use letters, digits, '-', '_' and '.', starting and ending with a letter or digit",
            shown(part)
        ));
    }
    Ok(())
}

/// At most 64 characters of user text, for messages.
fn shown(text: &str) -> String {
    let cut: String = text.chars().take(64).collect();
    if cut.len() < text.len() { format!("{cut}…") } else { cut }
}

/// A parsed label selector: every requirement must hold. The empty
/// selector matches every job.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    /// `key` (true) or `!key` (false).
    Exists(String, bool),
    /// `key=value`, `key==value`, `key in (a,b)`: true; `!=`, `notin`: false.
    In(String, Vec<String>, bool),
}

impl Selector {
    /// Parses `team=news,env!=test,tier in (a,b),tier notin (c),legacy,!old`.
    /// The error says what is wrong and where.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() > MAX_SELECTOR_LEN {
            return Err(format!("at most {MAX_SELECTOR_LEN} characters allowed, got {}", text.len()));
        }
        let mut requirements = Vec::new();
        for part in split_top_level(text)? {
            let part = part.trim();
            if part.is_empty() {
                if text.trim().is_empty() {
                    break;
                }
                return Err("empty requirement (two commas in a row, or a comma at an end)".to_string());
            }
            requirements.push(parse_requirement(part)?);
        }
        Ok(Self { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::Exists(key, exists) => labels.contains_key(key) == *exists,
            Requirement::In(key, values, inside) => {
                let found = labels.get(key).is_some_and(|v| values.iter().any(|x| x == v));
                found == *inside
            }
        })
    }
}

/// Splits at commas outside parentheses.
fn split_top_level(text: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' if depth == 0 => depth = 1,
            '(' => return Err(format!("nested '(' at character {}", i + 1)),
            ')' if depth == 1 => depth = 0,
            ')' => return Err(format!("')' without '(' at character {}", i + 1)),
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("'(' without ')'".to_string());
    }
    parts.push(&text[start..]);
    Ok(parts)
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    let in_requirement = |key: &str, rest: &str, inside: bool| -> Result<Requirement, String> {
        let key = key.trim();
        check_key(key).map_err(|e| format!("in '{}': {e}", shown(part)))?;
        let list = rest
            .trim()
            .strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .ok_or_else(|| format!("in '{}': write the values in parentheses, e.g. (a,b)", shown(part)))?;
        let values: Vec<String> = list.split(',').map(|v| v.trim().to_string()).collect();
        for value in &values {
            check_value(value).map_err(|e| format!("in '{}': {e}", shown(part)))?;
        }
        Ok(Requirement::In(key.to_string(), values, inside))
    };
    if let Some((key, rest)) = part.split_once(" notin ") {
        return in_requirement(key, rest, false);
    }
    if let Some((key, rest)) = part.split_once(" in ") {
        return in_requirement(key, rest, true);
    }
    let (key, value, inside) = if let Some((k, v)) = part.split_once("!=") {
        (k, Some(v), false)
    } else if let Some((k, v)) = part.split_once("==") {
        (k, Some(v), true)
    } else if let Some((k, v)) = part.split_once('=') {
        (k, Some(v), true)
    } else {
        (part, None, true)
    };
    let key = key.trim();
    match value {
        Some(value) => {
            check_key(key).map_err(|e| format!("in '{}': {e}", shown(part)))?;
            let value = value.trim();
            check_value(value).map_err(|e| format!("in '{}': {e}", shown(part)))?;
            Ok(Requirement::In(key.to_string(), vec![value.to_string()], inside))
        }
        None => {
            let (key, exists) = match key.strip_prefix('!') {
                Some(key) => (key.trim(), false),
                None => (key, true),
            };
            check_key(key).map_err(|e| {
                format!(
                    "in '{}': {e} (a requirement is key, !key, key=value, key!=value, key in (a,b) or key notin (a,b))",
                    shown(part)
                )
            })?;
            Ok(Requirement::Exists(key.to_string(), exists))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn labels_follow_the_kubernetes_rules() {
        let good = labels(&[("team", "news"), ("example.com/tier", "a.b-c_d"), ("empty", ""), ("X9", "Y")]);
        assert_eq!(validate_labels(&good, "job.labels"), Vec::new());
        for (key, value) in [
            ("", "a"),
            ("-a", "b"),
            ("a b", "c"),
            ("Example.com/x", "y"),
            ("/x", "y"),
            ("x/", "y"),
            ("k", "-v"),
            ("k", "v v"),
            ("k", &"v".repeat(64)),
            (&"k".repeat(64), "v"),
            ("k", "é"),
        ] {
            let violations = validate_labels(&labels(&[(key, value)]), "job.labels");
            assert_eq!(violations.len(), 1, "{key}={value}");
            assert_eq!(violations[0].field, format!("job.labels.{key}"));
        }
        let many: Labels = (0..65).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(validate_labels(&many, "job.labels")[0].description.contains("at most 64"));
    }

    #[test]
    fn selectors_pick_by_equality_sets_and_existence() {
        let job = labels(&[("team", "news"), ("env", "prod"), ("tier", "b")]);
        for (selector, expected) in [
            ("", true),
            ("team=news", true),
            ("team==news", true),
            ("team = news", true),
            ("team=sport", false),
            ("team!=sport", true),
            ("missing!=x", true),
            ("team=news,env=prod", true),
            ("team=news,env=test", false),
            ("tier in (a,b)", true),
            ("tier in (a, c)", false),
            ("tier notin (a,c)", true),
            ("missing notin (a)", true),
            ("missing in (a)", false),
            ("team", true),
            ("!team", false),
            ("!missing", true),
            ("team,tier in (b),!missing,env!=test", true),
        ] {
            let parsed = Selector::parse(selector).unwrap_or_else(|e| panic!("{selector}: {e}"));
            assert_eq!(parsed.matches(&job), expected, "{selector}");
        }
    }

    #[test]
    fn bad_selectors_say_what_is_wrong() {
        for (selector, says) in [
            ("team=news,", "empty requirement"),
            (",team", "empty requirement"),
            ("team in a,b", "parentheses"),
            ("tier in (a", "without ')'"),
            ("tier in ((a))", "nested"),
            ("a)", "without '('"),
            ("te am=x", "not allowed"),
            ("team=in valid", "not allowed"),
            ("=x", "must not be empty"),
            ("!", "must not be empty"),
        ] {
            let err = Selector::parse(selector).expect_err(selector);
            assert!(err.contains(says), "{selector}: {err}");
        }
        assert!(Selector::parse(&"a".repeat(5000)).expect_err("long").contains("at most 4096"));
    }
}
