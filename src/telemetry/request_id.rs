//! Request ids: one per request, in its log lines, its error body, its `X-Request-Id` response
//! header and the request sent upstream.
//!
//! Rules:
//! 1. An incoming `X-Request-Id` is kept only when the direct peer is trusted
//!    ([`trusted_peer`]) and the value is 1–128 characters of `A-Z a-z 0-9 - _ . : + = / @`
//!    (so it can go into a log line, a JSON body and a header unchanged); one such header only.
//! 2. Otherwise gatehouse makes one: 128 random bits as 32 lowercase hex digits.

use std::fmt;
use std::net::SocketAddr;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::Config;

/// The header that carries the id, both ways.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Longest incoming id kept.
pub const MAX_LEN: usize = 128;

/// Whether `peer`, the direct TCP peer, may tell us things about the request (its request id,
/// its trace context): it is one of `server.trusted_proxies`.
pub fn trusted_peer(config: &Config, peer: SocketAddr) -> bool {
    crate::forwarded::is_trusted(peer.ip(), &config.server.trusted_proxies)
}

/// One request's id, ready to be sent as a header.
#[derive(Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// The incoming id when `trusted` and valid (rule 1), else a new one.
    pub fn choose(headers: &HeaderMap, trusted: bool) -> RequestId {
        let mut incoming = headers.get_all(X_REQUEST_ID).iter();
        match (trusted, incoming.next(), incoming.next()) {
            (true, Some(id), None) if is_valid(id.as_bytes()) => RequestId(id.clone()),
            _ => RequestId::generate(),
        }
    }

    pub fn generate() -> RequestId {
        let bits: [u8; 16] = rand::random();
        let mut text = [0u8; 32];
        crate::session::record::write_hex(&mut text, &bits);
        // One allocation that every copy (upstream, response) shares: a value made from a
        // `String` would allocate again on its first clone. 32 hex digits are always a
        // valid header value.
        let shared = bytes::Bytes::from_owner(text);
        RequestId(HeaderValue::from_maybe_shared(shared).unwrap_or(HeaderValue::from_static("-")))
    }

    pub fn as_str(&self) -> &str {
        // Valid ids are visible ASCII (rule 1), which `to_str` accepts.
        self.0.to_str().unwrap_or("-")
    }

    pub fn header_value(&self) -> HeaderValue {
        self.0.clone()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({})", self.as_str())
    }
}

fn is_valid(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:+=/@".contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_id(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(X_REQUEST_ID, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn a_trusted_peers_valid_id_is_kept() {
        for id in [
            "abc",
            "9f1c2b3a-0d4e-4f5a-8b6c-7d8e9fa0b1c2",
            "Root=1-5759e988-bd862e3fe1be46a994272793",
            "a/b+c=@d.e_f:g",
        ] {
            assert_eq!(RequestId::choose(&with_id(&[id]), true).as_str(), id);
        }
    }

    #[test]
    fn an_untrusted_peers_id_is_replaced() {
        let id = RequestId::choose(&with_id(&["from-the-client"]), false);
        assert_ne!(id.as_str(), "from-the-client");
        assert_eq!(id.as_str().len(), 32);
    }

    #[test]
    fn invalid_or_repeated_ids_are_replaced_even_from_a_trusted_peer() {
        let long = "a".repeat(MAX_LEN + 1);
        for values in [
            vec![""],
            vec!["has space"],
            vec!["quote\"d"],
            vec!["back\\slash"],
            vec!["tab\there"],
            vec![long.as_str()],
            vec!["one", "two"],
        ] {
            let id = RequestId::choose(&with_id(&values), true);
            assert!(
                id.as_str().len() == 32 && id.as_str().bytes().all(|b| b.is_ascii_hexdigit()),
                "{values:?} gave {id}"
            );
        }
        let longest = "b".repeat(MAX_LEN);
        assert_eq!(
            RequestId::choose(&with_id(&[&longest]), true).as_str(),
            longest
        );
    }

    #[test]
    fn generated_ids_are_128_bit_hex_and_differ() {
        let a = RequestId::generate();
        let b = RequestId::generate();
        assert_ne!(a, b);
        for id in [&a, &b] {
            assert_eq!(id.as_str().len(), 32);
            assert!(
                id.as_str()
                    .bytes()
                    .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
            );
        }
    }

    #[test]
    fn only_peers_in_trusted_proxies_are_trusted() {
        let app = |proxies: &str| {
            let config = crate::config::Config::from_toml(
                &format!(
                    r#"
[server]
public_origin = "https://app.example.com"
{proxies}
[oidc]
issuer = "https://id.example.com"
client_id = "bff"
client_secret = "s"
"#
                ),
                &crate::config::NoEnv,
            )
            .unwrap();
            crate::app::App::new(config).unwrap()
        };
        let trusting = app(r#"trusted_proxies = ["127.0.0.0/8", "::1"]"#);
        for (addr, trusted) in [
            ("127.0.0.1:1", true),
            ("127.8.9.1:1", true),
            ("[::1]:1", true),
            ("10.0.0.1:1", false),
            ("192.0.2.7:1", false),
            ("[2001:db8::1]:1", false),
        ] {
            assert_eq!(
                trusted_peer(&trusting.config(), addr.parse().unwrap()),
                trusted,
                "{addr}"
            );
        }
        let nobody = app("");
        assert!(
            !trusted_peer(&nobody.config(), "127.0.0.1:1".parse().unwrap()),
            "none by default"
        );
    }
}
