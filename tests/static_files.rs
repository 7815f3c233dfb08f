//! Static routes: gatehouse serving an SPA's files from a directory, through the whole
//! pipeline. Each test builds its own fixture directory (`site/`, with `secret.txt` beside it
//! that must never be served) and its own gatehouse.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod support;

use std::path::Path;

use reqwest::{Method, StatusCode};
use support::*;

const SECRET: &str = "TOP-SECRET-OUTSIDE-THE-ROOT";
const INDEX: &str =
    "<!doctype html><title>INDEX-PAGE</title><script src=\"/assets/app-4f9a1c2b.js\"></script>";
const APP_JS: &str = "console.log('PLAIN-JS');";
/// 40 bytes, for ranges.
const DIGITS: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCD";

/// The files every test serves, in `outer/site`, and `outer/secret.txt` outside it.
struct Site {
    _outer: tempfile::TempDir,
    root: std::path::PathBuf,
}

fn site() -> Site {
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("site");
    for dir in ["assets", "about", "empty"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    let files: &[(&str, &[u8])] = &[
        ("index.html", INDEX.as_bytes()),
        ("about/index.html", b"<!doctype html>ABOUT-PAGE"),
        ("assets/app-4f9a1c2b.js", APP_JS.as_bytes()),
        ("assets/app-4f9a1c2b.js.br", b"BROTLI-BYTES"),
        ("assets/app-4f9a1c2b.js.gz", b"GZIP-BYTES"),
        ("assets/page.html", b"<!doctype html>ASSET-PAGE"),
        ("style.css", b"body{}"),
        ("data.json", b"{\"a\":1}"),
        ("logo.png", b"\x89PNG\r\n\x1a\n"),
        ("blob.unknown-ext", b"???"),
        ("digits.txt", DIGITS.as_bytes()),
        (".env", b"SECRET_ENV=1"),
    ];
    for (path, body) in files {
        std::fs::write(root.join(path), body).unwrap();
    }
    let secret = outer.path().join("secret.txt");
    std::fs::write(&secret, SECRET).unwrap();
    std::os::unix::fs::symlink(&secret, root.join("leak.txt")).unwrap();
    std::os::unix::fs::symlink(outer.path(), root.join("up")).unwrap();
    // A precompressed sibling that points out of the root must not be used either.
    std::os::unix::fs::symlink(&secret, root.join("style.css.br")).unwrap();
    Site {
        _outer: outer,
        root,
    }
}

fn toml_str(path: &Path) -> String {
    toml::Value::String(path.display().to_string()).to_string()
}

struct Static {
    _site: Site,
    _provider: TestProvider,
    gh: Gatehouse,
}

impl Static {
    async fn start() -> Static {
        let site = site();
        let provider = TestProvider::start(ProviderOptions::default()).await;
        let dir = toml_str(&site.root);
        let toml = format!(
            r#"
[server]
listen = "{{listen}}"
public_origin = "{{origin}}"

[oidc]
issuer = "{issuer}"
client_id = "{client_id}"
client_secret = "{secret}"

[session]
keys = ["{KEY_A}"]

[[routes]]
path = "/"
static_dir = {dir}
spa_fallback = "index.html"
auth = "none"
immutable = ["assets/**"]

[[routes]]
path = "/plain/"
static_dir = {dir}
auth = "none"

[[routes]]
path = "/custom/"
static_dir = {dir}
auth = "none"
content_security_policy = "default-src 'none'; script-src 'self'"

[[routes]]
path = "/private/"
static_dir = {dir}
spa_fallback = "index.html"
auth = "required"
immutable = ["assets/**"]
"#,
            issuer = provider.issuer(),
            client_id = provider.options().client_id,
            secret = provider.options().client_secret,
        );
        let gh = Gatehouse::start(&toml).await;
        Static {
            _site: site,
            _provider: provider,
            gh,
        }
    }

    fn browser(&self) -> Browser {
        Browser::new(&self.gh.origin)
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        self.request(Method::GET, path, headers).await
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let mut req = client.request(method, self.gh.url(path));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req.send().await.unwrap()
    }
}

fn header(res: &reqwest::Response, name: &str) -> String {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// What a browser sends when the user follows a link or types a URL.
const NAVIGATION: &[(&str, &str)] = &[
    ("accept", "text/html,application/xhtml+xml,*/*;q=0.8"),
    ("sec-fetch-mode", "navigate"),
    ("sec-fetch-dest", "document"),
    ("sec-fetch-site", "none"),
];

#[tokio::test]
async fn files_are_served_with_their_content_type_and_nosniff() {
    let s = Static::start().await;
    for (path, expected) in [
        ("/", "text/html; charset=utf-8"),
        ("/index.html", "text/html; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
        ("/data.json", "application/json; charset=utf-8"),
        ("/logo.png", "image/png"),
        ("/blob.unknown-ext", "application/octet-stream"),
    ] {
        let res = s.get(path, &[]).await;
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(header(&res, "content-type"), expected, "{path}");
        assert_eq!(header(&res, "x-content-type-options"), "nosniff", "{path}");
    }
    let js = s.get("/assets/app-4f9a1c2b.js", &[]).await;
    assert!(header(&js, "content-type").contains("javascript; charset=utf-8"));
    assert_eq!(js.text().await.unwrap(), APP_JS);
    let page = s.get("/", &[]).await;
    assert_eq!(page.text().await.unwrap(), INDEX);
}

#[tokio::test]
async fn etag_and_last_modified_answer_conditional_requests_with_304() {
    let s = Static::start().await;
    let first = s.get("/style.css", &[]).await;
    let etag = header(&first, "etag");
    let last_modified = header(&first, "last-modified");
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    assert!(last_modified.ends_with("GMT"), "{last_modified}");

    for conditional in [
        [("if-none-match", etag.as_str())],
        [("if-modified-since", last_modified.as_str())],
    ] {
        let res = s.get("/style.css", &conditional).await;
        assert_eq!(res.status(), 304, "{conditional:?}");
        assert_eq!(header(&res, "etag"), etag);
        assert_eq!(header(&res, "cache-control"), "no-cache");
        assert!(res.bytes().await.unwrap().is_empty());
    }
    let changed = s.get("/style.css", &[("if-none-match", "\"other\"")]).await;
    assert_eq!(changed.status(), 200);
    let both = s
        .get(
            "/style.css",
            &[
                ("if-none-match", "\"other\""),
                ("if-modified-since", &last_modified),
            ],
        )
        .await;
    assert_eq!(both.status(), 200, "If-None-Match takes precedence");
    let failed = s.get("/style.css", &[("if-match", "\"other\"")]).await;
    assert_eq!(failed.status(), 412);
}

#[tokio::test]
async fn range_requests_get_206_and_unsatisfiable_ones_416() {
    let s = Static::start().await;
    let part = s.get("/digits.txt", &[("range", "bytes=2-5")]).await;
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&part, "content-range"), "bytes 2-5/40");
    assert!(header(&part, "content-type").starts_with("text/plain"));
    assert!(!header(&part, "etag").is_empty());
    assert_eq!(part.text().await.unwrap(), "2345");

    let suffix = s.get("/digits.txt", &[("range", "bytes=-4")]).await;
    assert_eq!(suffix.status(), 206);
    assert_eq!(suffix.text().await.unwrap(), "ABCD");

    let beyond = s.get("/digits.txt", &[("range", "bytes=100-200")]).await;
    assert_eq!(beyond.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&beyond, "content-range"), "bytes */40");

    let etag = header(&s.get("/digits.txt", &[]).await, "etag");
    let same = s
        .get(
            "/digits.txt",
            &[("range", "bytes=0-0"), ("if-range", &etag)],
        )
        .await;
    assert_eq!(same.status(), 206, "If-Range with the current tag");
    let stale = s
        .get(
            "/digits.txt",
            &[("range", "bytes=0-0"), ("if-range", "\"old\"")],
        )
        .await;
    assert_eq!(
        stale.status(),
        200,
        "If-Range with an old tag: the whole file"
    );
    assert_eq!(stale.text().await.unwrap(), DIGITS);
    let multi = s.get("/digits.txt", &[("range", "bytes=0-1,4-5")]).await;
    assert_eq!(multi.status(), 200, "several ranges: the whole file");
}

#[tokio::test]
async fn precompressed_siblings_are_served_when_accept_encoding_allows_them() {
    let s = Static::start().await;
    let path = "/assets/app-4f9a1c2b.js";
    let br = s
        .get(path, &[("accept-encoding", "gzip, deflate, br")])
        .await;
    assert_eq!(header(&br, "content-encoding"), "br");
    assert!(header(&br, "content-type").contains("javascript"));
    assert_eq!(header(&br, "vary"), "Accept-Encoding");
    let br_tag = header(&br, "etag");
    assert_eq!(br.text().await.unwrap(), "BROTLI-BYTES");

    let gz = s.get(path, &[("accept-encoding", "br;q=0, gzip")]).await;
    assert_eq!(header(&gz, "content-encoding"), "gzip");
    let gz_tag = header(&gz, "etag");
    assert_eq!(gz.text().await.unwrap(), "GZIP-BYTES");

    let plain = s.get(path, &[]).await;
    assert!(plain.headers().get("content-encoding").is_none());
    assert_eq!(header(&plain, "vary"), "Accept-Encoding");
    let plain_tag = header(&plain, "etag");
    assert_eq!(plain.text().await.unwrap(), APP_JS);
    assert!(
        br_tag != gz_tag && gz_tag != plain_tag && br_tag != plain_tag,
        "each encoding is its own representation"
    );

    let not_for_br = s
        .get(
            path,
            &[("if-none-match", &plain_tag), ("accept-encoding", "br")],
        )
        .await;
    assert_eq!(
        not_for_br.status(),
        200,
        "the plain file's tag does not validate the br one"
    );

    let escaping = s.get("/style.css", &[("accept-encoding", "br")]).await;
    assert!(
        escaping.headers().get("content-encoding").is_none(),
        "a sibling that is a symlink out of the root is ignored"
    );
    assert_eq!(escaping.text().await.unwrap(), "body{}");
}

#[tokio::test]
async fn the_fallback_answers_client_side_routes_as_html_with_no_cache() {
    let s = Static::start().await;
    let route = s.get("/users/42/settings", NAVIGATION).await;
    assert_eq!(route.status(), 200);
    assert_eq!(header(&route, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&route, "cache-control"), "no-cache");
    assert!(header(&route, "vary").contains("Accept"));
    assert!(header(&route, "content-security-policy").contains("default-src 'self'"));
    assert_eq!(route.text().await.unwrap(), INDEX);

    let head = s.request(Method::HEAD, "/users/42", NAVIGATION).await;
    assert_eq!(head.status(), 200);
    assert_eq!(header(&head, "content-length"), INDEX.len().to_string());

    let stale_script = s.get("/assets/app-old.js", &[("accept", "*/*")]).await;
    assert_eq!(
        stale_script.status(),
        404,
        "a missing script is not answered with HTML"
    );
    let body: serde_json::Value = stale_script.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
}

#[tokio::test]
async fn a_missing_file_without_spa_fallback_is_404() {
    let s = Static::start().await;
    assert_eq!(s.get("/plain/style.css", &[]).await.status(), 200);
    let res = s.get("/plain/users/42", NAVIGATION).await;
    assert_eq!(res.status(), 404);
    assert!(!res.text().await.unwrap().contains("INDEX-PAGE"));
}

#[tokio::test]
async fn fingerprinted_assets_are_immutable_and_everything_else_revalidates() {
    let s = Static::start().await;
    for (path, expected) in [
        (
            "/assets/app-4f9a1c2b.js",
            "public, max-age=31536000, immutable",
        ),
        ("/assets/page.html", "no-cache"),
        ("/style.css", "no-cache"),
        ("/", "no-cache"),
        ("/plain/assets/app-4f9a1c2b.js", "no-cache"),
    ] {
        let res = s.get(path, &[]).await;
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(header(&res, "cache-control"), expected, "{path}");
    }
}

#[tokio::test]
async fn directories_are_never_listed() {
    let s = Static::start().await;
    let about = s.get("/about/", &[]).await;
    assert_eq!(about.status(), 200);
    assert!(about.text().await.unwrap().contains("ABOUT-PAGE"));
    for path in [
        "/plain/assets/",
        "/plain/empty/",
        "/plain/about",
        "/assets/",
    ] {
        let res = s.get(path, &[("accept", "*/*")]).await;
        assert_eq!(res.status(), 404, "{path}");
        let body = res.text().await.unwrap();
        assert!(!body.contains("app-4f9a1c2b"), "{path}: {body}");
    }
    let with_fallback = s.get("/assets/", NAVIGATION).await;
    assert_eq!(
        with_fallback.text().await.unwrap(),
        INDEX,
        "the fallback, not a listing"
    );
}

#[tokio::test]
async fn html_documents_carry_the_security_headers() {
    let s = Static::start().await;
    let page = s.get("/index.html", &[]).await;
    assert_eq!(
        header(&page, "content-security-policy"),
        gatehouse::static_files::DEFAULT_CSP
    );
    assert_eq!(
        header(&page, "referrer-policy"),
        "strict-origin-when-cross-origin"
    );
    assert_eq!(header(&page, "x-content-type-options"), "nosniff");
    let custom = s.get("/custom/index.html", &[]).await;
    assert_eq!(
        header(&custom, "content-security-policy"),
        "default-src 'none'; script-src 'self'"
    );
    let script = s.get("/assets/app-4f9a1c2b.js", &[]).await;
    assert!(script.headers().get("content-security-policy").is_none());
    assert_eq!(header(&script, "x-content-type-options"), "nosniff");
}

#[tokio::test]
async fn only_get_and_head_are_served() {
    let s = Static::start().await;
    for method in [
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
    ] {
        let res = s.request(method.clone(), "/index.html", &[]).await;
        assert_eq!(res.status(), 405, "{method}");
        let private = s.request(method.clone(), "/private/index.html", &[]).await;
        assert_eq!(private.status(), 405, "{method} on a private route");
    }
    let head = s.request(Method::HEAD, "/style.css", &[]).await;
    assert_eq!(head.status(), 200);
    assert_eq!(header(&head, "content-length"), "6");
    assert_eq!(header(&head, "content-type"), "text/css; charset=utf-8");
    assert!(head.bytes().await.unwrap().is_empty());
}

/// Sends `raw` over a fresh connection; returns the status and everything after it
/// (reqwest would normalize the paths under test before sending them).
async fn raw(addr: std::net::SocketAddr, target: &str, extra: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/html\r\n{extra}Connection: close\r\n\r\n"
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn traversal_attempts_through_gatehouse_never_reach_a_file_outside_static_dir() {
    let s = Static::start().await;
    let addr = s.gh.addr;
    let (ok, text) = raw(addr, "/plain/digits.txt", "").await;
    assert_eq!(ok, 200, "the raw client works: {text}");
    for target in [
        "/../secret.txt",
        "/plain/../secret.txt",
        "/plain/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/plain/%2E%2E/%2e%2e/secret.txt",
        "/plain/.%2e/secret.txt",
        "/plain/..%2fsecret.txt",
        "/plain/%2e%2e%2fsecret.txt",
        "/plain/..%5csecret.txt",
        "/plain/..\\secret.txt",
        "/plain/%252e%252e/secret.txt",
        "/plain/%c0%ae%c0%ae/secret.txt",
        "/plain/digits.txt%00",
        "/plain/digits.txt%00.html",
        "//plain/../secret.txt",
        "/plain//../secret.txt",
        "/plain/..;/secret.txt",
        "/plain/leak.txt",
        "/plain/up/secret.txt",
        "/leak.txt",
        "/up/secret.txt",
        "/plain/.env",
        "/.env",
        "http://{addr}/../secret.txt",
    ] {
        let target = &target.replace("{addr}", &addr.to_string());
        let (status, text) = raw(addr, target, "").await;
        assert!(
            status == 400 || status == 404,
            "{target} answered {status}: {text}"
        );
        assert!(!text.contains(SECRET), "{target} leaked: {text}");
        assert!(!text.contains("SECRET_ENV"), "{target} leaked .env");
        assert!(!text.contains("INDEX-PAGE"), "{target} got the fallback");
    }
}

#[tokio::test]
async fn paths_the_router_lets_through_are_stopped_by_the_resolver() {
    let s = Static::start().await;
    // These pass the router's path check, so the resolver is what refuses them.
    for target in [
        "/plain/leak.txt",
        "/plain/up/secret.txt",
        "/plain/.env",
        "/plain/%c0%ae%c0%ae/secret.txt",
    ] {
        let (status, text) = raw(s.gh.addr, target, "").await;
        assert_eq!(status, 404, "{target}: {text}");
    }
    for target in ["/leak.txt", "/up/secret.txt", "/.env"] {
        let (status, text) = raw(s.gh.addr, target, "").await;
        assert_eq!(
            status, 404,
            "refused paths never get the fallback: {target}"
        );
        assert!(!text.contains("INDEX-PAGE"));
    }
}

#[tokio::test]
async fn a_browser_navigation_to_a_private_route_without_a_session_is_sent_to_login() {
    let s = Static::start().await;
    let nav = s.get("/private/reports?year=2024", NAVIGATION).await;
    assert_eq!(nav.status(), 302);
    assert_eq!(
        location(&nav),
        "/auth/login?return_to=%2Fprivate%2Freports%3Fyear%3D2024"
    );
    assert!(
        set_cookies(nav.headers()).is_empty(),
        "no login starts here"
    );
    assert_eq!(header(&nav, "cache-control"), "no-store");

    // Following it: login, and the callback sends the browser back where it was going.
    let mut b = s.browser();
    let done = b.login("/private/reports?year=2024").await;
    assert!(
        done.text()
            .await
            .unwrap()
            .contains("url=/private/reports?year=2024")
    );
    let cookie = b.cookie_header();
    let back = s
        .get(
            "/private/reports?year=2024",
            &[NAVIGATION, &[("cookie", cookie.as_str())]].concat(),
        )
        .await;
    assert_eq!(back.status(), 200);
    assert_eq!(back.text().await.unwrap(), INDEX);
}

#[tokio::test]
async fn other_requests_to_a_private_route_without_a_session_get_401() {
    let s = Static::start().await;
    let fetch = s
        .get(
            "/private/assets/app-4f9a1c2b.js",
            &[
                ("accept", "*/*"),
                ("sec-fetch-mode", "no-cors"),
                ("sec-fetch-site", "same-origin"),
            ],
        )
        .await;
    assert_eq!(fetch.status(), 401);
    let body: serde_json::Value = fetch.json().await.unwrap();
    assert_eq!(body["error"], "unauthenticated");
    let no_metadata = s.get("/private/", &[("accept", "text/html")]).await;
    assert_eq!(
        no_metadata.status(),
        401,
        "no Sec-Fetch-Mode: not known to be a navigation"
    );
    let head = s.request(Method::HEAD, "/private/", NAVIGATION).await;
    assert_eq!(head.status(), 401);
    let frame = s
        .get(
            "/private/",
            &[
                ("accept", "text/html"),
                ("sec-fetch-mode", "navigate"),
                ("sec-fetch-dest", "iframe"),
            ],
        )
        .await;
    assert_eq!(frame.status(), 401, "a frame is not a top-level navigation");
    let forged_cookie = format!("{COOKIE}=forged");
    let forged = s
        .get(
            "/private/",
            &[NAVIGATION, &[("cookie", forged_cookie.as_str())]].concat(),
        )
        .await;
    assert_eq!(
        forged.status(),
        302,
        "a cookie that opens nothing is no session"
    );
}

#[tokio::test]
async fn with_a_session_private_files_are_served_without_the_anti_forgery_header_and_cached_privately()
 {
    let s = Static::start().await;
    let mut b = s.browser();
    b.login("/private/").await;
    let cookie = b.cookie_header();
    let page = s
        .get(
            "/private/",
            &[NAVIGATION, &[("cookie", cookie.as_str())]].concat(),
        )
        .await;
    assert_eq!(page.status(), 200);
    assert_eq!(header(&page, "cache-control"), "private, no-cache");
    let script = s
        .get(
            "/private/assets/app-4f9a1c2b.js",
            &[
                ("cookie", cookie.as_str()),
                ("sec-fetch-site", "same-origin"),
                ("sec-fetch-mode", "no-cors"),
            ],
        )
        .await;
    assert_eq!(script.status(), 200);
    assert_eq!(
        header(&script, "cache-control"),
        "private, max-age=31536000, immutable"
    );
    let route = s
        .get(
            "/private/dashboard/7",
            &[NAVIGATION, &[("cookie", cookie.as_str())]].concat(),
        )
        .await;
    assert_eq!(
        route.text().await.unwrap(),
        INDEX,
        "the fallback, behind login"
    );
}

#[tokio::test]
async fn private_files_refuse_cross_site_subresource_requests_but_not_navigations() {
    let s = Static::start().await;
    let mut b = s.browser();
    b.login("/private/").await;
    let cookie = b.cookie_header();
    for site in ["same-site", "cross-site"] {
        let embedded = s
            .get(
                "/private/assets/app-4f9a1c2b.js",
                &[
                    ("cookie", cookie.as_str()),
                    ("sec-fetch-site", site),
                    ("sec-fetch-mode", "no-cors"),
                    ("sec-fetch-dest", "script"),
                ],
            )
            .await;
        assert_eq!(embedded.status(), 403, "{site} script inclusion");
        assert!(!embedded.text().await.unwrap().contains("PLAIN-JS"));
    }
    let link = s
        .get(
            "/private/",
            &[
                ("cookie", cookie.as_str()),
                ("accept", "text/html"),
                ("sec-fetch-site", "cross-site"),
                ("sec-fetch-mode", "navigate"),
            ],
        )
        .await;
    assert_eq!(link.status(), 200, "a link from elsewhere is a navigation");
    let public = s
        .get(
            "/assets/app-4f9a1c2b.js",
            &[
                ("sec-fetch-site", "cross-site"),
                ("sec-fetch-mode", "no-cors"),
            ],
        )
        .await;
    assert_eq!(
        public.status(),
        200,
        "public files may be embedded anywhere"
    );
}

#[tokio::test]
async fn a_private_route_needs_a_live_session_not_just_a_cookie() {
    let s = Static::start().await;
    let mut b = s.browser();
    b.login("/private/").await;
    let cookie = b.cookie_header();
    let before = s
        .get(
            "/private/",
            &[NAVIGATION, &[("cookie", cookie.as_str())]].concat(),
        )
        .await;
    assert_eq!(before.status(), 200);
    let logout = b.api(Method::POST, "/auth/logout").await;
    assert_eq!(logout.status(), 200);
    let after = s
        .get(
            "/private/",
            &[NAVIGATION, &[("cookie", cookie.as_str())]].concat(),
        )
        .await;
    assert_eq!(after.status(), 302, "the old cookie names an ended session");
    assert!(location(&after).starts_with("/auth/login?return_to="));
    let fetch = s
        .get("/private/style.css", &[("cookie", cookie.as_str())])
        .await;
    assert_eq!(fetch.status(), 401);
}
