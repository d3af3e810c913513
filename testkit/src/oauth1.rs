//! An OAuth 1.0a HMAC-SHA1 verifier for fixture servers (RFC 5849 §3.4),
//! written from the RFC and independent of the signing library the worker
//! uses, so a test checks the signature for real: a wrong secret, a changed
//! query parameter or a stale timestamp is refused.

use std::collections::BTreeMap;

use base64::Engine;
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha1::Sha1;

/// RFC 3986 unreserved characters stay as they are; everything else is
/// percent-encoded (RFC 5849 §3.6).
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// How far a request's timestamp may be from the server's clock.
const MAX_SKEW_SECONDS: u64 = 300;

/// The credentials a fixture accepts.
#[derive(Clone, Debug)]
pub struct OAuth1Keys {
    pub consumer_key: String,
    pub consumer_secret: String,
    pub token: String,
    pub token_secret: String,
}

/// What a verified request carried (a fixture can refuse a replayed nonce).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub nonce: String,
    pub timestamp: u64,
}

fn encode(text: &str) -> String {
    utf8_percent_encode(text, UNRESERVED).to_string()
}

fn decode(text: &str) -> Result<String, String> {
    percent_decode_str(text).decode_utf8().map(|s| s.into_owned()).map_err(|e| format!("bad percent-encoding: {e}"))
}

/// The `oauth_*` parameters of an `Authorization: OAuth ...` header.
fn header_params(authorization: &str) -> Result<BTreeMap<String, String>, String> {
    let list = authorization.strip_prefix("OAuth ").ok_or("not an OAuth authorization header")?;
    let mut params = BTreeMap::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = part.split_once('=').ok_or_else(|| format!("malformed parameter {part:?}"))?;
        let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).ok_or("unquoted parameter value")?;
        if params.insert(decode(name)?, decode(value)?).is_some() {
            return Err(format!("parameter {name} given twice"));
        }
    }
    Ok(params)
}

/// The signature base string (RFC 5849 §3.4.1): the method, the base URI and
/// the normalized parameters (query and `oauth_*` but the signature).
pub fn base_string(method: &str, base_uri: &str, query: &str, oauth: &BTreeMap<String, String>) -> String {
    let mut pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (encode(&k), encode(&v)))
        .chain(
            oauth
                .iter()
                .filter(|(k, _)| k.as_str() != "oauth_signature" && k.as_str() != "realm")
                .map(|(k, v)| (encode(k), encode(v))),
        )
        .collect();
    pairs.sort();
    let normalized = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
    format!("{}&{}&{}", method.to_ascii_uppercase(), encode(base_uri), encode(&normalized))
}

/// Verifies a request's `Authorization` header. `base_uri` is the scheme,
/// host (with a non-default port) and path the client addressed; `query` the
/// raw query string; `now` the server's Unix time.
pub fn verify(
    keys: &OAuth1Keys,
    method: &str,
    base_uri: &str,
    query: &str,
    authorization: &str,
    now: u64,
) -> Result<Verified, String> {
    let params = header_params(authorization)?;
    let get = |name: &str| params.get(name).map(String::as_str).ok_or_else(|| format!("{name} missing"));
    if get("oauth_signature_method")? != "HMAC-SHA1" {
        return Err("oauth_signature_method is not HMAC-SHA1".into());
    }
    if params.get("oauth_version").is_some_and(|v| v != "1.0") {
        return Err("oauth_version is not 1.0".into());
    }
    if get("oauth_consumer_key")? != keys.consumer_key {
        return Err("unknown consumer key".into());
    }
    if get("oauth_token")? != keys.token {
        return Err("unknown token".into());
    }
    let timestamp: u64 = get("oauth_timestamp")?.parse().map_err(|_| "oauth_timestamp is not a number")?;
    if timestamp.abs_diff(now) > MAX_SKEW_SECONDS {
        return Err(format!("oauth_timestamp {timestamp} is too far from {now}"));
    }
    let nonce = get("oauth_nonce")?.to_string();
    if nonce.is_empty() {
        return Err("oauth_nonce is empty".into());
    }
    let signature = base64::engine::general_purpose::STANDARD
        .decode(get("oauth_signature")?)
        .map_err(|_| "oauth_signature is not base64")?;
    let key = format!("{}&{}", encode(&keys.consumer_secret), encode(&keys.token_secret));
    let mut mac = Hmac::<Sha1>::new_from_slice(key.as_bytes()).map_err(|e| e.to_string())?;
    mac.update(base_string(method, base_uri, query, &params).as_bytes());
    mac.verify_slice(&signature).map_err(|_| "invalid signature".to_string())?;
    Ok(Verified { nonce, timestamp })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request of RFC 5849 §3.4.1.1 gives the RFC's base string; its
    /// signature with the secrets `j49sk3j29djd` and `dh893hdasih9` was
    /// computed separately with Python's `hmac` module.
    #[test]
    fn the_rfc_example_verifies_and_a_wrong_secret_does_not() {
        let keys = OAuth1Keys {
            consumer_key: "9djdj82h48djs9d2".into(),
            consumer_secret: "j49sk3j29djd".into(),
            token: "kkk9d7dh3k39sjv7".into(),
            token_secret: "dh893hdasih9".into(),
        };
        let header = "OAuth realm=\"Example\", oauth_consumer_key=\"9djdj82h48djs9d2\", \
            oauth_token=\"kkk9d7dh3k39sjv7\", oauth_signature_method=\"HMAC-SHA1\", \
            oauth_timestamp=\"137131201\", oauth_nonce=\"7d8f3e4a\", \
            oauth_signature=\"r6%2FTJjbCOr97%2F%2BUU0NsvSne7s5g%3D\"";
        // The RFC's body parameters (c2, a3=2 q) are folded into the query here,
        // which signs the same parameter set.
        let query = "b5=%3D%253D&a3=a&c%40=&a2=r%20b&c2=&a3=2+q";
        let uri = "http://example.com/request";
        let base = base_string("POST", uri, query, &header_params(header).expect("params"));
        let rfc = "POST&http%3A%2F%2Fexample.com%2Frequest&a2%3Dr%2520b%26a3%3D2%2520q%26a3%3Da%26b5%3D%253D%25253D%26\
            c%2540%3D%26c2%3D%26oauth_consumer_key%3D9djdj82h48djs9d2%26oauth_nonce%3D7d8f3e4a%26\
            oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D137131201%26oauth_token%3Dkkk9d7dh3k39sjv7";
        assert_eq!(base, rfc);
        let now = 137_131_201;
        let verified = verify(&keys, "POST", uri, query, header, now).expect("the RFC's signature verifies");
        assert_eq!(verified, Verified { nonce: "7d8f3e4a".into(), timestamp: now });

        let wrong = OAuth1Keys { consumer_secret: "not-the-secret".into(), ..keys.clone() };
        assert_eq!(verify(&wrong, "POST", uri, query, header, now), Err("invalid signature".into()));
        let changed = query.replace("a3=a", "a3=b");
        assert_eq!(verify(&keys, "POST", uri, &changed, header, now), Err("invalid signature".into()));
        assert!(verify(&keys, "POST", uri, query, header, now + 1000).is_err(), "a stale timestamp is refused");
        assert!(verify(&keys, "GET", uri, query, header, now).is_err(), "the method is signed");
    }
}
