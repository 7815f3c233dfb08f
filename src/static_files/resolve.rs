//! From a request path to a file inside `static_dir`, or nothing. This resolver is the
//! containment boundary and does not rely on the router's path checks.
//!
//! Rules:
//! 1. The path is split on `/` first and each segment percent-decoded once, so an escape can
//!    never add a separator. A segment that decodes to `.` or `..`, is empty (other than a
//!    final `/`), is not UTF-8, or holds `/`, `\`, NUL or another control character is refused.
//! 2. Hidden names (a segment starting with `.`) are refused, except `.well-known`: build
//!    output rarely means to publish `.git` or `.env`.
//! 3. The joined path is canonicalized (symlinks followed) and must still lie under the
//!    canonical root; a symlink that points out is refused, one that stays inside is followed.
//! 4. Only regular files are served. A directory is never listed: a path ending in `/` (or the
//!    route's root) serves the directory's `index.html` when it has one; without the slash it
//!    counts as missing, and so does a file asked for with a trailing `/`. FIFOs, sockets
//!    and devices are refused.

use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};

use percent_encoding::percent_decode_str;

/// What a request path resolved to.
#[derive(Debug)]
pub enum Resolved {
    File(Box<Found>),
    /// Nothing there: the SPA fallback may answer.
    Missing,
    /// The path breaks a rule or escapes the root: answered 404, never with content.
    Refused,
}

/// A regular file inside the root.
#[derive(Debug, Clone)]
pub struct Found {
    /// The canonical path: what is opened.
    pub path: PathBuf,
    /// Root joined with the decoded segments, before symlinks are followed: precompressed
    /// siblings are looked for next to this name.
    pub named: PathBuf,
    /// The decoded path relative to the root, `/`-separated (`assets/app.js`), as `immutable`
    /// patterns and content types see it.
    pub relative: String,
    pub metadata: std::fs::Metadata,
}

/// The decoded segments of `raw` (a path relative to the route, without its leading `/`) and
/// whether it names a directory (empty, or ends in `/`). `None` when rule 1 or 2 refuses it.
pub fn segments(raw: &str) -> Option<(Vec<String>, bool)> {
    let (body, dir) = match raw.strip_suffix('/') {
        Some(body) => (body, true),
        None => (raw, raw.is_empty()),
    };
    if body.is_empty() {
        return Some((Vec::new(), dir));
    }
    let mut out = Vec::new();
    for segment in body.split('/') {
        let decoded = percent_decode_str(segment).decode_utf8().ok()?;
        let bad_byte = decoded
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control());
        let hidden = decoded.starts_with('.') && decoded != ".well-known";
        if decoded.is_empty() || bad_byte || hidden {
            return None;
        }
        out.push(decoded.into_owned());
    }
    Some((out, dir))
}

/// Resolves `raw` under `root`, which must be canonical. `Err` only for I/O failures that are
/// neither "missing" nor "not allowed".
pub async fn resolve(root: &Path, raw: &str) -> io::Result<Resolved> {
    let Some((mut segments, dir)) = segments(raw) else {
        return Ok(Resolved::Refused);
    };
    let found = match contained(root, &segments).await? {
        // `app.js/` names a directory that is not there.
        Contained::File(_) if dir => return Ok(Resolved::Missing),
        Contained::File(found) => return Ok(Resolved::File(found)),
        Contained::Dir if dir => {
            segments.push("index.html".to_owned());
            contained(root, &segments).await?
        }
        other => other,
    };
    Ok(match found {
        Contained::File(found) => Resolved::File(found),
        Contained::Dir | Contained::Missing => Resolved::Missing,
        Contained::Refused => Resolved::Refused,
    })
}

/// `found`'s sibling with `suffix` appended to its name (`app.js` → `app.js.br`), under the
/// same rules.
pub async fn sibling(root: &Path, found: &Found, suffix: &str) -> io::Result<Option<Box<Found>>> {
    let mut name = found.named.clone().into_os_string();
    name.push(suffix);
    let named = PathBuf::from(name);
    Ok(
        match check(root, named, format!("{}{suffix}", found.relative)).await? {
            Contained::File(sibling) => Some(sibling),
            _ => None,
        },
    )
}

enum Contained {
    File(Box<Found>),
    Dir,
    Missing,
    Refused,
}

async fn contained(root: &Path, segments: &[String]) -> io::Result<Contained> {
    let mut named = root.to_path_buf();
    named.extend(segments);
    check(root, named, segments.join("/")).await
}

/// Rules 3 and 4 for one path.
async fn check(root: &Path, named: PathBuf, relative: String) -> io::Result<Contained> {
    let path = match tokio::fs::canonicalize(&named).await {
        Ok(path) => path,
        Err(e) => {
            return match e.kind() {
                ErrorKind::NotFound | ErrorKind::NotADirectory => Ok(Contained::Missing),
                // Unreadable or an impossible name: nothing to serve. Anything else (a symlink
                // loop, a failing disk) is the operator's to see, as an error.
                ErrorKind::PermissionDenied
                | ErrorKind::InvalidInput
                | ErrorKind::InvalidFilename => Ok(Contained::Refused),
                _ => Err(e),
            };
        }
    };
    if !path.starts_with(root) {
        return Ok(Contained::Refused);
    }
    let metadata = match tokio::fs::metadata(&path).await {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Contained::Missing),
        Err(e) => return Err(e),
    };
    Ok(if metadata.is_file() {
        Contained::File(Box::new(Found {
            path,
            named,
            relative,
            metadata,
        }))
    } else if metadata.is_dir() {
        Contained::Dir
    } else {
        Contained::Refused
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        _outer: tempfile::TempDir,
        root: PathBuf,
        outside: PathBuf,
    }

    /// `outer/site` (the root) with files, and `outer/secret.txt` beside it.
    fn fixture() -> Fixture {
        let outer = tempfile::tempdir().unwrap();
        let base = outer.path().canonicalize().unwrap();
        let root = base.join("site");
        std::fs::create_dir_all(root.join("assets/deep")).unwrap();
        std::fs::create_dir_all(root.join("docs")).unwrap();
        std::fs::create_dir_all(root.join(".well-known")).unwrap();
        std::fs::create_dir_all(root.join(".git")).unwrap();
        for (path, body) in [
            ("index.html", "index"),
            ("assets/app.js", "js"),
            ("assets/deep/a b.css", "css"),
            ("docs/index.html", "docs"),
            (".well-known/security.txt", "sec"),
            (".git/config", "git"),
            (".env", "env"),
        ] {
            std::fs::write(root.join(path), body).unwrap();
        }
        let outside = base.join("secret.txt");
        std::fs::write(&outside, "secret").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("leak.txt")).unwrap();
        std::os::unix::fs::symlink(&base, root.join("up")).unwrap();
        std::os::unix::fs::symlink(root.join("assets/app.js"), root.join("alias.js")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        Fixture {
            _outer: outer,
            root,
            outside,
        }
    }

    async fn file(f: &Fixture, raw: &str) -> Option<String> {
        match resolve(&f.root, raw).await.unwrap() {
            Resolved::File(found) => Some(found.relative),
            _ => None,
        }
    }

    async fn refused(f: &Fixture, raw: &str) -> bool {
        matches!(resolve(&f.root, raw).await.unwrap(), Resolved::Refused)
    }

    #[tokio::test]
    async fn files_inside_the_root_resolve_with_their_decoded_relative_path() {
        let f = fixture();
        assert_eq!(file(&f, "assets/app.js").await.unwrap(), "assets/app.js");
        assert_eq!(
            file(&f, "assets/deep/a%20b.css").await.unwrap(),
            "assets/deep/a b.css"
        );
        assert_eq!(
            file(&f, ".well-known/security.txt").await.unwrap(),
            ".well-known/security.txt"
        );
    }

    #[tokio::test]
    async fn a_directory_serves_its_index_only_with_a_trailing_slash_and_is_never_listed() {
        let f = fixture();
        assert_eq!(file(&f, "").await.unwrap(), "index.html");
        assert_eq!(file(&f, "docs/").await.unwrap(), "docs/index.html");
        assert!(matches!(
            resolve(&f.root, "docs").await.unwrap(),
            Resolved::Missing
        ));
        assert!(matches!(
            resolve(&f.root, "assets/").await.unwrap(),
            Resolved::Missing
        ));
    }

    #[tokio::test]
    async fn missing_files_and_paths_through_a_file_are_missing() {
        let f = fixture();
        for raw in ["nope.js", "assets/nope", "index.html/x", "assets/app.js/"] {
            assert!(
                matches!(resolve(&f.root, raw).await.unwrap(), Resolved::Missing),
                "{raw}"
            );
        }
    }

    #[tokio::test]
    async fn dot_segments_raw_or_encoded_are_refused() {
        let f = fixture();
        for raw in [
            "..",
            "../secret.txt",
            "assets/../../secret.txt",
            "%2e%2e/secret.txt",
            "%2E%2E/secret.txt",
            ".%2e/secret.txt",
            "assets/%2e%2e/%2e%2e/secret.txt",
            ".",
            "./index.html",
            "%2e/index.html",
        ] {
            assert!(refused(&f, raw).await, "{raw}");
        }
    }

    #[tokio::test]
    async fn encoded_separators_nul_and_controls_are_refused() {
        let f = fixture();
        for raw in [
            "..%2fsecret.txt",
            "%2e%2e%2fsecret.txt",
            "assets%2fapp.js",
            "..%5csecret.txt",
            "assets\\app.js",
            "..\\secret.txt",
            "index.html%00.js",
            "index.html\0",
            "assets/app.js%0a",
            "a%ffb",
            "assets//app.js",
            "/etc/passwd",
        ] {
            assert!(refused(&f, raw).await, "{raw}");
        }
    }

    #[tokio::test]
    async fn hidden_files_are_refused_except_well_known() {
        let f = fixture();
        for raw in [".env", ".git/config", "%2eenv", ".git/"] {
            assert!(refused(&f, raw).await, "{raw}");
        }
    }

    #[tokio::test]
    async fn symlinks_out_of_the_root_are_refused_and_inside_ones_followed() {
        let f = fixture();
        assert!(refused(&f, "leak.txt").await);
        assert!(refused(&f, "up/secret.txt").await);
        assert!(
            resolve(&f.root, "loop").await.is_err(),
            "a loop is an error, not a file"
        );
        match resolve(&f.root, "alias.js").await.unwrap() {
            Resolved::File(found) => {
                assert_eq!(found.path, f.root.join("assets/app.js"));
                assert_eq!(found.named, f.root.join("alias.js"));
            }
            other => panic!("{other:?}"),
        }
        assert!(f.outside.exists());
    }

    #[tokio::test]
    async fn siblings_obey_the_same_rules() {
        let f = fixture();
        std::fs::write(f.root.join("assets/app.js.gz"), "gz").unwrap();
        std::os::unix::fs::symlink(&f.outside, f.root.join("assets/app.js.br")).unwrap();
        let Resolved::File(js) = resolve(&f.root, "assets/app.js").await.unwrap() else {
            panic!("app.js")
        };
        let gz = sibling(&f.root, &js, ".gz").await.unwrap().unwrap();
        assert_eq!(gz.relative, "assets/app.js.gz");
        assert!(sibling(&f.root, &js, ".br").await.unwrap().is_none());
        assert!(sibling(&f.root, &js, ".zst").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn fifos_are_refused() {
        let f = fixture();
        let fifo = f.root.join("pipe");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .is_ok_and(|s| s.success());
        assert!(made, "mkfifo (coreutils) makes the FIFO");
        assert!(refused(&f, "pipe").await);
    }
}
