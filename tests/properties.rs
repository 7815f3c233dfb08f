//! Property tests (proptest) of the security decisions that take untrusted text: redirect
//! targets, sealed values, route matching and the cookie jar. Inputs are built from the
//! pieces known bypasses are made of, so a few hundred cases reach the corners.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse::cookie::{CookieNames, Jar, KEY_LEN, KeyRing};
use gatehouse::fuzzing::{assert_route_is_sound, percent_decode, route_table};
use gatehouse::redirect::safe_return_to;
use gatehouse::routes::is_routable_path;
use gatehouse::session::record;
use http::HeaderValue;
use proptest::prelude::*;
use url::Url;

/// Text made of the pieces open-redirect and path-confusion tricks are made of.
fn tricky(pieces: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => proptest::sample::select(pieces).prop_map(str::to_owned),
        1 => any::<char>().prop_map(String::from),
        2 => "[a-z0-9]{1,4}",
    ];
    proptest::collection::vec(piece, 0..max).prop_map(|v| v.concat())
}

const REDIRECT_PIECES: &[&str] = &[
    "/",
    "//",
    "\\",
    "%2f",
    "%2F",
    "%5c",
    "%5C",
    ".",
    "..",
    "%2e",
    "%2E",
    "%252f",
    "%",
    "%0",
    "\t",
    "\n",
    "\r",
    " ",
    "%09",
    "%0a",
    "%0d",
    "%20",
    "%00",
    "\u{3000}",
    "\u{b}",
    "@",
    ":",
    "?",
    "#",
    "&",
    "=",
    "https:",
    "http:",
    "javascript:",
    "data:",
    "evil.com",
    "app.example.com",
    "127.0.0.1:8080",
    "[::1]",
    "%40",
    "%3a",
    "%3f",
    "%23",
    "\u{0}",
    "\u{7f}",
    "é",
    "'",
    "\"",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn return_to_never_yields_a_location_off_our_origin(raw in tricky(REDIRECT_PIECES, 10)) {
        for origin in ["https://app.example.com", "http://127.0.0.1:8080", "https://[::1]:8443"] {
            let public_origin = Url::parse(origin).unwrap();
            let location = safe_return_to(Some(&raw), &public_origin);
            // As a browser does: resolve the Location against the page that carried it.
            let page = public_origin.join("/auth/callback?code=c&state=s").unwrap();
            let resolved = page.join(&location).unwrap();
            prop_assert_eq!(resolved.origin(), public_origin.origin(), "{:?} -> {:?}", raw, location);
            prop_assert!(location.starts_with('/') && !location.starts_with("//"));
            prop_assert!(location.bytes().all(|b| (0x21..=0x7E).contains(&b) && b != b'\\'));
        }
    }
}

/// Flips every bit of `raw` in turn and hands each result to `opens`.
fn every_single_bit_flip(raw: &[u8], mut opens: impl FnMut(&[u8]) -> bool) -> Option<usize> {
    let mut flipped = raw.to_vec();
    for bit in 0..raw.len() * 8 {
        flipped[bit / 8] ^= 1 << (bit % 8);
        if opens(&flipped) {
            return Some(bit);
        }
        flipped[bit / 8] ^= 1 << (bit % 8);
    }
    None
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn a_sealed_cookie_opens_as_sealed_and_no_single_bit_flip_opens(
        key in any::<[u8; KEY_LEN]>(),
        name in "[A-Za-z0-9_.-]{1,40}",
        plaintext in proptest::collection::vec(any::<u8>(), 0..120),
    ) {
        let ring = KeyRing::new(vec![key]);
        let sealed = ring.seal(&name, &plaintext);
        let opened = ring.open(&name, &sealed);
        prop_assert_eq!(opened.as_deref().map(Vec::as_slice), Some(plaintext.as_slice()));
        let other_name = format!("{name}x");
        prop_assert!(ring.open(&other_name, &sealed).is_none());
        let raw = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        let flip = every_single_bit_flip(&raw, |f| ring.open(&name, &URL_SAFE_NO_PAD.encode(f)).is_some());
        prop_assert_eq!(flip, None, "a flipped bit of the sealed bytes opened");
        // The cookie text too, bit by bit (a flip that makes it invalid UTF-8 cannot be sent).
        let flip = every_single_bit_flip(sealed.as_bytes(), |f| {
            std::str::from_utf8(f).is_ok_and(|text| ring.open(&name, text).is_some())
        });
        prop_assert_eq!(flip, None, "a flipped bit of the cookie text opened");
    }

    #[test]
    fn a_sealed_session_record_opens_as_sealed_and_no_single_bit_flip_opens(
        key in any::<[u8; record::RECORD_KEY_LEN]>(),
        store_key in "[a-z:0-9]{1,40}",
        value in ".{0,100}",
    ) {
        let sealed = record::seal(&key, &store_key, &value).unwrap();
        prop_assert_eq!(record::open::<String>(&key, &store_key, &sealed), Some(value));
        let other_key = format!("{store_key}x");
        prop_assert!(record::open::<String>(&key, &other_key, &sealed).is_none());
        let flip = every_single_bit_flip(&sealed, |f| record::open::<String>(&key, &store_key, f).is_some());
        prop_assert_eq!(flip, None, "a flipped bit of the record opened");
    }
}

const PATH_PIECES: &[&str] = &[
    "/", "//", "api", "ap", "i", "a", "admin", "%61", "%41", "%69", "%2f", "%2F", "%5c", "%2e",
    "%252e", ".", "..", ";", "%3b", "%20", "%7e", "~", "-", "_", "%2d", "%5f", "%00", "%",
    "%C3%A9", "?", "#", "\\",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn route_match_never_picks_a_route_the_decoded_path_is_not_under(
        prefixes in proptest::collection::vec(
            proptest::sample::select(&["/", "/api", "/api/", "/api/admin", "/a", "/a/i", "/admin/", "/~x", "/a-b"][..]),
            1..5,
        ),
        path in tricky(PATH_PIECES, 8).prop_map(|p| format!("/{p}")),
    ) {
        let table = route_table(&prefixes);
        if is_routable_path(&path) {
            let decoded = String::from_utf8_lossy(&percent_decode(path.as_bytes())).into_owned();
            let picked = table.find(&path).map(|r| r.prefix.as_str());
            assert_route_is_sound(&prefixes, &path, &decoded, picked);
            prop_assert_eq!(picked, table.find(&decoded).map(|r| r.prefix.as_str()), "{:?} decodes to {:?}", path, decoded);
        }
    }
}

const SESSION: &str = "__Host-g";

fn cookie_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(SESSION.to_owned()),
        Just(format!("{SESSION}-login-ab")),
        Just(format!("{SESSION}-login")),
        Just(" __Host-g".to_owned()),
        Just("__host-g".to_owned()),
        Just("__Host-gg".to_owned()),
        Just(String::new()),
        "[a-zA-Z_=\"-]{1,8}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_jar_never_forwards_our_own_cookies(
        cookies in proptest::collection::vec((cookie_name(), "[ -~]{0,12}", 0usize..3), 0..8),
        separator in proptest::sample::select(&[";", "; ", " ;", ";;", "; ;"][..]),
        real_at in 0usize..8,
    ) {
        let ring = KeyRing::new(vec![[3; KEY_LEN]]);
        let real = ring.seal(SESSION, b"the real session");
        let mut headers: Vec<Vec<String>> = vec![Vec::new(); 3];
        for (i, (name, value, header)) in cookies.iter().enumerate() {
            if i == real_at {
                headers[*header].push(format!("{SESSION}={real}"));
            }
            headers[*header].push(format!("{name}={value}"));
        }
        if real_at >= cookies.len() {
            headers[0].push(format!("{SESSION}={real}"));
        }
        let raw: Vec<HeaderValue> = headers
            .iter()
            .filter(|h| !h.is_empty())
            .filter_map(|h| HeaderValue::from_str(&h.join(separator)).ok())
            .collect();
        let names = CookieNames::new(SESSION);
        let jar = Jar::from_values(raw, &names);
        prop_assert!(jar.session_values().any(|v| ring.open(SESSION, v).is_some()));
        if let Some(forwarded) = jar.forward() {
            let text = forwarded.to_str().unwrap();
            prop_assert!(!text.contains(&real), "forwarded {:?}", text);
            let again = Jar::from_values(vec![forwarded.clone()], &names);
            prop_assert!(!again.has_session_cookie() && again.login_cookies().next().is_none());
        }
    }
}
