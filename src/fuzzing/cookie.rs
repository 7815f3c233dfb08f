//! The `cookie_jar` target: the request's `Cookie` headers through [`Jar`], and the values
//! found opened with [`KeyRing::open`], for any session cookie name.

use http::HeaderValue;

use crate::cookie::{CookieNames, Jar, KEY_LEN, KeyRing};

const DEFAULT_NAME: &str = "__Host-g";

/// Input: the session cookie's name on the first line (used when it is a valid name), then
/// one `Cookie` header value per line. A sealed session cookie and a sealed login cookie are
/// then planted among those pairs, as a browser would send them.
pub fn cookie_jar(data: &[u8]) {
    let mut lines = data.split(|&b| b == b'\n');
    let first = lines.next().unwrap_or_default();
    let name = std::str::from_utf8(first)
        .ok()
        .filter(|n| is_cookie_name(n))
        .unwrap_or(DEFAULT_NAME);
    let names = CookieNames::new(name);
    let mut headers: Vec<HeaderValue> = lines
        .filter_map(|l| HeaderValue::from_bytes(l).ok())
        .collect();
    check_jar(&names, &Jar::from_values(headers.clone(), &names), &headers);

    let ring = KeyRing::new(vec![[7; KEY_LEN], [9; KEY_LEN]]);
    for (name, value) in text_pairs(data) {
        let _ = ring.open(name, value);
    }
    let plaintext = &data[..data.len().min(48)];
    let session = ring.seal(&names.session, plaintext);
    let login_name = format!("{}-{}", names.login_prefix, data.len() % 1000);
    let login = ring.seal(&login_name, plaintext);
    let seed = data
        .iter()
        .fold(0usize, |a, &b| a.wrapping_mul(31) ^ usize::from(b));
    plant(&mut headers, seed, &format!("{}={session}", names.session));
    plant(&mut headers, seed / 7, &format!("{login_name}={login}"));
    let jar = Jar::from_values(headers.clone(), &names);
    check_jar(&names, &jar, &headers);

    let opened = jar
        .session_values()
        .find_map(|v| ring.open(&names.session, v));
    assert_eq!(opened.as_deref().map(Vec::as_slice), Some(plaintext));
    let opened = jar
        .login_cookies()
        .filter(|(n, _)| *n == login_name)
        .find_map(|(_, v)| ring.open(&login_name, v));
    assert_eq!(opened.as_deref().map(Vec::as_slice), Some(plaintext));
    assert!(
        ring.open(&login_name, &session).is_none(),
        "a session value opened as a login cookie"
    );
    if let Some(forwarded) = jar.forward() {
        let text = String::from_utf8_lossy(forwarded.as_bytes());
        assert!(!text.contains(&session), "the session cookie was forwarded");
        assert!(!text.contains(&login), "a login cookie was forwarded");
    }
}

/// The jar agrees with a plain reading of the headers, and forwards exactly the foreign pairs.
fn check_jar(names: &CookieNames, jar: &Jar, headers: &[HeaderValue]) {
    let all: Vec<(&[u8], &[u8])> = headers.iter().flat_map(|h| pairs(h.as_bytes())).collect();
    let text = |b: &[u8]| std::str::from_utf8(b).unwrap_or("").to_owned();
    let session: Vec<String> = all
        .iter()
        .filter(|(n, _)| *n == names.session.as_bytes())
        .map(|(_, v)| text(v))
        .collect();
    assert_eq!(jar.session_values().collect::<Vec<_>>(), session);
    assert_eq!(jar.has_session_cookie(), !session.is_empty());
    let login: Vec<(String, String)> = all
        .iter()
        .filter(|(n, _)| n.starts_with(names.login_prefix.as_bytes()))
        .map(|(n, v)| (text(n), text(v)))
        .collect();
    let found: Vec<(String, String)> = jar
        .login_cookies()
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(found, login);

    let ours =
        |n: &[u8]| n == names.session.as_bytes() || n.starts_with(names.login_prefix.as_bytes());
    let foreign: Vec<&(&[u8], &[u8])> = all.iter().filter(|(n, _)| !ours(n)).collect();
    let forwarded = jar.forward();
    assert_eq!(
        forwarded.is_some(),
        !foreign.is_empty(),
        "foreign cookies must be forwarded, and nothing else"
    );
    if let Some(h) = forwarded {
        let again: Vec<(&[u8], &[u8])> = pairs(h.as_bytes());
        assert_eq!(again.iter().collect::<Vec<_>>(), foreign);
        let rejar = Jar::from_values(vec![h.clone()], names);
        assert!(!rejar.has_session_cookie() && rejar.login_cookies().next().is_none());
    }
}

/// A plain reading of one `Cookie` header: `;`-separated, trimmed, split at the first `=`,
/// surrounding quotes dropped; pairs without `=` or with an empty name skipped.
fn pairs(header: &[u8]) -> Vec<(&[u8], &[u8])> {
    header
        .split(|&b| b == b';')
        .filter_map(|segment| {
            let eq = segment.iter().position(|&b| b == b'=')?;
            let name = segment[..eq].trim_ascii();
            let mut value = segment[eq + 1..].trim_ascii();
            if name.is_empty() {
                return None;
            }
            if value.len() >= 2 && value.starts_with(b"\"") && value.ends_with(b"\"") {
                value = &value[1..value.len() - 1];
            }
            Some((name, value))
        })
        .collect()
}

/// Inserts `pair` as a pair of its own into one of the headers (or a new one), between two
/// of its pairs: where a browser puts a cookie among others.
fn plant(headers: &mut Vec<HeaderValue>, seed: usize, pair: &str) {
    let at = seed % (headers.len() + 1);
    let Some(header) = headers.get(at) else {
        headers.extend(HeaderValue::from_str(pair).ok());
        return;
    };
    let segments: Vec<&[u8]> = header.as_bytes().split(|&b| b == b';').collect();
    let cut = (seed / 3) % (segments.len() + 1);
    let mut out = segments[..cut].join(&b';');
    if !out.is_empty() {
        out.extend_from_slice(b"; ");
    }
    out.extend_from_slice(pair.as_bytes());
    if cut < segments.len() {
        out.extend_from_slice(b"; ");
        out.extend_from_slice(&segments[cut..].join(&b';'));
    }
    if let Ok(v) = HeaderValue::from_bytes(&out) {
        headers[at] = v;
    }
}

/// (name, value) pairs of the input itself, for `KeyRing::open` on arbitrary text.
fn text_pairs(data: &[u8]) -> Vec<(&str, &str)> {
    let text = std::str::from_utf8(data).unwrap_or("");
    text.split(['\n', ';'])
        .filter_map(|pair| pair.split_once('='))
        .collect()
}

fn is_cookie_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}
