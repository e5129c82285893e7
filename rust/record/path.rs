//! Where a segment is written: a path pattern (strftime fields and `{route}`) expanded under the
//! recordings directory. A pattern that could leave the directory is refused when it is
//! checked, and every expanded path is checked again before a file is opened.

use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// The pattern a recording uses unless its policy names one.
pub const DEFAULT_PATTERN: &str = "{route}/%Y-%m-%d/%H-%M-%S";

/// The longest pattern accepted.
const MAX_PATTERN: usize = 256;

/// The strftime conversions a pattern may use: none of them expands to a `/` or to text that
/// depends on the locale.
const FIELDS: &[u8] = b"YmdHMSjuVGgzs%";

/// Checks a path pattern: relative, made of `A-Z a-z 0-9 . _ - /`, `{route}` and the strftime
/// fields `%Y %m %d %H %M %S %j %u %V %G %g %z %s %%`, and no `.`, `..` or empty component.
pub fn check_pattern(pattern: &str) -> Result<()> {
    let bad = |why: String| {
        Err(Error::InvalidConfig(format!(
            "path pattern `{pattern}`: {why}"
        )))
    };
    if pattern.is_empty() {
        return bad("it is empty".into());
    }
    if pattern.len() > MAX_PATTERN {
        return bad(format!("it is longer than {MAX_PATTERN} bytes"));
    }
    if pattern.starts_with('/') {
        return bad("it is absolute; it must stay under the recordings directory".into());
    }
    let without_route = pattern.replace("{route}", "r");
    let bytes = without_route.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'%' {
            match bytes.get(i + 1) {
                Some(f) if FIELDS.contains(f) => i += 2,
                Some(&f) => return bad(format!("`%{}` is not an allowed field", f as char)),
                None => return bad("it ends in a lone `%`".into()),
            }
            continue;
        }
        if !(c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b'/')) {
            return bad(format!(
                "`{}` is not allowed (only A-Z a-z 0-9 . _ - /, {{route}} and %-fields)",
                c as char
            ));
        }
        i += 1;
    }
    for part in pattern.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return bad(format!(
                "`{part}` is not a directory name: it would not stay under the recordings directory"
            ));
        }
    }
    Ok(())
}

/// The path of a segment of `route` starting at `unix` (UTC), relative to the recordings
/// directory, without its extension.
pub fn expand(pattern: &str, route: &str, unix: f64) -> Result<PathBuf> {
    let text = strftime_utc(&pattern.replace("{route}", route), unix as i64);
    let rel = PathBuf::from(text);
    if !stays_under(&rel) {
        return Err(Error::InvalidConfig(format!(
            "path pattern `{pattern}` expands to `{}`, which leaves the recordings directory",
            rel.display()
        )));
    }
    Ok(rel)
}

/// Whether a relative path has only normal components (so `root.join(path)` stays in `root`).
pub fn stays_under(rel: &Path) -> bool {
    rel.components().count() > 0 && rel.components().all(|c| matches!(c, Component::Normal(_)))
}

/// Creates the directories of `rel` (relative, checked by [`stays_under`]) under `root`, one
/// component at a time, refusing a component that is a symbolic link (or not a directory):
/// a link inside the recordings directory would put segments outside it.
pub fn make_dirs_under(root: &Path, rel: &Path) -> std::io::Result<()> {
    let mut dir = root.to_path_buf();
    for part in rel.components() {
        dir.push(part);
        let meta = match std::fs::symlink_metadata(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::create_dir(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
                _ => std::fs::symlink_metadata(&dir)?,
            },
            other => other?,
        };
        if meta.file_type().is_symlink() {
            return Err(std::io::Error::other(format!(
                "`{}` is a symbolic link; segments stay inside the recordings directory",
                dir.display()
            )));
        }
        if !meta.is_dir() {
            return Err(std::io::Error::other(format!(
                "`{}` is not a directory",
                dir.display()
            )));
        }
    }
    Ok(())
}

/// `strftime(3)` in UTC.
fn strftime_utc(format: &str, unix: i64) -> String {
    let Ok(fmt) = std::ffi::CString::new(format) else {
        return format.to_owned();
    };
    // SAFETY: gmtime_r and strftime with valid pointers and a buffer of the given length.
    unsafe {
        let t: libc::time_t = unix as libc::time_t;
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::gmtime_r(&t, &mut tm).is_null() {
            return format.to_owned();
        }
        let mut buf = vec![0u8; 1024];
        let n = libc::strftime(buf.as_mut_ptr().cast(), buf.len(), fmt.as_ptr(), &tm);
        buf.truncate(n);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_that_would_leave_the_directory_are_refused() {
        for p in [
            "/abs/%Y",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a/.",
            "",
            "a\\b",
            "%c",
            "a%",
            "{route}/~",
            "a b",
        ] {
            assert!(check_pattern(p).is_err(), "{p:?} accepted");
        }
        for p in [DEFAULT_PATTERN, "x/%Y/%m/%d/{route}-%H%M%S", "{route}"] {
            check_pattern(p).unwrap();
        }
    }

    #[test]
    fn a_pattern_expands_in_utc_with_the_route_name() {
        // 2026-11-23 04:05:06 UTC
        let rel = expand("{route}/%Y-%m-%d/%H-%M-%S", "news", 1_795_406_706.5).unwrap();
        assert_eq!(rel, PathBuf::from("news/2026-11-23/04-05-06"));
        assert!(!stays_under(Path::new("../x")));
        assert!(!stays_under(Path::new("/x")));
    }

    #[test]
    fn directories_are_made_under_the_root_but_never_through_a_symbolic_link() {
        let root = std::env::temp_dir().join(format!("castway-mkdirs-{}", std::process::id()));
        let outside = root.with_extension("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        make_dirs_under(&root, Path::new("a/b")).unwrap();
        assert!(root.join("a/b").is_dir());
        std::os::unix::fs::symlink(&outside, root.join("a/sym")).unwrap();
        let err = make_dirs_under(&root, Path::new("a/sym/c")).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(!outside.join("c").exists());
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::remove_dir_all(&outside).unwrap();
    }
}
