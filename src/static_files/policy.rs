//! What headers a served file gets: its `Content-Type`, its `Cache-Control`, and the
//! `immutable` patterns that mark fingerprinted files.
//!
//! Rules:
//! 1. `Content-Type` comes from the file name; text, JavaScript and JSON say `charset=utf-8`;
//!    unknown names are `application/octet-stream` (and `nosniff` keeps them that way).
//! 2. HTML (and the SPA fallback, which is HTML) is `no-cache`: the browser revalidates it
//!    every time, so a deploy is seen at the next navigation.
//! 3. A file matching an `immutable` pattern is `max-age=31536000, immutable`; patterns are
//!    for fingerprinted names only (`assets/index-4f9a1c.js`), whose content never changes.
//! 4. Everything else is `no-cache` (revalidated with its `ETag`, usually a 304).
//! 5. On authenticated routes every directive is `private`, so no shared cache keeps a private
//!    app's files; on public routes immutable files are `public`.

use http::HeaderValue;
use mime_guess::mime::{self, Mime};

/// One year, the longest `max-age` caches honour.
pub const IMMUTABLE_MAX_AGE: u32 = 31_536_000;

/// Who may cache a route's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `auth = "none"`: any cache.
    Public,
    /// Authenticated routes: the browser only.
    Private,
}

/// Rule 1.
pub fn content_type(relative: &str) -> Mime {
    let guessed = mime_guess::from_path(relative).first_or_octet_stream();
    let textual = guessed.type_() == mime::TEXT
        || matches!(guessed.subtype().as_str(), "javascript" | "json")
        || guessed.suffix() == Some(mime::JSON);
    if textual && guessed.get_param(mime::CHARSET).is_none() {
        format!("{guessed}; charset=utf-8")
            .parse()
            .unwrap_or(guessed)
    } else {
        guessed
    }
}

pub fn is_html(mime: &Mime) -> bool {
    mime.type_() == mime::TEXT && mime.subtype() == mime::HTML
}

/// Rules 2-5.
pub fn cache_control(scope: Scope, html: bool, immutable: bool) -> HeaderValue {
    HeaderValue::from_static(match (scope, !html && immutable) {
        (Scope::Public, true) => "public, max-age=31536000, immutable",
        (Scope::Private, true) => "private, max-age=31536000, immutable",
        (Scope::Public, false) => "no-cache",
        (Scope::Private, false) => "private, no-cache",
    })
}

/// A path pattern relative to `static_dir`: segments separated by `/`; `**` matches any
/// number of segments (none included), `*` any run of characters within one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    segments: Vec<String>,
}

impl Pattern {
    /// The error says what is wrong with `raw`, for the config error of its key.
    pub fn parse(raw: &str) -> Result<Pattern, String> {
        if raw.is_empty() || raw.starts_with('/') || raw.ends_with('/') {
            return Err(format!(
                "{raw:?} must be a path relative to static_dir without a leading or trailing /, e.g. \"assets/**\""
            ));
        }
        let segments: Vec<String> = raw.split('/').map(str::to_owned).collect();
        if segments
            .iter()
            .any(|s| s.is_empty() || s == "." || s == ".." || s.contains('\\'))
        {
            return Err(format!(
                "{raw:?} may not have empty, . or .. segments or backslashes"
            ));
        }
        if segments.iter().any(|s| s.contains("**") && s != "**") {
            return Err(format!("{raw:?}: ** must be a whole segment"));
        }
        Ok(Pattern { segments })
    }

    /// Whether `relative` (a decoded `/`-separated path, as the resolver gives it) matches.
    pub fn matches(&self, relative: &str) -> bool {
        let path: Vec<&str> = relative.split('/').collect();
        let pattern: Vec<&str> = self.segments.iter().map(String::as_str).collect();
        match_segments(&pattern, &path)
    }
}

fn match_segments(pattern: &[&str], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((&"**", rest)) => (0..=path.len()).any(|skip| match_segments(rest, &path[skip..])),
        Some((first, rest)) => path
            .split_first()
            .is_some_and(|(segment, tail)| glob(first, segment) && match_segments(rest, tail)),
    }
}

/// `*` matches any run of characters; everything else matches itself.
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        // No `*` at all: the whole text must have been the literal.
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_scripts_say_utf8_and_unknown_names_are_octet_streams() {
        for (name, expected) in [
            ("index.html", "text/html; charset=utf-8"),
            ("assets/app.css", "text/css; charset=utf-8"),
            ("app.json", "application/json; charset=utf-8"),
            ("logo.png", "image/png"),
            ("font.woff2", "font/woff2"),
            ("module.wasm", "application/wasm"),
            ("blob.unknownext", "application/octet-stream"),
            ("noext", "application/octet-stream"),
        ] {
            assert_eq!(content_type(name).to_string(), expected, "{name}");
        }
        let js = content_type("assets/app.js").to_string();
        assert!(
            js.ends_with("javascript; charset=utf-8"),
            "{js} is a JavaScript type with a charset"
        );
        assert!(is_html(&content_type("a/b.htm")));
        assert!(!is_html(&content_type("a.js")));
    }

    #[test]
    fn html_is_never_long_lived_and_private_routes_stay_private() {
        assert_eq!(cache_control(Scope::Public, true, true), "no-cache");
        assert_eq!(
            cache_control(Scope::Public, false, true),
            "public, max-age=31536000, immutable"
        );
        assert_eq!(cache_control(Scope::Public, false, false), "no-cache");
        assert_eq!(
            cache_control(Scope::Private, false, true),
            "private, max-age=31536000, immutable"
        );
        assert_eq!(
            cache_control(Scope::Private, true, false),
            "private, no-cache"
        );
    }

    #[test]
    fn patterns_match_by_segment_with_star_and_double_star() {
        let p = |s| Pattern::parse(s).unwrap();
        assert!(p("assets/**").matches("assets/index-4f9a.js"));
        assert!(p("assets/**").matches("assets/deep/x.css"));
        assert!(!p("assets/**").matches("assetsx/a.js"));
        assert!(!p("assets/**").matches("index.html.assets"));
        assert!(p("**/*.chunk.js").matches("static/js/main.3f2a.chunk.js"));
        assert!(p("**/*.chunk.js").matches("x.chunk.js"));
        assert!(!p("**/*.chunk.js").matches("static/js/main.js"));
        assert!(p("*-*.js").matches("index-Bk3x.js"));
        assert!(
            !p("*-*.js").matches("deep/index-Bk3x.js"),
            "* stays in a segment"
        );
        assert!(p("favicon.ico").matches("favicon.ico"));
        assert!(!p("favicon.ico").matches("favicon.icon"));
        assert!(p("a*b*c").matches("abc") && p("a*b*c").matches("aXbYc"));
        assert!(!p("a*b*c").matches("acb"));
    }

    #[test]
    fn patterns_that_cannot_mean_a_relative_path_are_refused() {
        for bad in [
            "",
            "/assets/**",
            "assets/",
            "a//b",
            "../x",
            "a/./b",
            "a\\b",
            "a**",
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
    }
}
