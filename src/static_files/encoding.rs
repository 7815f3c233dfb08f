//! Precompressed variants: which of `<file>.br` and `<file>.gz` the client's `Accept-Encoding`
//! allows, best first. A coding is acceptable when it is listed (or matched by `*`) with a
//! `q` above zero; ties prefer brotli. Nothing is compressed on the fly.

use http::HeaderMap;
use http::header::ACCEPT_ENCODING;

/// A precompressed sibling we know how to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Br,
    Gzip,
}

impl Encoding {
    /// The `Content-Encoding` token.
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Br => "br",
            Encoding::Gzip => "gzip",
        }
    }

    /// The sibling's file name suffix.
    pub fn suffix(self) -> &'static str {
        match self {
            Encoding::Br => ".br",
            Encoding::Gzip => ".gz",
        }
    }
}

/// The acceptable precompressed encodings, best first.
pub fn acceptable(headers: &HeaderMap) -> Vec<Encoding> {
    let mut br = None;
    let mut gzip = None;
    let mut star = None;
    for value in headers.get_all(ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.to_ascii_lowercase().split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            match coding {
                "br" => br = Some(q),
                "gzip" | "x-gzip" => gzip = Some(q),
                "*" => star = Some(q),
                _ => {}
            }
        }
    }
    let mut ranked: Vec<(Encoding, f32)> = [(Encoding::Br, br), (Encoding::Gzip, gzip)]
        .into_iter()
        .filter_map(|(e, q)| q.or(star).map(|q| (e, q)))
        .filter(|(_, q)| *q > 0.0)
        .collect();
    // Stable: equal weights keep brotli first.
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked.into_iter().map(|(e, _)| e).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn accept(value: &str) -> Vec<Encoding> {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT_ENCODING, HeaderValue::from_str(value).unwrap());
        acceptable(&h)
    }

    #[test]
    fn browsers_get_brotli_first_then_gzip() {
        assert_eq!(
            accept("gzip, deflate, br, zstd"),
            [Encoding::Br, Encoding::Gzip]
        );
        assert_eq!(accept("gzip"), [Encoding::Gzip]);
    }

    #[test]
    fn weights_order_and_zero_refuses() {
        assert_eq!(
            accept("br;q=0.5, gzip;q=0.8"),
            [Encoding::Gzip, Encoding::Br]
        );
        assert_eq!(accept("br;q=0, gzip"), [Encoding::Gzip]);
        assert_eq!(accept("*;q=0"), []);
        assert_eq!(accept("*"), [Encoding::Br, Encoding::Gzip]);
        assert_eq!(accept("gzip;q=0, *"), [Encoding::Br]);
    }

    #[test]
    fn no_header_or_identity_only_means_the_plain_file() {
        assert!(acceptable(&HeaderMap::new()).is_empty());
        assert!(accept("identity").is_empty());
        assert!(accept("deflate, zstd").is_empty());
    }
}
