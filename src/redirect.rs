//! Where a browser may be sent after login or logout: `return_to` and post-logout targets.
//! An open redirect here hands a phishing page our domain's trust, so this is an allow-list.
//!
//! A target is accepted only when all of these hold; anything else becomes `/`:
//!
//! 1. It starts with exactly one `/`, followed by nothing or by a printable character that is
//!    not `/` or `\` (no protocol-relative `//host`, no `/\host`, no `scheme:`).
//! 2. Every byte is printable ASCII (`0x21..=0x7E`) other than `\`: no raw space, tab, CR, LF,
//!    NUL or other control, and no non-ASCII look-alikes such as `/\u{3000}/host`.
//! 3. One more percent-decoding pass (exactly one: `%252f` stays `%2f`) must not reveal a
//!    trick for whoever decodes it next. In the path: no escape may decode to `/`, `\` or a
//!    control character, the decoded path must still satisfy rules 1 and 2 up to its second
//!    byte (so `/%20/host` is refused), and no segment may be `.` or `..`, literal or `%2e`.
//!    In the query and fragment: no escape may decode to a control character. Every other
//!    escape, `%20` and `%2F` in a query included, is kept as it is.
//! 4. Resolved against the public origin with the WHATWG parser, it keeps that origin.
//! 5. It is at most 2048 bytes long, both as given and as re-serialized.
//!
//! The value returned is the resolved URL's path, query and fragment, not the input, and it is
//! checked against rules 1-3 and 5 again: what goes into `Location` is what a browser resolves.

use url::{Position, Url};

/// Longest target we accept, in bytes.
const MAX_LEN: usize = 2048;

/// Where every refused target goes.
const FALLBACK: &str = "/";

/// Returns the safe same-origin relative target, or "/" when `raw` is anything else.
///
/// `raw` is the query value already percent-decoded once by the caller.
pub fn safe_return_to(raw: Option<&str>, public_origin: &Url) -> String {
    raw.and_then(|raw| resolve(raw, public_origin))
        .unwrap_or_else(|| FALLBACK.to_owned())
}

/// Rules 1-5 in order; `None` means "use the fallback".
fn resolve(raw: &str, public_origin: &Url) -> Option<String> {
    if !is_safe_target(raw) {
        return None;
    }
    let joined = public_origin.join(raw).ok()?;
    if joined.origin() != public_origin.origin() {
        return None;
    }
    let target = &joined[Position::BeforePath..];
    // The parser normalizes (dot segments, percent-encoding), so the output is checked again:
    // `/..//host` would otherwise come out as the protocol-relative `//host`.
    is_safe_target(target).then(|| target.to_owned())
}

/// Rules 1, 2, 3 and 5, which depend on the text alone.
fn is_safe_target(target: &str) -> bool {
    let bytes = target.as_bytes();
    if bytes.len() > MAX_LEN || !has_safe_head(bytes) || !bytes.iter().all(|&b| is_allowed(b)) {
        return false;
    }
    let path_end = bytes
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(bytes.len());
    let (path, rest) = bytes.split_at(path_end);
    let path_ok = decode_once(path, |b| matches!(b, b'/' | b'\\') || b.is_ascii_control())
        .is_some_and(|path| has_safe_head(&path) && !has_dot_segment(&path));
    path_ok && decode_once(rest, |b| b.is_ascii_control()).is_some()
}

/// Rule 2's alphabet: printable ASCII without the backslash.
fn is_allowed(b: u8) -> bool {
    (0x21..=0x7E).contains(&b) && b != b'\\'
}

/// Rule 1: `/` alone, or `/` then a printable byte that is neither `/` nor `\`.
fn has_safe_head(bytes: &[u8]) -> bool {
    match bytes {
        [b'/'] => true,
        [b'/', second, ..] => is_allowed(*second) && *second != b'/',
        _ => false,
    }
}

/// Rule 3's dot segments: `.` or `..` between slashes.
fn has_dot_segment(path: &[u8]) -> bool {
    path.split(|&b| b == b'/')
        .any(|segment| segment == b"." || segment == b"..")
}

/// Decodes every valid `%XY` escape once, leaving a malformed `%` as is. `None` when an escape
/// decodes to a `forbidden` byte (rule 3).
fn decode_once(bytes: &[u8], forbidden: impl Fn(u8) -> bool) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some((&b, tail)) = rest.split_first() {
        if let (b'%', [hi, lo, after @ ..]) = (b, tail)
            && let (Some(hi), Some(lo)) = (hex_value(*hi), hex_value(*lo))
        {
            let decoded = (hi << 4) | lo;
            if forbidden(decoded) {
                return None;
            }
            out.push(decoded);
            rest = after;
            continue;
        }
        out.push(b);
        rest = tail;
    }
    Some(out)
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &str = "https://app.example.com";

    fn check(raw: Option<&str>) -> String {
        safe_return_to(raw, &Url::parse(OURS).unwrap())
    }

    /// Each of these must fall back to `/`.
    const REFUSED: &[&str] = &[
        // Protocol-relative and backslash forms.
        "/\\evil.com",
        "//evil.com",
        "///evil.com",
        "\\\\evil.com",
        "\\/evil.com",
        "/./\\evil.com",
        "/\\app.example.com/a?https://app.example.com/logout",
        // Whitespace and controls after the slash, raw and escaped.
        "/\t/evil.com",
        "/\u{b}/evil.com",
        "/\n/evil.com",
        "/\r/evil.com",
        "/ /evil.com",
        "/\0/evil.com",
        "/%09/evil.com",
        "/%0b/evil.com",
        "/%0B/evil.com",
        "/%0a/evil.com",
        "/%0d/evil.com",
        "/%20/evil.com",
        "/%00/evil.com",
        "/%7f/evil.com",
        // Escaped slashes, backslashes and dot segments.
        "/%2f%2fevil.com",
        "/%2F%2Fevil.com",
        "/%5cevil.com",
        "/%5Cevil.com",
        "/a%2fb",
        "/%2e%2e//evil.com",
        "/%2E%2E//evil.com",
        "/.%2e//evil.com",
        "/..//evil.com",
        "/.//evil.com",
        "/a/..//evil.com",
        "/a/./b",
        "/a/%2e/b",
        // Controls hidden in the query or fragment.
        "/a?x=%0d%0aSet-Cookie:x=1",
        "/a#%00",
        // Absolute URLs and other schemes.
        "https:evil.com",
        "http:/evil.com",
        "https://evil.com",
        "HTTPS://evil.com",
        "https://app.example.com@evil.com",
        "https://google.fr\\.app.example.com",
        "https://app.example.com/app",
        "javascript:alert(1)",
        "%01javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        "data:text/html,x",
        // Relative forms that are not path-absolute.
        "evil.com",
        "",
        "?x=1",
        "#frag",
        "%2fevil.com",
        // Non-ASCII, raw and escaped at the head.
        "/é",
        "/\u{3000}/evil.com",
        "〱evil.com",
        "/%E3%80%80/evil.com",
    ];

    #[test]
    fn bypass_corpus_falls_back_to_root() {
        for raw in REFUSED {
            assert_eq!(check(Some(raw)), "/", "accepted {raw:?}");
        }
    }

    #[test]
    fn missing_value_falls_back_to_root() {
        assert_eq!(check(None), "/");
    }

    #[test]
    fn overlong_target_falls_back_to_root() {
        let long = format!("/{}", "a".repeat(4999));
        assert_eq!(check(Some(&long)), "/");
        let at_limit = format!("/{}", "a".repeat(MAX_LEN - 1));
        assert_eq!(check(Some(&at_limit)), at_limit);
    }

    #[test]
    fn same_origin_paths_are_kept() {
        let accepted = [
            "/",
            "/app",
            "/app/",
            "/app/page?x=1&y=2#frag",
            "/a/b%20c",
            "/caf%C3%A9",
            "/a?next=//evil.com",
            "/a?x=%2f",
            "/a%252fb",
            "/100%",
            "/?x=1",
            "/#top",
            "/a..b/.c",
        ];
        for raw in accepted {
            assert_eq!(check(Some(raw)), raw, "refused {raw:?}");
        }
    }

    #[test]
    fn escaped_space_is_kept_but_raw_space_is_not() {
        assert_eq!(check(Some("/a%20b")), "/a%20b");
        assert_eq!(check(Some("/a b")), "/");
    }

    #[test]
    fn result_is_the_browser_serialization_not_the_input() {
        assert_eq!(check(Some("/a\"b")), "/a%22b");
        assert_eq!(check(Some("/a<b>")), "/a%3Cb%3E");
        assert_eq!(check(Some("/a{b}?q='x'")), "/a%7Bb%7D?q=%27x%27");
    }

    #[test]
    fn origin_with_a_path_or_port_still_compares_origins() {
        let base = Url::parse("http://127.0.0.1:8080/gatehouse/").unwrap();
        assert_eq!(safe_return_to(Some("/app"), &base), "/app");
        assert_eq!(safe_return_to(Some("//127.0.0.1:9090/app"), &base), "/");
        assert_eq!(
            safe_return_to(Some("http://127.0.0.1:8080@evil.com/"), &base),
            "/"
        );
    }
}
