//! `file:///path/to/stream.ts?loop=1`

use super::query::Query;
use std::fmt;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEndpoint {
    pub path: PathBuf,
    /// Inputs: start over at the end, with continuous timestamps.
    pub looped: bool,
}

impl FileEndpoint {
    pub(super) fn parse(authority_path: &str, mut q: Query) -> Result<FileEndpoint, String> {
        // file:///abs/path or file://localhost/abs/path; a relative path has no place in a URI.
        let path = if let Some(p) = authority_path.strip_prefix("localhost/") {
            format!("/{p}")
        } else if authority_path.starts_with('/') {
            authority_path.to_string()
        } else {
            return Err(format!(
                "file URIs take an absolute path: `file:///…` (got `file://{authority_path}`)"
            ));
        };
        let path =
            super::query::percent_decode(&path).map_err(|why| format!("path `{path}`: {why}"))?;
        if path.len() <= 1 || path.ends_with('/') {
            return Err(format!("`{path}` is a directory, not a file"));
        }
        let looped = q.take_bool(&["loop"])?.unwrap_or(false);
        q.finish("file")?;
        Ok(FileEndpoint {
            path: PathBuf::from(path),
            looped,
        })
    }
}

impl fmt::Display for FileEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "file://{}", self.path.display())?;
        if self.looped {
            f.write_str("?loop=1")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::uri::{assert_refused, Endpoint, Role};

    #[test]
    fn absolute_paths_only() {
        match Endpoint::parse("file:///tmp/a%20b.ts?loop=1", Role::Input).unwrap() {
            Endpoint::File(f) => {
                assert_eq!(f.path.to_str(), Some("/tmp/a b.ts"));
                assert!(f.looped);
            }
            other => panic!("{other:?}"),
        }
        assert_refused(&[
            ("file://a.ts", Role::Input, "absolute path"),
            (
                "file:///tmp/x.ts?loop=1",
                Role::Output,
                "only applies to file inputs",
            ),
            ("file:///tmp/x.ts?loop=maybe", Role::Input, "`loop=maybe`"),
        ]);
    }
}
