//! The `?key=value&…` part of an endpoint URI. Each scheme takes the keys it knows (with their
//! aliases); `finish` rejects whatever is left, so typos are errors rather than defaults.

use std::str::FromStr;

type Res<T> = std::result::Result<T, String>;

#[derive(Debug)]
pub(crate) struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub(crate) fn parse(q: &str) -> Res<Query> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for part in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let k = percent_decode(k)
                .map_err(|why| format!("key `{k}`: {why}"))?
                .to_ascii_lowercase();
            // The value is not shown: it may be a passphrase.
            let v = percent_decode(v).map_err(|why| format!("the value of `{k}`: {why}"))?;
            if pairs.iter().any(|(seen, _)| *seen == k) {
                return Err(format!("key `{k}` is given twice"));
            }
            pairs.push((k, v));
        }
        Ok(Query { pairs })
    }

    /// Removes and returns the value of the first of `names` present (a key and its aliases).
    pub(crate) fn take(&mut self, names: &[&str]) -> Res<Option<String>> {
        let found: Vec<usize> = (0..self.pairs.len())
            .filter(|&i| names.contains(&self.pairs[i].0.as_str()))
            .collect();
        if found.len() > 1 {
            return Err(format!(
                "keys `{}` and `{}` mean the same thing; give one",
                self.pairs[found[0]].0, self.pairs[found[1]].0
            ));
        }
        Ok(found.first().map(|&i| self.pairs.remove(i).1))
    }

    /// Like `take`, for a whole number from 0: digits only, without a sign or a leading zero
    /// (`+5000` and `05000` are typos; see [`whole_number`]); the error names the key and the
    /// bad value.
    pub(crate) fn take_parsed<T: FromStr>(&mut self, names: &[&str], what: &str) -> Res<Option<T>> {
        let key = names[0];
        match self.take(names)? {
            None => Ok(None),
            Some(v) => {
                let canonical = !v.starts_with('-') && whole_number(&v).is_some();
                canonical
                    .then(|| v.parse::<T>().ok())
                    .flatten()
                    .map(Some)
                    .ok_or_else(|| format!("`{key}={v}` is not {what}"))
            }
        }
    }

    /// A boolean key: `1/0`, `true/false`, `yes/no`, `on/off`; an empty value (`keys=`, or
    /// `keys` alone) is none of them, as for the SRT socket options' booleans.
    pub(crate) fn take_bool(&mut self, names: &[&str]) -> Res<Option<bool>> {
        let key = names[0];
        match self.take(names)?.map(|v| v.to_ascii_lowercase()) {
            None => Ok(None),
            Some(v) => match v.as_str() {
                "1" | "true" | "yes" | "on" => Ok(Some(true)),
                "0" | "false" | "no" | "off" => Ok(Some(false)),
                _ => Err(format!("`{key}={v}` is not a boolean (use 1 or 0)")),
            },
        }
    }

    /// Errors if any key was not taken by the scheme.
    pub(crate) fn finish(self, scheme: &str) -> Res<()> {
        match self.pairs.first() {
            None => Ok(()),
            Some((k, _)) => Err(format!(
                "unknown key `{k}` for {scheme}:// (see docs/uri.md)"
            )),
        }
    }
}

/// A whole number as a URI writes it: decimal digits without a leading zero, after a `-` for
/// a number below zero; no `+`, no `-0`, no hex (`+5`, `05` and `0x10` are typos, or another
/// tool's habit). Every number of an SRT URI is read this way.
pub(crate) fn whole_number(v: &str) -> Option<i64> {
    let digits = v.strip_prefix('-').unwrap_or(v);
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && v != "-0";
    canonical.then(|| v.parse().ok()).flatten()
}

/// `s` with every byte but the unreserved ones (`A-Z a-z 0-9 - . _ ~`) percent-escaped.
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) fn percent_decode(s: &str) -> Res<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        format!(
                            "bad percent-escape at character {} (`%` takes two hex digits)",
                            i + 1
                        )
                    })?;
                out.push(hex);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| "not UTF-8 after percent-decoding".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_keeps_only_unreserved_bytes() {
        let text = "a b&c=d/é~._-Z9%";
        assert_eq!(percent_encode(text), "a%20b%26c%3Dd%2F%C3%A9~._-Z9%25");
        assert_eq!(percent_decode(&percent_encode(text)).unwrap(), text);
    }

    #[test]
    fn percent_escapes_are_decoded() {
        let mut q = Query::parse("passphrase=a%26b%3Dc%20d").unwrap();
        assert_eq!(q.take(&["passphrase"]).unwrap().as_deref(), Some("a&b=c d"));
        assert!(Query::parse("x=%zz").is_err());
    }

    #[test]
    fn duplicates_and_aliases_conflict() {
        assert!(Query::parse("a=1&a=2").unwrap_err().contains("twice"));
        let mut q = Query::parse("port=1&localport=2").unwrap();
        assert!(q
            .take(&["localport", "port"])
            .unwrap_err()
            .contains("same thing"));
    }

    #[test]
    fn leftovers_are_unknown_keys() {
        let mut q = Query::parse("latency=1&latncy=2").unwrap();
        q.take(&["latency"]).unwrap();
        assert!(q
            .finish("srt")
            .unwrap_err()
            .contains("unknown key `latncy`"));
    }

    #[test]
    fn errors_never_show_a_value() {
        let e = Query::parse("passphrase=SECRET%ZZBBBBBB2").unwrap_err();
        assert!(!e.contains("SECRET"), "{e}");
        assert!(
            e.contains("`passphrase`") && e.contains("character 7"),
            "{e}"
        );
        let e = Query::parse("pass%70hrase=SECRETAAAA&passphrase=SECRETBBBB").unwrap_err();
        assert!(!e.contains("SECRET"), "{e}");
    }

    #[test]
    fn numbers_are_digits_without_sign_or_leading_zero() {
        for bad in ["+5000", "05000", "-1", " 5", "5 ", "1e3", ""] {
            let mut q = Query::parse(&format!("port={bad}")).unwrap();
            assert!(q.take_parsed::<u16>(&["port"], "a port").is_err(), "{bad}");
        }
        let mut q = Query::parse("port=5000&ttl=0").unwrap();
        assert_eq!(
            q.take_parsed::<u16>(&["port"], "a port").unwrap(),
            Some(5000)
        );
        assert_eq!(q.take_parsed::<u8>(&["ttl"], "a ttl").unwrap(), Some(0));
    }
}
