//! Validators of a served file and the conditional requests they answer (RFC 9110 §13).
//! Pure functions of the request headers, so each rule is tested without a file.
//!
//! Rules, in the RFC's order of evaluation:
//! 1. `If-Match` (strong comparison, or `*`) must hold, else 412; when it is absent,
//!    `If-Unmodified-Since` must hold, else 412.
//! 2. `If-None-Match` (weak comparison, or `*`) matching → 304 for GET and HEAD. When it is
//!    present `If-Modified-Since` is ignored; otherwise a file not modified since → 304.
//! 3. `Range` is honoured only when `If-Range` is absent or names this very representation:
//!    an equal strong entity tag, or exactly its `Last-Modified` date. Else the whole file.
//! 4. Dates compare in whole seconds (HTTP dates have no fractions); unparsable dates and
//!    entity-tag lists are ignored, never an error.

use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE};
use http::{HeaderMap, HeaderValue};

/// What identifies one representation (one file, one encoding).
#[derive(Debug, Clone)]
pub struct Validators {
    /// Strong entity tag with its quotes: `"<size>-<mtime ns>[-br|-gz]"` in hex.
    pub etag: String,
    pub last_modified: Option<SystemTime>,
}

impl Validators {
    /// Validators of a file of `len` bytes modified at `modified`, served with `encoding`
    /// (`None` for the file as it is). The encoding is part of the tag, so the `.br` and `.gz`
    /// variants of one file never share one.
    pub fn new(len: u64, modified: Option<SystemTime>, encoding: Option<&str>) -> Self {
        let nanos = modified
            .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let suffix = encoding.map(|e| format!("-{e}")).unwrap_or_default();
        Self {
            etag: format!("\"{len:x}-{nanos:x}{suffix}\""),
            last_modified: modified,
        }
    }

    pub fn etag_header(&self) -> Option<HeaderValue> {
        HeaderValue::from_str(&self.etag).ok()
    }

    pub fn last_modified_header(&self) -> Option<HeaderValue> {
        let date = httpdate::fmt_http_date(self.last_modified?);
        HeaderValue::from_str(&date).ok()
    }
}

/// How to answer, given the preconditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Serve the file; `range` says whether a `Range` header may be honoured (rule 3).
    Serve { range: bool },
    /// 304 Not Modified.
    NotModified,
    /// 412 Precondition Failed.
    PreconditionFailed,
}

/// Rules 1-4 for a GET or HEAD.
pub fn evaluate(headers: &HeaderMap, v: &Validators) -> Outcome {
    if headers.contains_key(IF_MATCH) {
        if !list_matches(headers, &IF_MATCH, &v.etag, true) {
            return Outcome::PreconditionFailed;
        }
    } else if let (Some(since), Some(modified)) =
        (date(headers, &IF_UNMODIFIED_SINCE), v.last_modified)
        && secs(modified) > secs(since)
    {
        return Outcome::PreconditionFailed;
    }
    if headers.contains_key(IF_NONE_MATCH) {
        if list_matches(headers, &IF_NONE_MATCH, &v.etag, false) {
            return Outcome::NotModified;
        }
    } else if let (Some(since), Some(modified)) =
        (date(headers, &IF_MODIFIED_SINCE), v.last_modified)
        && secs(modified) <= secs(since)
    {
        return Outcome::NotModified;
    }
    Outcome::Serve {
        range: if_range_holds(headers, v),
    }
}

fn if_range_holds(headers: &HeaderMap, v: &Validators) -> bool {
    let Some(value) = headers.get(IF_RANGE).and_then(|h| h.to_str().ok()) else {
        return true;
    };
    let value = value.trim();
    if value.starts_with('"') || value.starts_with("W/") {
        return value == v.etag;
    }
    match (httpdate::parse_http_date(value), v.last_modified) {
        (Ok(date), Some(modified)) => secs(date) == secs(modified),
        _ => false,
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn date(headers: &HeaderMap, name: &http::HeaderName) -> Option<SystemTime> {
    let value = headers.get(name)?.to_str().ok()?;
    httpdate::parse_http_date(value.trim()).ok()
}

/// Whether any entity tag listed in the `name` headers matches `etag` (`*` matches all).
/// `strong`: weak tags never match (If-Match); otherwise `W/` is ignored (If-None-Match).
fn list_matches(headers: &HeaderMap, name: &http::HeaderName, etag: &str, strong: bool) -> bool {
    let ours = etag.trim_matches('"');
    headers
        .get_all(name)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .any(|list| {
            list.trim() == "*"
                || entity_tags(list).any(|(weak, tag)| tag == ours && !(strong && weak))
        })
}

/// The `(weak, opaque tag)` pairs of an entity-tag list; parsing stops at anything malformed.
fn entity_tags(list: &str) -> impl Iterator<Item = (bool, &str)> {
    let mut rest = list;
    std::iter::from_fn(move || {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        let (weak, after) = match rest.strip_prefix("W/") {
            Some(after) => (true, after),
            None => (false, rest),
        };
        let inner = after.strip_prefix('"')?;
        let end = inner.find('"')?;
        rest = &inner[end + 1..];
        Some((weak, &inner[..end]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn validators() -> Validators {
        Validators::new(
            10,
            Some(at(1_700_000_000) + Duration::from_millis(250)),
            None,
        )
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_str(value).unwrap());
        }
        h
    }

    fn http_date(secs: u64) -> String {
        httpdate::fmt_http_date(at(secs))
    }

    const SERVE: Outcome = Outcome::Serve { range: true };

    #[test]
    fn the_tag_changes_with_size_time_and_encoding() {
        let base = validators();
        assert!(base.etag.starts_with("\"a-") && base.etag.ends_with('"'));
        let t = base.last_modified;
        assert_ne!(Validators::new(11, t, None).etag, base.etag);
        assert_ne!(Validators::new(10, Some(at(1)), None).etag, base.etag);
        assert_ne!(Validators::new(10, t, Some("br")).etag, base.etag);
        assert_ne!(
            Validators::new(10, t, Some("br")).etag,
            Validators::new(10, t, Some("gzip")).etag
        );
    }

    #[test]
    fn if_none_match_with_the_tag_or_a_star_is_not_modified() {
        let v = validators();
        for value in [
            v.etag.clone(),
            format!("W/{}", v.etag),
            format!("\"other\", {}", v.etag),
            "*".to_owned(),
        ] {
            assert_eq!(
                evaluate(&headers(&[("if-none-match", &value)]), &v),
                Outcome::NotModified,
                "{value}"
            );
        }
        assert_eq!(
            evaluate(&headers(&[("if-none-match", "\"other\"")]), &v),
            SERVE
        );
    }

    #[test]
    fn if_modified_since_compares_whole_seconds() {
        let v = validators();
        let same = http_date(1_700_000_000);
        assert_eq!(
            evaluate(&headers(&[("if-modified-since", &same)]), &v),
            Outcome::NotModified
        );
        let later = http_date(1_700_000_100);
        assert_eq!(
            evaluate(&headers(&[("if-modified-since", &later)]), &v),
            Outcome::NotModified
        );
        let earlier = http_date(1_699_999_999);
        assert_eq!(
            evaluate(&headers(&[("if-modified-since", &earlier)]), &v),
            SERVE
        );
        assert_eq!(
            evaluate(&headers(&[("if-modified-since", "yesterday")]), &v),
            SERVE
        );
    }

    #[test]
    fn if_none_match_takes_precedence_over_if_modified_since() {
        let v = validators();
        let same = http_date(1_700_000_000);
        let h = headers(&[("if-none-match", "\"stale\""), ("if-modified-since", &same)]);
        assert_eq!(evaluate(&h, &v), SERVE);
    }

    #[test]
    fn if_match_needs_a_strong_match_and_if_unmodified_since_an_older_file() {
        let v = validators();
        assert_eq!(evaluate(&headers(&[("if-match", &v.etag)]), &v), SERVE);
        assert_eq!(evaluate(&headers(&[("if-match", "*")]), &v), SERVE);
        let weak = format!("W/{}", v.etag);
        assert_eq!(
            evaluate(&headers(&[("if-match", &weak)]), &v),
            Outcome::PreconditionFailed
        );
        let before = http_date(1_699_999_000);
        assert_eq!(
            evaluate(&headers(&[("if-unmodified-since", &before)]), &v),
            Outcome::PreconditionFailed
        );
        let after = http_date(1_700_000_000);
        assert_eq!(
            evaluate(&headers(&[("if-unmodified-since", &after)]), &v),
            SERVE
        );
    }

    #[test]
    fn if_range_allows_the_range_only_for_this_representation() {
        let v = validators();
        let lm = http_date(1_700_000_000);
        for (value, range) in [
            (v.etag.clone(), true),
            (lm, true),
            ("\"old\"".to_owned(), false),
            (format!("W/{}", v.etag), false),
            (http_date(1_600_000_000), false),
            ("garbage".to_owned(), false),
        ] {
            assert_eq!(
                evaluate(&headers(&[("if-range", &value)]), &v),
                Outcome::Serve { range },
                "{value}"
            );
        }
    }

    #[test]
    fn entity_tag_lists_may_hold_commas_inside_tags() {
        let tags: Vec<_> = entity_tags(r#""a,b", W/"c" ,"d""#).collect();
        assert_eq!(tags, [(false, "a,b"), (true, "c"), (false, "d")]);
        assert_eq!(entity_tags("garbage").count(), 0);
    }
}
