//! Where a segment is written: a path pattern (strftime fields and `{route}`) expanded under the
//! recordings directory. A pattern that could leave the directory is refused when it is
//! checked, and every expanded path is checked again before a file is opened.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
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
/// fields `%Y %m %d %H %M %S %j %u %V %G %g %z %s %%`, no `.`, `..` or empty component, and
/// a seconds field (`%S` or `%s`): segments are cut as often as every second, and each needs a
/// name of its own (a coarser pattern gave every segment of an hour the same name, told apart
/// by `-1` … `-99` only, and then recording stopped), and a date that does not come round
/// again: `%s`, or a year (`%Y`, `%G`, `%g`) with a day (`%m` and `%d`, `%j`, or `%V` and
/// `%u`). Without one the names repeat every day (or month, or year): the 100th day's
/// segment found no free name and the recording stopped there.
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
    let mut seconds = false;
    let mut fields = Vec::new();
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'%' {
            match bytes.get(i + 1) {
                Some(f) if FIELDS.contains(f) => {
                    seconds |= matches!(f, b'S' | b's');
                    fields.push(*f);
                    i += 2
                }
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
        if part.starts_with('.') {
            return bad(format!(
                "`{part}` starts with `.`: such names are castway's own in the recordings \
                 directory (`.castway-clips`, emptied at start)"
            ));
        }
    }
    if !seconds {
        return bad(
            "it has no seconds field (`%S` or `%s`): segments are cut as often as every second, \
             and each needs a name of its own"
                .into(),
        );
    }
    let has = |f: u8| fields.contains(&f);
    let year = has(b'Y') || has(b'G') || has(b'g');
    let day = (has(b'm') && has(b'd')) || has(b'j') || (has(b'V') && has(b'u'));
    if !(has(b's') || year && day) {
        return bad(
            "it has no date (a year `%Y` with `%m` and `%d`, or `%j`; or `%s`): its names would \
             repeat every day, and a segment whose name is taken is told apart by `-1` … `-99` \
             only"
                .into(),
        );
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

/// A directory under the recordings root, reached without following a symbolic link below
/// the root and held open: its files are created, renamed and removed relative to it (`openat`,
/// `renameat`, `unlinkat`, each with `O_NOFOLLOW` or its like), so a link swapped in for it or
/// for one of its parents after it was opened is never followed.
pub struct SegmentDir {
    fd: OwnedFd,
}

impl SegmentDir {
    /// Opens `rel` (relative, checked by [`stays_under`]; empty: the root) under `root`,
    /// making each missing component (`mkdirat`) and opening it (`openat` with
    /// `O_DIRECTORY | O_NOFOLLOW`) relative to its parent: a component that is a symbolic
    /// link (or not a directory) is refused, naming it.
    pub fn open(root: &Path, rel: &Path) -> io::Result<SegmentDir> {
        let mut fd = open_path(root)?;
        let mut shown = root.to_path_buf();
        for part in rel.components() {
            let Component::Normal(name) = part else {
                return Err(io::Error::other(format!(
                    "`{}` leaves the recordings directory",
                    rel.display()
                )));
            };
            shown.push(name);
            let c = cstr(name)?;
            // SAFETY: mkdirat/openat on a directory fd we own and a NUL-terminated name.
            unsafe {
                if libc::mkdirat(fd.as_raw_fd(), c.as_ptr(), 0o777) != 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::AlreadyExists {
                        return Err(e);
                    }
                }
                let next = libc::openat(
                    fd.as_raw_fd(),
                    c.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                );
                if next < 0 {
                    let e = io::Error::last_os_error();
                    if !matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) {
                        return Err(e);
                    }
                    let mut st: libc::stat = std::mem::zeroed();
                    let link = libc::fstatat(
                        fd.as_raw_fd(),
                        c.as_ptr(),
                        &mut st,
                        libc::AT_SYMLINK_NOFOLLOW,
                    ) == 0
                        && st.st_mode & libc::S_IFMT == libc::S_IFLNK;
                    return Err(io::Error::other(if link {
                        format!(
                            "`{}` is a symbolic link; segments stay inside the recordings directory",
                            shown.display()
                        )
                    } else {
                        format!("`{}` is not a directory", shown.display())
                    }));
                }
                fd = OwnedFd::from_raw_fd(next);
            }
        }
        Ok(SegmentDir { fd })
    }

    /// Whether `name` exists in it (a link counts: it is not followed).
    pub fn exists(&self, name: &str) -> bool {
        let Ok(c) = cstr(name.as_ref()) else {
            return true;
        };
        // SAFETY: fstatat with our fd, a NUL-terminated name and a zeroed struct it fills.
        unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            libc::fstatat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            ) == 0
        }
    }

    /// Creates `name`, which must not exist (`O_CREAT | O_EXCL | O_NOFOLLOW`).
    pub fn create_new(&self, name: &str) -> io::Result<File> {
        let c = cstr(name.as_ref())?;
        // SAFETY: openat with our fd and a NUL-terminated name; the fd returned is ours.
        unsafe {
            let fd = libc::openat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o666 as libc::c_uint,
            );
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(File::from(OwnedFd::from_raw_fd(fd)))
        }
    }

    /// Renames `from` to `to`, both in it (`renameat`: a link at `from` is renamed, not
    /// followed).
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let (a, b) = (cstr(from.as_ref())?, cstr(to.as_ref())?);
        let raw = self.fd.as_raw_fd();
        // SAFETY: renameat with our fd and NUL-terminated names.
        if unsafe { libc::renameat(raw, a.as_ptr(), raw, b.as_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Removes the file `name` in it (`unlinkat`: a link is removed, not followed).
    pub fn remove(&self, name: &str) -> io::Result<()> {
        let c = cstr(name.as_ref())?;
        // SAFETY: unlinkat with our fd and a NUL-terminated name.
        if unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

fn open_path(dir: &Path) -> io::Result<OwnedFd> {
    let c = cstr(dir.as_os_str())?;
    // SAFETY: open with a NUL-terminated path; the fd returned is ours.
    unsafe {
        let fd = libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

fn cstr(name: &std::ffi::OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes())
        .map_err(|_| io::Error::other(format!("`{}` holds a NUL byte", name.to_string_lossy())))
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
        for p in [DEFAULT_PATTERN, "x/%Y/%m/%d/{route}-%H%M%S", "{route}/%s"] {
            check_pattern(p).unwrap();
        }
    }

    #[test]
    fn a_pattern_with_a_hidden_name_is_refused_naming_the_clip_directory() {
        for p in [".castway-clips/%s", "{route}/.x/%s", "a/.%s"] {
            let err = check_pattern(p).unwrap_err().to_string();
            assert!(err.contains(".castway-clips"), "{p:?}: {err}");
        }
    }

    #[test]
    fn a_pattern_without_a_date_is_refused_naming_the_rule() {
        for p in [
            "{route}/%H-%M-%S",
            "{route}/%m-%d/%H%M%S",
            "%Y/%d/%H%M%S",
            "%V/%H%M%S",
        ] {
            let err = check_pattern(p).unwrap_err().to_string();
            assert!(err.contains("it has no date"), "{p:?}: {err}");
        }
        for p in [
            "%Y/%j/%H%M%S",
            "%G-W%V-%u/%H%M%S",
            "%g%m%d%H%M%S",
            "{route}/%s",
        ] {
            check_pattern(p).unwrap_or_else(|e| panic!("{p:?}: {e}"));
        }
    }

    #[test]
    fn a_pattern_without_a_seconds_field_is_refused_naming_the_rule() {
        // Coarser than the segments: every segment of an hour would have the same name.
        for p in ["{route}/%Y-%m-%d/%H", "{route}", "{route}/%%S-%M"] {
            let err = check_pattern(p).unwrap_err().to_string();
            assert!(
                err.contains("no seconds field (`%S` or `%s`)"),
                "{p:?}: {err}"
            );
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
        SegmentDir::open(&root, Path::new("a/b")).unwrap();
        assert!(root.join("a/b").is_dir());
        std::os::unix::fs::symlink(&outside, root.join("a/sym")).unwrap();
        let err = SegmentDir::open(&root, Path::new("a/sym/c")).err().unwrap();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(!outside.join("c").exists());
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::remove_dir_all(&outside).unwrap();
    }

    #[test]
    fn a_link_swapped_in_for_a_directory_after_it_was_opened_is_never_followed() {
        let root = std::env::temp_dir().join(format!("castway-swap-{}", std::process::id()));
        let outside = root.with_extension("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let dir = SegmentDir::open(&root, Path::new("r/day")).unwrap();
        // Between the check and the open: the directory is moved away and a link put there.
        std::fs::rename(root.join("r/day"), root.join("r/moved")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("r/day")).unwrap();
        drop(dir.create_new("seg.ts.part").unwrap());
        dir.rename("seg.ts.part", "seg.ts").unwrap();
        assert!(dir.exists("seg.ts") && !dir.exists("seg.ts.part"));
        assert_eq!(
            std::fs::read_dir(&outside).unwrap().count(),
            0,
            "nothing outside"
        );
        assert!(root.join("r/moved/seg.ts").is_file());
        // A link planted at the file's name is not followed either.
        std::os::unix::fs::symlink(outside.join("x"), root.join("r/moved/x.part")).unwrap();
        assert!(dir.create_new("x.part").is_err());
        assert!(!outside.join("x").exists());
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::remove_dir_all(&outside).unwrap();
    }
}
