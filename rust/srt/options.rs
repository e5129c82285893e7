//! Every libsrt socket option srt-live-transmit takes as a URI key, under the same name: what
//! it sets, its range and its default. `uri::SrtEndpoint` parses them (an error names the key
//! and the range), `Socket::configure` sets them before the socket binds or connects, and
//! docs/uri.md lists them. `latency`, `passphrase`, `pbkeylen`, `streamid`, `adapter`, `port`
//! and `mode` are the endpoint's own fields.

use std::os::raw::c_int;

use super::{ffi, socket};

/// What values a key takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A whole number in a range (an `int` option).
    Int { min: i64, max: i64 },
    /// A whole number in a range (an `int64_t` option: bandwidths).
    Int64 { min: i64, max: i64 },
    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
    Bool,
    /// A packet filter's configuration (`TYPE,KEY:VALUE,…`) of at most this many bytes, as
    /// libsrt takes it (`socket::packet_filter_ok`).
    Filter { max: usize },
    /// One of these words, each an `int` value.
    Word(&'static [(&'static str, i64)]),
    /// Seconds to linger on close (a `struct linger`).
    Linger,
    /// A boolean a live TS gateway needs on: `true` is taken (and set), `false` refused saying
    /// why.
    On { why: &'static str },
    /// A network interface's name (at most `IFNAMSIZ - 1` bytes): `SO_BINDTODEVICE`.
    Device,
    /// Connection bonding (socket groups): refused, as this libsrt has none.
    Bonding,
}

/// Why the bonding keys are refused: Debian's libsrt 1.5 (which castway links) is built
/// without `ENABLE_BONDING`, so `SRTO_GROUPCONNECT` fails on any socket (a unit test below
/// keeps this true), and its srt-live-transmit does not take these keys either.
const NO_BONDING: &str = "connection bonding (socket groups) is not available: this libsrt \
                          was built without it (ENABLE_BONDING)";

/// The longest interface name (`IFNAMSIZ` less its NUL).
const MAX_DEVICE: usize = libc::IFNAMSIZ - 1;

/// One URI key.
#[derive(Debug)]
pub struct OptionDef {
    pub key: &'static str,
    pub opt: c_int,
    pub kind: Kind,
    /// The default, as docs/uri.md says it.
    pub default: &'static str,
}

const INT_MAX: i64 = i32::MAX as i64;

/// The keys, in the order docs/uri.md lists them.
pub const OPTIONS: &[OptionDef] = &[
    OptionDef {
        // srt-live-transmit's: the receiving side alone (`latency` sets both, first).
        key: "rcvlatency",
        opt: ffi::SRTO_RCVLATENCY,
        kind: Kind::Int {
            min: 0,
            max: 60_000,
        },
        default: "`latency`",
    },
    OptionDef {
        key: "peerlatency",
        opt: ffi::SRTO_PEERLATENCY,
        kind: Kind::Int {
            min: 0,
            max: 60_000,
        },
        default: "`latency`",
    },
    OptionDef {
        key: "maxbw",
        opt: ffi::SRTO_MAXBW,
        kind: Kind::Int64 {
            min: -1,
            max: i64::MAX,
        },
        default: "-1 (libsrt's live ceiling, 1 Gb/s)",
    },
    OptionDef {
        key: "inputbw",
        opt: ffi::SRTO_INPUTBW,
        kind: Kind::Int64 {
            min: 0,
            max: i64::MAX,
        },
        default: "0 (measured)",
    },
    OptionDef {
        key: "mininputbw",
        opt: ffi::SRTO_MININPUTBW,
        kind: Kind::Int64 {
            min: 0,
            max: i64::MAX,
        },
        default: "0",
    },
    OptionDef {
        key: "oheadbw",
        opt: ffi::SRTO_OHEADBW,
        kind: Kind::Int { min: 5, max: 100 },
        default: "25",
    },
    OptionDef {
        key: "tlpktdrop",
        opt: ffi::SRTO_TLPKTDROP,
        kind: Kind::Bool,
        default: "true",
    },
    OptionDef {
        key: "nakreport",
        opt: ffi::SRTO_NAKREPORT,
        kind: Kind::Bool,
        default: "true",
    },
    OptionDef {
        key: "conntimeo",
        opt: ffi::SRTO_CONNTIMEO,
        kind: Kind::Int {
            min: 50,
            max: 120_000,
        },
        default: "3000",
    },
    OptionDef {
        key: "peeridletimeo",
        opt: ffi::SRTO_PEERIDLETIMEO,
        kind: Kind::Int {
            min: 100,
            max: 3_600_000,
        },
        default: "2000 (castway's; libsrt's is 5000)",
    },
    OptionDef {
        key: "payloadsize",
        opt: ffi::SRTO_PAYLOADSIZE,
        // castway sends 1316-byte messages (7 TS packets): a smaller payload cannot carry them.
        kind: Kind::Int {
            min: 1316,
            max: 1456,
        },
        default: "1316",
    },
    OptionDef {
        key: "mss",
        opt: ffi::SRTO_MSS,
        kind: Kind::Int {
            min: 1360,
            max: 1500,
        },
        default: "1500",
    },
    OptionDef {
        key: "fc",
        opt: ffi::SRTO_FC,
        kind: Kind::Int {
            min: 32,
            max: INT_MAX,
        },
        default: "25600",
    },
    OptionDef {
        key: "sndbuf",
        opt: ffi::SRTO_SNDBUF,
        kind: Kind::Int {
            min: 65_536,
            max: INT_MAX,
        },
        default: "12058624",
    },
    OptionDef {
        key: "rcvbuf",
        opt: ffi::SRTO_RCVBUF,
        kind: Kind::Int {
            min: 65_536,
            max: INT_MAX,
        },
        default: "12058624",
    },
    OptionDef {
        key: "lossmaxttl",
        opt: ffi::SRTO_LOSSMAXTTL,
        kind: Kind::Int {
            min: 0,
            max: INT_MAX,
        },
        default: "0",
    },
    OptionDef {
        key: "minversion",
        opt: ffi::SRTO_MINVERSION,
        kind: Kind::Int {
            min: 0,
            max: 0xff_ffff,
        },
        default: "0x010000",
    },
    OptionDef {
        key: "enforcedencryption",
        opt: ffi::SRTO_ENFORCEDENCRYPTION,
        kind: Kind::Bool,
        default: "true",
    },
    OptionDef {
        key: "kmrefreshrate",
        opt: ffi::SRTO_KMREFRESHRATE,
        kind: Kind::Int {
            min: 0,
            max: INT_MAX,
        },
        default: "16777216 (0: the default)",
    },
    OptionDef {
        key: "kmpreannounce",
        opt: ffi::SRTO_KMPREANNOUNCE,
        kind: Kind::Int {
            min: 0,
            max: INT_MAX,
        },
        default: "4096 (at most half of `kmrefreshrate`)",
    },
    OptionDef {
        key: "packetfilter",
        opt: ffi::SRTO_PACKETFILTER,
        kind: Kind::Filter { max: 512 },
        default: "none (e.g. `fec,cols:10,rows:5`)",
    },
    OptionDef {
        key: "ipttl",
        opt: ffi::SRTO_IPTTL,
        kind: Kind::Int { min: 1, max: 255 },
        default: "64",
    },
    OptionDef {
        key: "iptos",
        opt: ffi::SRTO_IPTOS,
        kind: Kind::Int { min: 0, max: 255 },
        default: "0",
    },
    OptionDef {
        key: "linger",
        opt: ffi::SRTO_LINGER,
        kind: Kind::Linger,
        default: "0 (live)",
    },
    OptionDef {
        key: "transtype",
        opt: ffi::SRTO_TRANSTYPE,
        // castway carries live streams; `file` would change every other default.
        kind: Kind::Word(&[("live", 0)]),
        default: "live",
    },
    OptionDef {
        key: "congestion",
        opt: ffi::SRTO_CONGESTION,
        kind: Kind::Word(&[("live", 0)]),
        default: "live",
    },
    OptionDef {
        key: "snddropdelay",
        opt: ffi::SRTO_SNDDROPDELAY,
        kind: Kind::Int {
            min: -1,
            max: INT_MAX,
        },
        default: "0",
    },
    OptionDef {
        key: "drifttracer",
        opt: ffi::SRTO_DRIFTTRACER,
        kind: Kind::Bool,
        default: "true",
    },
    OptionDef {
        key: "ipv6only",
        opt: ffi::SRTO_IPV6ONLY,
        kind: Kind::Bool,
        default: "the system's",
    },
    OptionDef {
        key: "retransmitalgo",
        opt: ffi::SRTO_RETRANSMITALGO,
        kind: Kind::Int { min: 0, max: 1 },
        default: "1 (reduced)",
    },
    OptionDef {
        key: "tsbpdmode",
        opt: ffi::SRTO_TSBPDMODE,
        kind: Kind::On {
            why: "castway delivers live streams at their timestamps (timestamp-based packet \
                  delivery is what `latency` sets)",
        },
        default: "true",
    },
    OptionDef {
        key: "messageapi",
        opt: ffi::SRTO_MESSAGEAPI,
        kind: Kind::On {
            why: "castway sends and receives whole 1316-byte messages (7 TS packets), as \
                  live mode does",
        },
        default: "true",
    },
    OptionDef {
        key: "bindtodevice",
        opt: ffi::SRTO_BINDTODEVICE,
        kind: Kind::Device,
        default: "none",
    },
    OptionDef {
        key: "groupconnect",
        opt: ffi::SRTO_GROUPCONNECT,
        kind: Kind::Bonding,
        default: "0 (refused: no bonding)",
    },
    OptionDef {
        key: "groupminstabletimeo",
        opt: ffi::SRTO_GROUPMINSTABLETIMEO,
        kind: Kind::Bonding,
        default: "60 (refused: no bonding)",
    },
];

/// A key's value, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Int(i64),
    Text(String),
}

/// One option a URI sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrtOption {
    pub key: &'static str,
    pub value: Value,
}

impl SrtOption {
    pub fn def(&self) -> &'static OptionDef {
        OPTIONS
            .iter()
            .find(|d| d.key == self.key)
            .expect("made from the table")
    }
}

impl std::fmt::Display for SrtOption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.value, self.def().kind) {
            (Value::Int(v), Kind::Bool | Kind::On { .. }) => {
                write!(f, "{}={}", self.key, *v != 0)
            }
            (Value::Int(v), Kind::Word(words)) => {
                let w = words.iter().find(|(_, n)| n == v).map_or("?", |(w, _)| w);
                write!(f, "{}={w}", self.key)
            }
            (Value::Int(v), _) => write!(f, "{}={v}", self.key),
            (Value::Text(t), _) => write!(f, "{}={t}", self.key),
        }
    }
}

/// How a number must be written, for the errors.
const WHOLE: &str = "decimal digits, without `+` or a leading zero";

/// A whole number as every number of an SRT URI is written (`uri::query::whole_number`):
/// decimal digits, after a `-` where the range goes below zero; `minversion` also in hex
/// (`0x010300` is 1.3.0), as SRT versions are written.
fn int(def: &OptionDef, text: &str) -> Option<i64> {
    let hex = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X"));
    match hex.filter(|_| def.key == "minversion") {
        Some(h) if !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
            i64::from_str_radix(h, 16).ok()
        }
        Some(_) => None,
        None => crate::uri::whole_number(text),
    }
}

/// Checks `text` as the value of `def`'s key; the error names the key and what it takes.
pub fn parse(def: &'static OptionDef, text: &str) -> Result<SrtOption, String> {
    let key = def.key;
    let value = match def.kind {
        Kind::Int { min, max } | Kind::Int64 { min, max } => match int(def, text) {
            Some(v) if (min..=max).contains(&v) => Value::Int(v),
            _ if max == i64::MAX => {
                return Err(format!(
                    "`{key}={text}` must be a whole number from {min} ({WHOLE})"
                ))
            }
            _ => {
                return Err(format!(
                    "`{key}={text}` must be a whole number from {min} to {max} ({WHOLE})"
                ))
            }
        },
        Kind::Linger => match int(def, text) {
            Some(v) if (0..=INT_MAX).contains(&v) => Value::Int(v),
            _ => {
                return Err(format!(
                    "`{key}={text}` must be whole seconds from 0 ({WHOLE})"
                ))
            }
        },
        Kind::Bool => match text.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Value::Int(1),
            "0" | "false" | "no" | "off" => Value::Int(0),
            _ => return Err(format!("`{key}={text}` must be true or false")),
        },
        Kind::Filter { max } if text.len() > max => {
            return Err(format!("`{key}` is longer than {max} bytes"))
        }
        // libsrt 1.5.1 crashes on an empty filter; it refuses the rest itself.
        Kind::Filter { .. } if !text.is_empty() && socket::packet_filter_ok(text) => {
            Value::Text(text.to_string())
        }
        Kind::Filter { .. } => {
            return Err(format!(
                "`{key}={text}` is not a packet filter libsrt takes: TYPE,KEY:VALUE,… where \
                 TYPE is `fec` and its keys are cols, rows, layout and arq (e.g. \
                 `fec,cols:10,rows:5`)"
            ))
        }
        Kind::On { why } => match text.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Value::Int(1),
            "0" | "false" | "no" | "off" => {
                return Err(format!("`{key}={text}` is not supported: {why}"))
            }
            _ => return Err(format!("`{key}={text}` must be true")),
        },
        Kind::Device
            if !text.is_empty()
                && text.len() <= MAX_DEVICE
                && !text.contains(['\0', '/'])
                && !text.chars().any(char::is_whitespace) =>
        {
            Value::Text(text.to_string())
        }
        Kind::Device => {
            return Err(format!(
                "`{key}={text}` must be a network interface's name (1 to {MAX_DEVICE} bytes)"
            ))
        }
        Kind::Bonding => return Err(format!("`{key}`: {NO_BONDING}")),
        Kind::Word(words) => {
            let lower = text.to_ascii_lowercase();
            match words.iter().find(|(w, _)| *w == lower) {
                Some((_, n)) => Value::Int(*n),
                None => {
                    let names: Vec<_> = words.iter().map(|(w, _)| *w).collect();
                    return Err(format!(
                        "`{key}={text}` is not supported: castway carries live streams ({})",
                        names.join(", ")
                    ));
                }
            }
        }
    };
    Ok(SrtOption { key, value })
}

/// libsrt's packets sent with one key when `kmrefreshrate` is 0 or unset.
const DEFAULT_KM_REFRESH_RATE: i64 = 1 << 24;

/// Checks what the options of one URI ask together (each is checked alone by `parse`):
/// `kmpreannounce` is at most half of `kmrefreshrate`, as libsrt requires when it is set
/// (castway sets `kmrefreshrate` first, as the table lists them).
pub fn check_together(options: &[SrtOption]) -> Result<(), String> {
    let int = |key: &str| {
        options
            .iter()
            .find(|o| o.key == key)
            .and_then(|o| match o.value {
                Value::Int(v) => Some(v),
                Value::Text(_) => None,
            })
    };
    if let Some(pre) = int("kmpreannounce") {
        let refresh = int("kmrefreshrate")
            .filter(|r| *r != 0)
            .unwrap_or(DEFAULT_KM_REFRESH_RATE);
        let most = (refresh - 1) / 2;
        if pre > most {
            return Err(format!(
                "`kmpreannounce={pre}` must be at most half of `kmrefreshrate` ({refresh}): {most}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(key: &str) -> &'static OptionDef {
        OPTIONS.iter().find(|d| d.key == key).unwrap()
    }

    #[test]
    fn values_are_checked_against_their_range_and_errors_name_the_key() {
        assert_eq!(parse(def("oheadbw"), "50").unwrap().value, Value::Int(50));
        assert!(parse(def("oheadbw"), "4")
            .unwrap_err()
            .contains("`oheadbw=4` must be a whole number from 5 to 100"));
        assert_eq!(
            parse(def("minversion"), "0x010300").unwrap().value,
            Value::Int(0x010300)
        );
        assert_eq!(parse(def("tlpktdrop"), "off").unwrap().value, Value::Int(0));
        assert!(parse(def("tlpktdrop"), "maybe")
            .unwrap_err()
            .contains("`tlpktdrop=maybe`"));
        assert!(parse(def("transtype"), "file")
            .unwrap_err()
            .contains("live streams"));
        assert!(parse(def("payloadsize"), "1000")
            .unwrap_err()
            .contains("1316 to 1456"));
        assert!(parse(def("maxbw"), "-2").unwrap_err().contains("from -1"));
        let o = parse(def("packetfilter"), "fec,cols:10,rows:5").unwrap();
        assert_eq!(o.to_string(), "packetfilter=fec,cols:10,rows:5");
        assert_eq!(
            parse(def("nakreport"), "yes").unwrap().to_string(),
            "nakreport=true"
        );
    }

    #[test]
    fn every_key_of_srt_live_transmit_is_taken() {
        // srt-live-transmit's table of URI keys (libsrt 1.5's apps/socketoptions.hpp, with
        // its bonding and bindtodevice keys, and `linger`, which it reads on its own).
        const SRT_LIVE_TRANSMIT: &[&str] = &[
            "transtype",
            "maxbw",
            "pbkeylen",
            "passphrase",
            "mss",
            "fc",
            "sndbuf",
            "rcvbuf",
            "linger",
            "ipttl",
            "iptos",
            "inputbw",
            "mininputbw",
            "oheadbw",
            "latency",
            "tsbpdmode",
            "tlpktdrop",
            "snddropdelay",
            "nakreport",
            "conntimeo",
            "drifttracer",
            "lossmaxttl",
            "rcvlatency",
            "peerlatency",
            "minversion",
            "streamid",
            "congestion",
            "messageapi",
            "payloadsize",
            "kmrefreshrate",
            "kmpreannounce",
            "enforcedencryption",
            "ipv6only",
            "peeridletimeo",
            "packetfilter",
            "groupconnect",
            "groupminstabletimeo",
            "bindtodevice",
            "retransmitalgo",
        ];
        // The endpoint's own fields (`uri::SrtEndpoint`).
        const FIELDS: &[&str] = &["latency", "passphrase", "pbkeylen", "streamid"];
        for key in SRT_LIVE_TRANSMIT {
            assert!(
                FIELDS.contains(key) || OPTIONS.iter().any(|d| d.key == *key),
                "`{key}` is not taken"
            );
        }
    }

    #[test]
    fn live_keys_are_taken_on_and_refused_off_saying_why() {
        for key in ["tsbpdmode", "messageapi"] {
            let o = parse(def(key), "true").unwrap();
            assert_eq!(o.to_string(), format!("{key}=true"));
            let e = parse(def(key), "false").unwrap_err();
            assert!(
                e.starts_with(&format!("`{key}=false` is not supported: castway")),
                "{e}"
            );
            assert!(parse(def(key), "maybe")
                .unwrap_err()
                .contains("must be true"));
        }
        assert_eq!(
            parse(def("bindtodevice"), "eth0").unwrap().value,
            Value::Text("eth0".into())
        );
        for bad in ["", "a-name-too-long-1", "a b", "../x"] {
            let e = parse(def("bindtodevice"), bad).unwrap_err();
            assert!(
                e.contains("network interface's name (1 to 15 bytes)"),
                "{e}"
            );
        }
        for key in ["groupconnect", "groupminstabletimeo"] {
            let e = parse(def(key), "1").unwrap_err();
            assert!(
                e.starts_with(&format!("`{key}`: connection bonding")),
                "{e}"
            );
            assert!(e.contains("this libsrt was built without it"), "{e}");
        }
    }

    #[test]
    fn a_packet_filter_is_one_libsrt_takes_and_never_empty() {
        for good in [
            "fec,cols:10,rows:5",
            "fec,cols:10,rows:-5,layout:staircase,arq:onreq",
        ] {
            assert_eq!(
                parse(def("packetfilter"), good).unwrap().value,
                Value::Text(good.into())
            );
        }
        // libsrt 1.5.1 crashes on an empty filter; the others it refuses itself.
        for bad in [
            "",
            ",",
            "fec,",
            "fec,cols",
            "fec,cols:0",
            "fec,foo:1",
            "FEC,cols:10",
        ] {
            let e = parse(def("packetfilter"), bad).unwrap_err();
            assert!(
                e.starts_with(&format!("`packetfilter={bad}` is not a packet filter")),
                "{e}"
            );
        }
        let long = format!("fec,cols:10{}", ",rows:5".repeat(80));
        assert!(parse(def("packetfilter"), &long)
            .unwrap_err()
            .contains("longer than 512 bytes"));
    }

    #[test]
    fn kmpreannounce_is_at_most_half_of_kmrefreshrate() {
        let opts = |pairs: &[(&str, &str)]| -> Vec<SrtOption> {
            pairs
                .iter()
                .map(|(k, v)| parse(def(k), v).unwrap())
                .collect()
        };
        let e = check_together(&opts(&[("kmrefreshrate", "100"), ("kmpreannounce", "80")]))
            .unwrap_err();
        assert_eq!(
            e,
            "`kmpreannounce=80` must be at most half of `kmrefreshrate` (100): 49"
        );
        assert!(
            check_together(&opts(&[("kmrefreshrate", "100"), ("kmpreannounce", "49")])).is_ok()
        );
        // Unset or 0, the refresh rate is libsrt's 2^24.
        assert!(check_together(&opts(&[("kmpreannounce", "8388607")])).is_ok());
        assert!(check_together(&opts(&[("kmpreannounce", "8388608")])).is_err());
        assert!(
            check_together(&opts(&[("kmrefreshrate", "0"), ("kmpreannounce", "5000")])).is_ok()
        );
        // libsrt lowers the announcement itself when only the refresh rate is given.
        assert!(check_together(&opts(&[("kmrefreshrate", "100")])).is_ok());
    }

    #[test]
    fn option_numbers_are_the_headers() {
        // A few of srt.h's SRT_SOCKOPT values, spelled out.
        let n = |k: &str| def(k).opt;
        assert_eq!(
            (
                n("maxbw"),
                n("oheadbw"),
                n("peeridletimeo"),
                n("packetfilter")
            ),
            (16, 25, 55, 60)
        );
        assert_eq!(
            (n("kmpreannounce"), n("payloadsize"), n("ipv6only")),
            (52, 49, 54)
        );
    }
}
