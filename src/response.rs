//! Response bodies and builders for what gatehouse answers itself (JSON, small HTML pages,
//! redirects). Proxied responses stream the upstream's body through untouched, and static
//! routes stream files.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{Either, Full};

/// A streamed upstream body, one gatehouse wrote, or a file of a static route.
pub type Body = Either<Streamed, Either<Full<Bytes>, FileBody>>;

/// An upstream's body, passed on frame by frame (see [`crate::proxy::stream`]).
pub type Streamed = crate::proxy::stream::Watched<crate::proxy::pool::Returning>;

/// A file streamed by a static route.
pub type FileBody = tower_http::services::fs::ServeFileSystemResponseBody;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Either::Right(Either::Left(Full::new(bytes.into())))
}

pub fn file(body: FileBody) -> Body {
    Either::Right(Either::Right(body))
}

fn with_type(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut res = Response::new(full(body));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    with_type(
        status,
        "application/json",
        serde_json::to_vec(value).unwrap_or_default(),
    )
}

pub fn html(status: StatusCode, page: String) -> Response<Body> {
    let mut res = with_type(status, "text/html; charset=utf-8", page);
    let h = res.headers_mut();
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    res
}

/// `302 Found` to `location` (already validated or built by us).
pub fn redirect(location: &str) -> Response<Body> {
    let mut res = Response::new(full(Bytes::new()));
    *res.status_mut() = StatusCode::FOUND;
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(LOCATION, v);
    }
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    res
}

/// HTML-escapes text for element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A minimal page: a title and a paragraph, both escaped.
pub fn page(title: &str, message: &str, link: Option<(&str, &str)>) -> String {
    let link = link
        .map(|(href, text)| format!("<p><a href=\"{}\">{}</a></p>", escape(href), escape(text)))
        .unwrap_or_default();
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem}}</style>\
         </head><body><h1>{t}</h1><p>{m}</p>{link}</body></html>",
        t = escape(title),
        m = escape(message),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_what_they_echo() {
        let p = page(
            "<t>",
            "\"><script>alert(1)</script>",
            Some(("/x?a=\"b", "go")),
        );
        assert!(!p.contains("<script>"));
        assert!(p.contains("&lt;script&gt;") && p.contains("&quot;b"));
    }
}
