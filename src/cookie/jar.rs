//! The request's `Cookie` header, read once: the values of our session cookie, our login
//! cookies, and what is left to forward upstream. Every phase of a request asks the jar
//! instead of parsing the header again.
//!
//! Rules:
//! 1. Pairs are split on `;` and trimmed; a pair without `=` or with an empty name is foreign
//!    (forwarded as sent, never ours). Surrounding double quotes are removed from values.
//! 2. A name is ours when it equals the session cookie's name, or starts with the login
//!    cookies' prefix (`<session name>-login`). Ours never leave gatehouse.
//! 3. Every value of a repeated name is kept in order; callers try each and the first that
//!    opens wins, so a planted cookie cannot shadow the real one.

use std::ops::Range;

use http::header::{COOKIE, HeaderMap, HeaderValue};
use smallvec::SmallVec;

/// The names gatehouse owns, as the jar classifies them.
#[derive(Debug, Clone)]
pub struct CookieNames {
    /// The session cookie, e.g. `__Host-gatehouse`.
    pub session: String,
    /// Prefix of the login cookies, e.g. `__Host-gatehouse-login`.
    pub login_prefix: String,
}

impl CookieNames {
    pub fn new(session: &str) -> Self {
        Self {
            session: session.to_owned(),
            login_prefix: format!("{session}-login"),
        }
    }

    /// Whether a cookie called `name` is one of ours. Case-insensitive, so that an upstream's
    /// `Set-Cookie: __HOST-GATEHOUSE=…` is treated as an attempt on ours too.
    pub fn is_ours(&self, name: &str) -> bool {
        name.eq_ignore_ascii_case(&self.session)
            || name
                .get(..self.login_prefix.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(&self.login_prefix))
    }
}

/// A pair of ours: which header it came from and where its name and value are.
#[derive(Debug, Clone)]
struct Pair {
    header: usize,
    name: Range<usize>,
    value: Range<usize>,
}

/// The request's cookies, taken out of its headers. A request has one `Cookie` header and
/// one session cookie in it: those are kept inline, no allocation.
#[derive(Debug, Default)]
pub struct Jar {
    raw: SmallVec<[HeaderValue; 1]>,
    session: SmallVec<[Pair; 1]>,
    login: Vec<Pair>,
    /// Whether any pair is not ours (there is something to forward).
    foreign: bool,
}

impl Jar {
    /// Removes every `Cookie` header from `headers` and classifies its pairs.
    pub fn take(headers: &mut HeaderMap, names: &CookieNames) -> Jar {
        match headers.entry(COOKIE) {
            http::header::Entry::Occupied(e) => Self::from_values(e.remove_entry_mult().1, names),
            http::header::Entry::Vacant(_) => Jar::default(),
        }
    }

    /// Classifies the pairs of these `Cookie` header values.
    pub fn from_values(raw: impl IntoIterator<Item = HeaderValue>, names: &CookieNames) -> Jar {
        let mut jar = Jar {
            raw: raw.into_iter().collect(),
            ..Jar::default()
        };
        for (i, header) in jar.raw.iter().enumerate() {
            for (name, value) in pairs(header.as_bytes()) {
                let text = &header.as_bytes()[name.clone()];
                let pair = Pair {
                    header: i,
                    name,
                    value,
                };
                if text == names.session.as_bytes() {
                    jar.session.push(pair);
                } else if text.starts_with(names.login_prefix.as_bytes()) {
                    jar.login.push(pair);
                } else {
                    jar.foreign = true;
                }
            }
        }
        jar
    }

    fn text(&self, header: usize, range: &Range<usize>) -> &str {
        self.raw
            .get(header)
            .and_then(|h| h.as_bytes().get(range.clone()))
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }

    /// Every value of the session cookie, in order.
    pub fn session_values(&self) -> impl Iterator<Item = &str> {
        self.session.iter().map(|p| self.text(p.header, &p.value))
    }

    /// Whether the request carried the session cookie at all (valid or not).
    pub fn has_session_cookie(&self) -> bool {
        !self.session.is_empty()
    }

    /// Every login cookie as (name, value), in order.
    pub fn login_cookies(&self) -> impl Iterator<Item = (&str, &str)> {
        self.login
            .iter()
            .map(|p| (self.text(p.header, &p.name), self.text(p.header, &p.value)))
    }

    /// The value of the login cookie called exactly `name`, if sent (the first one).
    pub fn login_cookie(&self, name: &str) -> Option<&str> {
        self.login_cookies()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }

    /// The `Cookie` header to forward upstream: every pair that is not ours, or `None`.
    pub fn forward(&self) -> Option<HeaderValue> {
        if !self.foreign {
            return None;
        }
        if let ([only], true, true) = (
            self.raw.as_slice(),
            self.session.is_empty(),
            self.login.is_empty(),
        ) {
            return Some(only.clone());
        }
        let mut kept: Vec<u8> = Vec::with_capacity(self.raw.iter().map(HeaderValue::len).sum());
        for (i, header) in self.raw.iter().enumerate() {
            for pair in segments(header.as_bytes()) {
                let is_ours = self
                    .session
                    .iter()
                    .chain(&self.login)
                    .any(|p| p.header == i && p.name.start == pair.start);
                if is_ours {
                    continue;
                }
                if !kept.is_empty() {
                    kept.extend_from_slice(b"; ");
                }
                // The bytes as sent: a value that is not UTF-8 is forwarded unchanged.
                kept.extend_from_slice(&header.as_bytes()[pair]);
            }
        }
        // The buffer becomes the value: no copy.
        HeaderValue::from_maybe_shared(bytes::Bytes::from(kept)).ok()
    }
}

/// `range` of `bytes` without surrounding whitespace; `None` when nothing is left.
fn trim(bytes: &[u8], range: Range<usize>) -> Option<Range<usize>> {
    let part = bytes.get(range.clone())?;
    let start = part.iter().position(|b| !b.is_ascii_whitespace())?;
    let end = part.iter().rposition(|b| !b.is_ascii_whitespace())? + 1;
    Some(range.start + start..range.start + end)
}

/// The trimmed, non-empty `;`-separated segments of one header value, as byte ranges.
fn segments(bytes: &[u8]) -> impl Iterator<Item = Range<usize>> + '_ {
    let mut start = 0;
    std::iter::from_fn(move || {
        while start <= bytes.len() {
            // memchr: a Cookie header runs to kilobytes on many sites; a byte at a time
            // would cost every request that much.
            let end = memchr::memchr(b';', &bytes[start..]).map_or(bytes.len(), |p| start + p);
            let segment = trim(bytes, start..end);
            start = end + 1;
            if segment.is_some() {
                return segment;
            }
        }
        None
    })
}

/// (name, value) byte ranges of every `name=value` pair in one header value; pairs without
/// `=` or with an empty name are skipped (they are foreign, never ours).
fn pairs(header: &[u8]) -> impl Iterator<Item = (Range<usize>, Range<usize>)> + '_ {
    segments(header).filter_map(move |pair| {
        let eq = pair.start + memchr::memchr(b'=', &header[pair.clone()])?;
        let name = trim(header, pair.start..eq)?;
        let mut value = trim(header, eq + 1..pair.end).unwrap_or(pair.end..pair.end);
        if value.len() >= 2 && header[value.start] == b'"' && header[value.end - 1] == b'"' {
            value = value.start + 1..value.end - 1;
        }
        Some((name, value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> CookieNames {
        CookieNames::new("__Host-g")
    }

    fn jar(cookies: &[&str]) -> Jar {
        let raw = cookies.iter().map(|c| HeaderValue::from_str(c).unwrap());
        Jar::from_values(raw, &names())
    }

    #[test]
    fn reads_all_values_of_our_cookie_across_headers() {
        let j = jar(&["a=1; __Host-g=first", "__Host-g=\"second\";; =; junk"]);
        assert_eq!(j.session_values().collect::<Vec<_>>(), ["first", "second"]);
        assert!(j.has_session_cookie());
        assert_eq!(jar(&[";", "=", ""]).session_values().count(), 0);
    }

    #[test]
    fn survives_two_hundred_cookies_and_huge_values() {
        let many: Vec<String> = (0..200).map(|i| format!("c{i}=v")).collect();
        let big = format!("__Host-g={}", "x".repeat(8192));
        let j = jar(&[&many.join("; "), &big]);
        assert_eq!(j.session_values().next().map(str::len), Some(8192));
        assert_eq!(j.forward().unwrap(), many.join("; ").as_str());
    }

    #[test]
    fn forward_keeps_only_foreign_cookies() {
        let j = jar(&[
            "theme=dark; __Host-g=secret; __Host-g-login-ab=x",
            "other=1",
        ]);
        assert_eq!(j.forward().unwrap(), "theme=dark; other=1");
        assert_eq!(
            j.login_cookies().collect::<Vec<_>>(),
            [("__Host-g-login-ab", "x")]
        );
        assert!(jar(&["__Host-g=secret"]).forward().is_none());
        assert_eq!(jar(&["a=1;b=2"]).forward().unwrap(), "a=1;b=2");
    }

    #[test]
    fn a_lookalike_name_is_not_ours_but_an_upstream_may_not_set_it() {
        let j = jar(&["__host-g=x; __Host-gg=y"]);
        assert!(!j.has_session_cookie());
        assert!(names().is_ours("__HOST-G"));
        assert!(names().is_ours("__Host-g-login-1234"));
        assert!(!names().is_ours("__Host-gg"));
    }

    #[test]
    fn foreign_cookies_are_forwarded_byte_for_byte_even_when_not_utf8() {
        let raw =
            vec![HeaderValue::from_bytes(b"name=Jos\xe9; __Host-g=secret; b=\xc3\xa9").unwrap()];
        let forwarded = Jar::from_values(raw, &names()).forward().unwrap();
        assert_eq!(forwarded.as_bytes(), b"name=Jos\xe9; b=\xc3\xa9");
    }

    #[test]
    fn take_removes_every_cookie_header() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1"));
        h.append(COOKIE, HeaderValue::from_static("__Host-g=v"));
        let j = Jar::take(&mut h, &names());
        assert!(h.get(COOKIE).is_none());
        assert_eq!(j.session_values().collect::<Vec<_>>(), ["v"]);
        assert_eq!(j.forward().unwrap(), "a=1");
    }
}
