//! `srt://HOST:PORT?mode=…&latency=…&passphrase=…&pbkeylen=…&streamid=…`

use super::query::{percent_decode, percent_encode, Query};
use super::{host_port, split_host_port};
use crate::error::Error;
use crate::limits::{self, MAX_LATENCY_MS, MAX_PASSPHRASE_BYTES, MIN_PASSPHRASE_BYTES};
use crate::srt::options::{self, SrtOption, Value, OPTIONS};
use crate::srt::DEFAULT_PEER_IDLE_TIMEOUT_MS;
use std::fmt;

/// SRT's default receive latency in milliseconds (as srt-live-transmit and libsrt).
pub const DEFAULT_LATENCY_MS: u32 = 120;

/// The query keys (a key and its aliases) of what `SrtDefaults` can set.
const LATENCY_KEYS: &[&str] = &["latency"];
/// `srt-shared://`'s latency is the one value set on each caller's socket: either spelling.
const SHARED_LATENCY_KEYS: &[&str] = &["latency", "rcvlatency"];
const PASSPHRASE_KEYS: &[&str] = &["passphrase"];
const PBKEYLEN_KEYS: &[&str] = &["pbkeylen"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtMode {
    Caller,
    Listener,
    Rendezvous,
    /// `srt-shared://`: publishers or readers of the gateway's shared SRT port
    /// (`castway serve --srt-listen`), chosen by stream ID (`server::srt`).
    Shared,
}

impl fmt::Display for SrtMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SrtMode::Caller => "caller",
            SrtMode::Listener => "listener",
            SrtMode::Rendezvous => "rendezvous",
            SrtMode::Shared => "shared",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrtEndpoint {
    /// Remote host for callers and rendezvous; local bind address for listeners ("" = any).
    pub host: String,
    pub port: u16,
    pub mode: SrtMode,
    pub latency_ms: u32,
    pub passphrase: Option<String>,
    /// Key length in bytes (16, 24 or 32); 16 unless given.
    pub pbkeylen: u32,
    pub streamid: Option<String>,
    /// Local address to bind (srt-live-transmit `adapter`).
    pub local_addr: Option<String>,
    /// Local port to bind (srt-live-transmit `port`); rendezvous defaults to `port`.
    pub local_port: Option<u16>,
    /// The other socket options the URI sets (`srt::options`), in the table's order.
    pub options: Vec<SrtOption>,
    /// `srt-shared://`: who may publish (an input's) or read (an output's) on the shared port,
    /// as `(name, password)`; empty: anyone who knows the passphrase, if any.
    pub users: Vec<(String, String)>,
    /// `srt-shared://`: castway API keys are users too (`keys=1`).
    pub keys: bool,
    /// `srt-shared://`: a latency of its own for each caller (`latency=`, or a template's),
    /// set on the caller's socket in the listen callback; None: the shared port's.
    pub shared_latency_ms: Option<u32>,
}

impl SrtEndpoint {
    pub(super) fn parse(authority: &str, mut q: Query) -> Result<SrtEndpoint, String> {
        let (host, port) = split_host_port(authority)?;
        let mode = match q.take(&["mode"])?.map(|m| m.to_ascii_lowercase()) {
            None if host.is_empty() => SrtMode::Listener,
            None => SrtMode::Caller,
            Some(m) => match m.as_str() {
                "caller" | "client" => SrtMode::Caller,
                "listener" | "server" => SrtMode::Listener,
                "rendezvous" => SrtMode::Rendezvous,
                _ => return Err(format!("`mode={m}` is not caller, listener or rendezvous")),
            },
        };
        let latency_ms = q
            .take_parsed::<u32>(LATENCY_KEYS, "a latency in milliseconds")?
            .unwrap_or(DEFAULT_LATENCY_MS);
        if u64::from(latency_ms) > MAX_LATENCY_MS {
            return Err(format!(
                "`latency={latency_ms}` is above {MAX_LATENCY_MS} ms; castway takes milliseconds \
                 like srt-live-transmit (ffmpeg's srt latency is in microseconds)"
            ));
        }
        let passphrase = q.take(PASSPHRASE_KEYS)?;
        if let Some(p) = &passphrase {
            check_passphrase(p)?;
        }
        let pbkeylen = match q.take_parsed::<u32>(PBKEYLEN_KEYS, "a key length (16, 24 or 32)")? {
            None | Some(0) => 16,
            Some(n) if limits::PBKEYLENS.contains(&u64::from(n)) => n,
            Some(n) => return Err(format!("`pbkeylen={n}` must be 16, 24 or 32")),
        };
        if passphrase.is_none() && pbkeylen != 16 {
            return Err("`pbkeylen` needs a `passphrase`".into());
        }
        let streamid = q.take(&["streamid"])?;
        if streamid.as_ref().is_some_and(|s| s.len() > 512) {
            return Err("`streamid` is longer than 512 bytes".into());
        }
        let local_addr = q.take(&["adapter", "localaddr", "localip"])?;
        if let Some(a) = &local_addr {
            a.parse::<std::net::IpAddr>()
                .map_err(|_| format!("`adapter={a}` is not an IP address"))?;
        }
        let local_port = match q.take_parsed::<u16>(&["port", "localport"], "a port number")? {
            Some(0) => return Err("`port=0` is not a local port".into()),
            other => other,
        };
        if mode == SrtMode::Listener && (local_addr.is_some() || local_port.is_some()) {
            return Err("a listener binds HOST:PORT of the URI; `adapter`/`port` are for callers and rendezvous".into());
        }
        let mut socket_options = Vec::new();
        for def in OPTIONS {
            if let Some(text) = q.take(&[def.key])? {
                socket_options.push(options::parse(def, &text)?);
            }
        }
        options::check_together(&socket_options)?;
        q.finish("srt")?;
        Ok(SrtEndpoint {
            options: socket_options,
            host,
            port,
            mode,
            latency_ms,
            passphrase,
            pbkeylen,
            streamid,
            local_addr,
            local_port,
            users: Vec::new(),
            keys: false,
            shared_latency_ms: None,
        })
    }

    /// `srt-shared://?passphrase=…&pbkeylen=…&users=NAME:PASS,…`: the route's side (an input:
    /// publishing, an output: reading) on the gateway's shared SRT port. The socket options
    /// are the port's; only access is the route's.
    pub(super) fn parse_shared(authority: &str, mut q: Query) -> Result<SrtEndpoint, String> {
        if !authority.is_empty() {
            return Err(format!(
                "srt-shared:// takes no host or port (`{authority}`): the port is the \
                 gateway's shared SRT port (`castway serve --srt-listen`)"
            ));
        }
        let shared_latency_ms =
            q.take_parsed::<u32>(SHARED_LATENCY_KEYS, "a latency in milliseconds")?;
        if let Some(ms) = shared_latency_ms.filter(|ms| u64::from(*ms) > MAX_LATENCY_MS) {
            return Err(format!("`latency={ms}` is above {MAX_LATENCY_MS} ms"));
        }
        let passphrase = q.take(PASSPHRASE_KEYS)?;
        if let Some(p) = &passphrase {
            check_passphrase(p)?;
        }
        let pbkeylen = match q.take_parsed::<u32>(PBKEYLEN_KEYS, "a key length (16, 24 or 32)")? {
            None | Some(0) => 16,
            Some(n) if limits::PBKEYLENS.contains(&u64::from(n)) => n,
            Some(n) => return Err(format!("`pbkeylen={n}` must be 16, 24 or 32")),
        };
        if passphrase.is_none() && pbkeylen != 16 {
            return Err("`pbkeylen` needs a `passphrase`".into());
        }
        let mut users: Vec<(String, String)> = Vec::new();
        let listed = q.take(&["users"])?;
        // An empty list would be read as no list: anyone (a variable that came out empty).
        if listed
            .as_deref()
            .is_some_and(|l| l.split(',').all(str::is_empty))
        {
            return Err(
                "`users` is empty: list NAME:PASSWORD,… or leave the key out to let \
                        anyone in (who has the passphrase, if any)"
                    .into(),
            );
        }
        for entry in (listed.unwrap_or_default().split(',')).filter(|e| !e.is_empty()) {
            let Some((name, password)) = entry.split_once(':') else {
                return Err("`users` takes NAME:PASSWORD,… (a user without a password)".into());
            };
            if !limits::name_ok(name) {
                return Err(format!(
                    "`users`: `{name}` is not a user name (1 to 64 of A-Z a-z 0-9 . _ -)"
                ));
            }
            if password.is_empty() || password.contains(':') {
                return Err(format!(
                    "`users`: the password of `{name}` is empty or has a `:`"
                ));
            }
            // SRT's `#!::…,u=USER` form uses the password as the connection's passphrase.
            if let Err(why) = passphrase_length(password) {
                return Err(format!(
                    "`users`: the password of `{name}` {why}: SRT's `#!::…,u={name}` stream ID \
                     form uses it as the passphrase"
                ));
            }
            if users.iter().any(|(n, _)| n == name) {
                return Err(format!("`users`: `{name}` is given twice"));
            }
            users.push((name.to_string(), password.to_string()));
        }
        let keys = q.take_bool(&["keys"])?.unwrap_or(false);
        q.finish("srt-shared")?;
        Ok(SrtEndpoint {
            host: String::new(),
            port: 0,
            mode: SrtMode::Shared,
            latency_ms: DEFAULT_LATENCY_MS,
            passphrase,
            pbkeylen,
            streamid: None,
            local_addr: None,
            local_port: None,
            options: Vec::new(),
            users,
            keys,
            shared_latency_ms,
        })
    }

    /// How long a silent peer is waited for (`peeridletimeo`, else castway's default).
    pub fn peer_idle_timeout_ms(&self) -> u32 {
        (self.options.iter())
            .find(|o| o.key == "peeridletimeo")
            .and_then(|o| match o.value {
                Value::Int(ms) => u32::try_from(ms).ok(),
                Value::Text(_) => None,
            })
            .unwrap_or(DEFAULT_PEER_IDLE_TIMEOUT_MS)
    }

    /// The local address a listener or rendezvous peer binds.
    pub fn bind_host(&self) -> String {
        match self.mode {
            SrtMode::Listener if !self.host.is_empty() => self.host.clone(),
            SrtMode::Listener => "0.0.0.0".into(),
            _ => self.local_addr.clone().unwrap_or_else(|| "0.0.0.0".into()),
        }
    }
}

/// A passphrase's length, as libsrt bounds it.
fn check_passphrase(p: &str) -> Result<(), String> {
    passphrase_length(p).map_err(|why| format!("passphrase {why}"))
}

/// libsrt counts a passphrase's bytes, not its characters: the error says so where they
/// differ.
fn passphrase_length(p: &str) -> Result<(), String> {
    let n = p.len();
    if (MIN_PASSPHRASE_BYTES..=MAX_PASSPHRASE_BYTES).contains(&n) {
        return Ok(());
    }
    let chars = p.chars().count();
    let utf8 = if chars == n {
        String::new()
    } else {
        format!(" in UTF-8, {chars} characters")
    };
    Err(format!(
        "must be {MIN_PASSPHRASE_BYTES} to {MAX_PASSPHRASE_BYTES} bytes long (got {n}{utf8})"
    ))
}

/// Defaults for the SRT parameters of many URIs (a template's or a route's `srt` settings in
/// the control server), each checked as the URI key it stands for; errors are at `latency_ms`,
/// `passphrase`, `pbkeylen` or `options.KEY`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SrtDefaults {
    pub latency_ms: Option<u64>,
    pub passphrase: Option<String>,
    pub pbkeylen: Option<u64>,
    /// Any other socket option of `srt::options`, as `(URI key, value as the URI writes it)`.
    pub options: Vec<(String, String)>,
}

impl SrtDefaults {
    pub fn check(&self) -> crate::error::Result<()> {
        if let Some(ms) = self.latency_ms {
            limits::check_number("latency_ms", ms)?;
        }
        if let Some(p) = &self.passphrase {
            check_passphrase(p).map_err(|why| Error::InvalidConfig(why).at("passphrase"))?;
        }
        if let Some(n) = self.pbkeylen {
            limits::check_number("pbkeylen", n)?;
        }
        let mut parsed = Vec::new();
        for (key, text) in &self.options {
            let at = format!("options.{key}");
            let Some(def) = OPTIONS.iter().find(|d| d.key == key) else {
                let why = format!(
                    "`{key}` is not an SRT socket option castway takes (docs/uri.md lists them; \
                     latency, passphrase and pbkeylen have their own fields)"
                );
                return Err(Error::InvalidConfig(why).at(&at));
            };
            parsed
                .push(options::parse(def, text).map_err(|why| Error::InvalidConfig(why).at(&at))?);
        }
        options::check_together(&parsed)
            .map_err(|why| Error::InvalidConfig(why).at("options.kmpreannounce"))
    }

    /// `uri` with each default added to its query that it does not set itself (by any of the
    /// key's spellings); only to `srt://` URIs and, but for the other socket options (the
    /// shared port's), to `srt-shared://` ones; the others stay as they are. The query is read leniently (a key that does not decode is
    /// taken as written): the URI is checked with the route.
    pub fn apply(&self, uri: &str) -> String {
        let scheme = uri.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        let shared = scheme.as_deref() == Some("srt-shared");
        if scheme.as_deref() != Some("srt") && !shared {
            return uri.to_string();
        }
        let query = uri.split_once('?').map_or("", |(_, q)| q);
        let present: Vec<String> = (query.split('&').filter(|p| !p.is_empty()))
            .map(|part| {
                let key = part.split_once('=').map_or(part, |(k, _)| k);
                percent_decode(key)
                    .unwrap_or_else(|_| key.to_string())
                    .to_ascii_lowercase()
            })
            .collect();
        let set = |keys: &[&str]| keys.iter().any(|k| present.iter().any(|p| p == k));
        let mut extra = Vec::new();
        let latency_keys = if shared {
            SHARED_LATENCY_KEYS
        } else {
            LATENCY_KEYS
        };
        if let Some(ms) = self.latency_ms.filter(|_| !set(latency_keys)) {
            extra.push(format!("{}={ms}", LATENCY_KEYS[0]));
        }
        if let Some(p) = self.passphrase.as_ref().filter(|_| !set(PASSPHRASE_KEYS)) {
            extra.push(format!("{}={}", PASSPHRASE_KEYS[0], percent_encode(p)));
        }
        if let Some(n) = self.pbkeylen.filter(|_| !set(PBKEYLEN_KEYS)) {
            extra.push(format!("{}={n}", PBKEYLEN_KEYS[0]));
        }
        for (key, text) in self.options.iter().filter(|_| !shared) {
            if !set(&[key.as_str()]) {
                extra.push(format!("{key}={}", percent_encode(text)));
            }
        }
        if extra.is_empty() {
            return uri.to_string();
        }
        let sep = if uri.contains('?') { '&' } else { '?' };
        format!("{uri}{sep}{}", extra.join("&"))
    }
}

/// A stream ID as castway shows it (events, stats, errors, logs): the password of MediaMTX's
/// `publish:ROUTE:USER:PASS` / `read:ROUTE:USER:PASS` and the session (`s=`, often a token) of
/// SRT's `#!::` form as `***`; anything else unchanged.
pub fn redact_stream_id(stream_id: &str) -> String {
    if let Some(pairs) = stream_id.strip_prefix("#!::") {
        let shown: Vec<String> = (pairs.split(','))
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.trim() == "s" => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect();
        return format!("#!::{}", shown.join(","));
    }
    let mut parts = stream_id.splitn(4, ':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(verb @ ("publish" | "read")), Some(route), Some(user), Some(_)) => {
            format!("{verb}:{route}:{user}:***")
        }
        _ => stream_id.to_string(),
    }
}

impl fmt::Display for SrtEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.mode == SrtMode::Shared {
            let mut sep = '?';
            f.write_str("srt-shared://")?;
            if let Some(ms) = self.shared_latency_ms {
                write!(f, "?latency={ms}")?;
                sep = '&';
            }
            if self.passphrase.is_some() {
                write!(f, "{sep}passphrase=***&pbkeylen={}", self.pbkeylen)?;
                sep = '&';
            }
            if !self.users.is_empty() {
                let names: Vec<String> = (self.users.iter())
                    .map(|(n, _)| format!("{n}:***"))
                    .collect();
                write!(f, "{sep}users={}", names.join(","))?;
                sep = '&';
            }
            if self.keys {
                write!(f, "{sep}keys=1")?;
            }
            return Ok(());
        }
        write!(
            f,
            "srt://{}?mode={}&latency={}",
            host_port(&self.host, self.port),
            self.mode,
            self.latency_ms
        )?;
        if self.passphrase.is_some() {
            write!(f, "&passphrase=***&pbkeylen={}", self.pbkeylen)?;
        }
        if let Some(s) = &self.streamid {
            write!(f, "&streamid={}", redact_stream_id(s))?;
        }
        if let Some(a) = &self.local_addr {
            write!(f, "&adapter={a}")?;
        }
        if let Some(p) = self.local_port {
            write!(f, "&port={p}")?;
        }
        for o in &self.options {
            write!(f, "&{o}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::SrtDefaults;
    use crate::error::Error;
    use crate::limits::{MAX_LATENCY_MS, MAX_PASSPHRASE_BYTES};
    use crate::uri::{parse_error, Endpoint, Role, SrtEndpoint, SrtMode};

    fn srt(uri: &str) -> SrtEndpoint {
        match Endpoint::parse(uri, Role::Input).unwrap() {
            Endpoint::Srt(s) => s,
            other => panic!("{other:?}"),
        }
    }

    fn err(uri: &str) -> String {
        parse_error(uri, Role::Input)
    }

    #[test]
    fn numbers_are_written_one_way_in_every_key() {
        // Decimal digits, without `+`, a leading zero or hex, whether a socket option's or
        // castway's own key; the error names the key.
        for (uri, key) in [
            ("srt://:9000?maxbw=+5", "maxbw=+5"),
            ("srt://:9000?oheadbw=0x10", "oheadbw=0x10"),
            ("srt://:9000?maxbw=05", "maxbw=05"),
            ("srt://:9000?linger=+3", "linger=+3"),
            ("srt://:9000?snddropdelay=-0", "snddropdelay=-0"),
            ("srt://:9000?latency=+5", "latency=+5"),
            ("srt://:9000?latency=0x10", "latency=0x10"),
            ("srt://127.0.0.1:9000?port=+7000", "port=+7000"),
        ] {
            let e = err(uri);
            assert!(e.contains(&format!("`{key}`")), "{uri}: {e}");
        }
        // A minus where the range goes below zero, and a version in hex, as SRT writes it.
        assert!(
            srt("srt://:9000?maxbw=-1&snddropdelay=-1&minversion=0x010300")
                .options
                .iter()
                .any(|o| o.to_string() == "maxbw=-1")
        );
        assert!(err("srt://:9000?minversion=0x+10").contains("`minversion=0x+10`"));
    }

    #[test]
    fn an_empty_boolean_is_refused_naming_the_key() {
        for (uri, key) in [
            ("srt-shared://?keys=", "keys="),
            ("srt-shared://?keys", "keys="),
            ("srt://:9000?tlpktdrop=", "tlpktdrop="),
        ] {
            let e = err(uri);
            assert!(e.contains(&format!("`{key}`")), "{uri}: {e}");
        }
        assert!(srt("srt-shared://?keys=1").keys);
    }

    #[test]
    fn mode_defaults_follow_srt_live_transmit() {
        assert_eq!(srt("srt://:9000").mode, SrtMode::Listener);
        assert_eq!(srt("srt://127.0.0.1:9000").mode, SrtMode::Caller);
        assert_eq!(
            srt("srt://127.0.0.1:9000?mode=server").mode,
            SrtMode::Listener
        );
        assert_eq!(
            srt("srt://127.0.0.1:9000?mode=rendezvous").mode,
            SrtMode::Rendezvous
        );
    }

    #[test]
    fn all_keys_parse() {
        let s = srt("srt://h.example:9000?mode=caller&latency=200&passphrase=0123456789&pbkeylen=32&streamid=%23!::r=live&adapter=127.0.0.2&port=7000");
        assert_eq!(s.latency_ms, 200);
        assert_eq!(s.passphrase.as_deref(), Some("0123456789"));
        assert_eq!(s.pbkeylen, 32);
        assert_eq!(s.streamid.as_deref(), Some("#!::r=live"));
        assert_eq!(s.local_addr.as_deref(), Some("127.0.0.2"));
        assert_eq!(s.local_port, Some(7000));
        assert_eq!(srt("srt://:1").latency_ms, 120);
    }

    #[test]
    fn rcvlatency_is_the_receiving_side_alone_as_in_srt_live_transmit() {
        let s = srt("srt://h:1?rcvlatency=300&latency=200&peerlatency=100");
        assert_eq!(s.latency_ms, 200);
        let set: Vec<String> = s.options.iter().map(|o| o.to_string()).collect();
        assert_eq!(set, ["rcvlatency=300", "peerlatency=100"]);
        assert_eq!(
            srt("srt://h:1?rcvlatency=300").latency_ms,
            super::DEFAULT_LATENCY_MS
        );
        assert!(err("srt://h:1?rcvlatency=60001").contains("`rcvlatency=60001`"));
        // On the shared port it is the one latency of each caller, as before.
        assert_eq!(
            srt("srt-shared://?rcvlatency=300").shared_latency_ms,
            Some(300)
        );
    }

    #[test]
    fn passphrase_length_is_checked() {
        assert!(err("srt://:9000?passphrase=short").contains("10 to 79 bytes long (got 5)"));
        let long = "x".repeat(80);
        assert!(err(&format!("srt://:9000?passphrase={long}")).contains("got 80"));
        srt(&format!("srt://:9000?passphrase={}", "x".repeat(79)));
        // libsrt counts bytes: 40 two-byte characters are too many, 5 are enough.
        let e = err(&format!("srt://:9000?passphrase={}", "é".repeat(40)));
        assert!(e.contains("(got 80 in UTF-8, 40 characters)"), "{e}");
        srt(&format!("srt://:9000?passphrase={}", "é".repeat(5)));
    }

    #[test]
    fn defaults_are_checked_like_the_keys_they_stand_for() {
        let field = |d: SrtDefaults| match d.check() {
            Err(Error::At { field, source }) => format!("{field}: {source}"),
            other => panic!("{other:?}"),
        };
        assert!(SrtDefaults::default().check().is_ok());
        let good = SrtDefaults {
            latency_ms: Some(MAX_LATENCY_MS),
            passphrase: Some("x".repeat(MAX_PASSPHRASE_BYTES)),
            pbkeylen: Some(32),
            options: vec![
                ("oheadbw".into(), "50".into()),
                ("tlpktdrop".into(), "off".into()),
            ],
        };
        assert!(good.check().is_ok());
        let latency = field(SrtDefaults {
            latency_ms: Some(MAX_LATENCY_MS + 1),
            ..good.clone()
        });
        assert!(latency.starts_with("latency_ms: "), "{latency}");
        let short = field(SrtDefaults {
            passphrase: Some("short".into()),
            ..good.clone()
        });
        assert!(
            short.starts_with("passphrase: ") && short.contains("got 5"),
            "{short}"
        );
        let keylen = field(SrtDefaults {
            pbkeylen: Some(0),
            ..good
        });
        assert!(
            keylen.starts_with("pbkeylen: ") && keylen.contains("16, 24 or 32"),
            "{keylen}"
        );
        // Every socket option by the rule of its URI key, and only those.
        let option = |key: &str, value: &str| {
            field(SrtDefaults {
                options: vec![(key.into(), value.into())],
                ..SrtDefaults::default()
            })
        };
        let ohead = option("oheadbw", "200");
        assert!(
            ohead.starts_with("options.oheadbw: ") && ohead.contains("`oheadbw=200`"),
            "{ohead}"
        );
        let drop = option("tlpktdrop", "maybe");
        assert!(drop.starts_with("options.tlpktdrop: "), "{drop}");
        let latency = option("latency", "200");
        assert!(
            latency.starts_with("options.latency: ") && latency.contains("own fields"),
            "{latency}"
        );
        assert!(option("streamid", "x").starts_with("options.streamid: "));
    }

    #[test]
    fn defaults_go_into_srt_uris_that_do_not_set_them() {
        let d = SrtDefaults {
            latency_ms: Some(200),
            passphrase: Some("a secret & more".into()),
            pbkeylen: Some(32),
            options: Vec::new(),
        };
        let all = "latency=200&passphrase=a%20secret%20%26%20more&pbkeylen=32";
        assert_eq!(d.apply("srt://:9000"), format!("srt://:9000?{all}"));
        assert_eq!(
            d.apply("SRT://h:1?mode=caller"),
            format!("SRT://h:1?mode=caller&{all}")
        );
        // Any spelling of a key the URI sets keeps its value.
        assert_eq!(
            d.apply("srt://:9000?LATENCY=80&pass%70hrase=0123456789&pbkeylen=16"),
            "srt://:9000?LATENCY=80&pass%70hrase=0123456789&pbkeylen=16"
        );
        // `rcvlatency` is the receiving side's alone, set after `latency`, as in
        // srt-live-transmit: the default latency still goes in (for the peer's side).
        assert_eq!(
            d.apply("srt://:9000?rcvlatency=80&passphrase=0123456789&pbkeylen=16"),
            "srt://:9000?rcvlatency=80&passphrase=0123456789&pbkeylen=16&latency=200"
        );
        assert_eq!(d.apply("udp://:5000"), "udp://:5000");
        assert_eq!(SrtDefaults::default().apply("srt://:9000"), "srt://:9000");
        // The result parses with the defaults in.
        let s = srt(&d.apply("srt://:9000?mode=listener"));
        assert_eq!((s.latency_ms, s.pbkeylen), (200, 32));
        assert_eq!(s.passphrase.as_deref(), Some("a secret & more"));
        // Socket options too, each unless the URI sets it.
        let d = SrtDefaults {
            options: vec![
                ("oheadbw".into(), "50".into()),
                ("maxbw".into(), "2000000".into()),
                ("packetfilter".into(), "fec,cols:10,rows:5".into()),
            ],
            ..SrtDefaults::default()
        };
        let uri = d.apply("srt://:9000?maxbw=-1");
        assert_eq!(
            uri,
            "srt://:9000?maxbw=-1&oheadbw=50&packetfilter=fec%2Ccols%3A10%2Crows%3A5"
        );
        let s = srt(&uri);
        assert_eq!(
            s.to_string(),
            "srt://:9000?mode=listener&latency=120&maxbw=-1&oheadbw=50\
             &packetfilter=fec,cols:10,rows:5"
        );
    }

    #[test]
    fn a_templates_passphrase_and_latency_go_into_shared_uris_and_the_ports_options_stay() {
        let d = SrtDefaults {
            latency_ms: Some(200),
            passphrase: Some("templatepassphrase1".into()),
            pbkeylen: Some(24),
            options: vec![("oheadbw".into(), "50".into())],
        };
        let uri = d.apply("srt-shared://");
        assert_eq!(
            uri,
            "srt-shared://?latency=200&passphrase=templatepassphrase1&pbkeylen=24"
        );
        let s = srt(&uri);
        assert_eq!(s.shared_latency_ms, Some(200));
        assert_eq!(
            s.to_string(),
            "srt-shared://?latency=200&passphrase=***&pbkeylen=24"
        );
        assert_eq!(srt("srt-shared://").shared_latency_ms, None);
        assert_eq!(s.passphrase.as_deref(), Some("templatepassphrase1"));
        assert_eq!(s.pbkeylen, 24);
        // Its own passphrase stays.
        assert_eq!(
            d.apply("srt-shared://?passphrase=ownpassphrase&pbkeylen=16&latency=80"),
            "srt-shared://?passphrase=ownpassphrase&pbkeylen=16&latency=80"
        );
    }

    #[test]
    fn shared_uris_refuse_what_cannot_work() {
        assert!(err("srt-shared://?pbkeylen=24").contains("needs a `passphrase`"));
        let short = err("srt-shared://?users=cam:short");
        assert!(
            short.contains("`cam`") && short.contains("10 to 79 bytes"),
            "{short}"
        );
        assert!(srt("srt-shared://?users=cam:campassword1").users.len() == 1);
        for empty in ["users=", "users=,", "users=%2C%2C"] {
            let e = err(&format!("srt-shared://?{empty}"));
            assert!(e.contains("`users` is empty"), "{e}");
        }
    }

    #[test]
    fn bad_values_name_the_key() {
        assert!(err("srt://:9000?mode=push").contains("`mode=push`"));
        assert!(err("srt://:9000?latency=abc").contains("`latency=abc`"));
        assert!(err("srt://:9000?latency=120000").contains("microseconds"));
        assert!(err("srt://:9000?pbkeylen=20&passphrase=0123456789").contains("`pbkeylen=20`"));
        assert!(err("srt://:9000?pbkeylen=24").contains("needs a `passphrase`"));
        assert!(err("srt://:9000?mode=caller").contains("needs a remote host"));
        assert!(err("srt://:9000?mode=rendezvous").contains("needs a remote host"));
        assert!(err("srt://:9000?adapter=nowhere&mode=listener").contains("adapter"));
        assert!(err("srt://1.2.3.4:9000?adapter=nowhere").contains("`adapter=nowhere`"));
        assert!(err("srt://:9000?oheadbw=200").contains("`oheadbw=200`"));
        assert!(err("srt://:9000?transtype=file").contains("live streams"));
        assert!(err("srt://:9000?nosuchkey=1").contains("nosuchkey"));
    }

    #[test]
    fn every_srt_live_transmit_socket_option_is_taken_and_shown() {
        let s = srt(
            "srt://:9000?maxbw=1000000&oheadbw=50&tlpktdrop=off&peeridletimeo=1500\
                     &payloadsize=1456&packetfilter=fec,cols:10,rows:5&minversion=0x010300",
        );
        assert_eq!(s.options.len(), 7);
        assert_eq!(s.peer_idle_timeout_ms(), 1500);
        assert_eq!(srt("srt://:9000").peer_idle_timeout_ms(), 2000);
        let shown = s.to_string();
        assert!(
            shown.contains("&maxbw=1000000&oheadbw=50&tlpktdrop=false&peeridletimeo=1500"),
            "{shown}"
        );
        // What is shown parses to the same endpoint.
        assert_eq!(srt(&shown.replace("mode=listener&", "")), s);
    }
}
