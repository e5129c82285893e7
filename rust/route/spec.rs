//! What a route is asked to be: the spec types the bindings fill in, and their checks (names,
//! ids, URIs, settings in range) that run before anything starts.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::limits::{
    self, DEFAULT_TAP_QUEUE_BYTES, MAX_FAILBACK_AFTER, MAX_LOSS_TIMEOUT, MIN_LOSS_TIMEOUT,
    MIN_QUEUE_BYTES, SLATE_ID,
};
use crate::switch::SwitchConfig;
use crate::uri::{Endpoint, Role};

/// An output of a route spec: its URI and an optional id (`out0`, `out1`, … when absent).
#[derive(Debug, Clone, Default)]
pub struct OutputSpec {
    pub uri: String,
    pub id: Option<String>,
}

/// An input of a route spec: its URI (`standby=cold` to connect it only when needed) and an
/// optional id (`in0`, `in1`, … when absent).
#[derive(Debug, Clone, Default)]
pub struct InputSpec {
    pub uri: String,
    pub id: Option<String>,
}

/// How a route chooses between its inputs; `None` fields take the defaults.
#[derive(Debug, Clone, Default)]
pub struct SwitchSpec {
    pub loss_timeout_ms: Option<u64>,
    pub failback_after_ms: Option<u64>,
    /// Send a generated slate when every input is lost (default on).
    pub slate: Option<bool>,
    /// The slate's picture size; else that of the input on air (from its H.264 SPS), else
    /// 1280x720.
    pub slate_size: Option<(u32, u32)>,
}

/// What a route is made of.
#[derive(Debug, Clone, Default)]
pub struct RouteSpec {
    pub name: String,
    /// Inputs in priority order (the first is preferred).
    pub inputs: Vec<InputSpec>,
    pub outputs: Vec<OutputSpec>,
    /// Per-output queue bound in bytes; `None` for the default.
    pub queue_bytes: Option<u64>,
    pub switch: SwitchSpec,
}

/// A route's settings, checked and with the defaults filled in.
#[derive(Debug, Clone, Copy)]
pub(super) struct RouteSettings {
    /// Per-output queue bound in bytes.
    pub queue_bytes: u64,
    /// Loss and failback times and whether there is a slate, as the route starts with them
    /// (the switch holds the times in force: `reconfigure` changes them there).
    pub switch: SwitchConfig,
    /// The slate's picture size, when the spec sets one.
    pub slate_size: Option<(u32, u32)>,
}

impl RouteSettings {
    /// Checks the settings of `spec` (queue bound, switch times, slate size).
    pub fn check(spec: &RouteSpec) -> Result<RouteSettings> {
        let queue_bytes = spec.queue_bytes.unwrap_or(DEFAULT_TAP_QUEUE_BYTES);
        if queue_bytes < MIN_QUEUE_BYTES {
            return Err(Error::InvalidConfig(format!(
                "queue_bytes={queue_bytes} is below {MIN_QUEUE_BYTES}"
            )));
        }
        Ok(RouteSettings {
            queue_bytes,
            switch: switch_config(&spec.switch)?,
            slate_size: spec.switch.slate_size,
        })
    }

    /// Whether `spec` (checked or not) changes what only a restart of the whole route can: the
    /// per-output queue bound, the slate on/off or its picture size.
    pub fn needs_restart(&self, spec: &RouteSpec) -> bool {
        spec.queue_bytes.unwrap_or(DEFAULT_TAP_QUEUE_BYTES) != self.queue_bytes
            || spec.switch.slate_size != self.slate_size
            || spec.switch.slate.unwrap_or(true) != self.switch.slate
    }
}

/// An input or output as a spec wants it, checked.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Wanted {
    pub id: String,
    pub endpoint: Endpoint,
    /// Inputs: `standby=cold`.
    pub cold: bool,
}

/// A spec checked: ids assigned, URIs parsed, settings in range.
pub(super) struct Checked {
    pub settings: RouteSettings,
    pub inputs: Vec<Wanted>,
    pub outputs: Vec<Wanted>,
    /// The counters behind the `in<n>`/`out<n>` ids given so far.
    pub next_input: usize,
    pub next_output: usize,
}

impl Checked {
    pub fn new(spec: &RouteSpec) -> Result<Checked> {
        check_name("route", &spec.name)?;
        if spec.inputs.is_empty() {
            return Err(Error::InvalidConfig(format!(
                "route `{}` needs at least one input",
                spec.name
            )));
        }
        let settings = RouteSettings::check(spec)?;
        let mut inputs: Vec<Wanted> = Vec::new();
        let mut next_input = 0;
        for (n, i) in spec.inputs.iter().enumerate() {
            let taken = |id: &str| inputs.iter().any(|w| w.id == id);
            let id = slot_id("input", "in", i.id.as_deref(), &mut next_input, taken)
                .map_err(|e| e.at(format!("inputs[{n}].id")))?;
            inputs.push(wanted_input(id, &i.uri).map_err(|e| e.at(format!("inputs[{n}].uri")))?);
        }
        let mut outputs: Vec<Wanted> = Vec::new();
        let mut next_output = 0;
        for (n, o) in spec.outputs.iter().enumerate() {
            let taken = |id: &str| outputs.iter().any(|w| w.id == id);
            let id = slot_id("output", "out", o.id.as_deref(), &mut next_output, taken)
                .map_err(|e| e.at(format!("outputs[{n}].id")))?;
            outputs.push(wanted_output(id, &o.uri).map_err(|e| e.at(format!("outputs[{n}].uri")))?);
        }
        Ok(Checked {
            settings,
            inputs,
            outputs,
            next_input,
            next_output,
        })
    }
}

/// An input URI parsed (with its `standby`) and checked on this host.
pub(super) fn wanted_input(id: String, uri: &str) -> Result<Wanted> {
    let (endpoint, cold) = Endpoint::parse_input(uri)?;
    let endpoint = on_this_host(endpoint)?;
    Ok(Wanted { id, endpoint, cold })
}

/// An output URI parsed and checked on this host.
pub(super) fn wanted_output(id: String, uri: &str) -> Result<Wanted> {
    let endpoint = on_this_host(Endpoint::parse(uri, Role::Output)?)?;
    Ok(Wanted {
        id,
        endpoint,
        cold: false,
    })
}

/// Checks the switch settings of a spec and fills in the defaults.
fn switch_config(spec: &SwitchSpec) -> Result<SwitchConfig> {
    let d = SwitchConfig::default();
    let loss_timeout = spec
        .loss_timeout_ms
        .map_or(d.loss_timeout, Duration::from_millis);
    if loss_timeout < MIN_LOSS_TIMEOUT || loss_timeout > MAX_LOSS_TIMEOUT {
        return Err(Error::InvalidConfig(format!(
            "loss_timeout={} ms is outside {}..{} ms",
            loss_timeout.as_millis(),
            MIN_LOSS_TIMEOUT.as_millis(),
            MAX_LOSS_TIMEOUT.as_millis()
        )));
    }
    let failback_after = spec
        .failback_after_ms
        .map_or(d.failback_after, Duration::from_millis);
    if failback_after > MAX_FAILBACK_AFTER {
        return Err(Error::InvalidConfig(format!(
            "failback_after={} ms is above {} ms",
            failback_after.as_millis(),
            MAX_FAILBACK_AFTER.as_millis()
        )));
    }
    if let Some((w, h)) = spec.slate_size {
        if !limits::slate_size_in_range((w, h)) || w % 2 != 0 || h % 2 != 0 {
            return Err(Error::InvalidConfig(format!(
                "slate size {w}x{h} must have even sides from {min}x{min} to {}x{}",
                limits::MAX_SLATE_WIDTH,
                limits::MAX_SLATE_HEIGHT,
                min = limits::MIN_SLATE_SIDE,
            )));
        }
    }
    Ok(SwitchConfig {
        loss_timeout,
        failback_after,
        slate: spec.slate.unwrap_or(d.slate),
    })
}

/// Route, input and output names: what fits in a URL path and a log line.
pub(super) fn check_name(what: &str, name: &str) -> Result<()> {
    if limits::name_ok(name) {
        Ok(())
    } else {
        Err(Error::InvalidConfig(format!(
            "{what} name `{name}` must be 1 to {} characters of A-Z, a-z, 0-9, `-`, `_`, `.`",
            limits::MAX_NAME_LEN
        )))
    }
}

/// The id of a new input or output: the given one (checked), or `{prefix}{n}`, counting `next`
/// up past ids already `taken`.
pub(super) fn slot_id(
    what: &str,
    prefix: &str,
    given: Option<&str>,
    next: &mut usize,
    taken: impl Fn(&str) -> bool,
) -> Result<String> {
    let id = match given {
        Some(id) => {
            check_name(what, id)?;
            if id == SLATE_ID {
                return Err(Error::InvalidConfig(format!(
                    "{what} id `{SLATE_ID}` is reserved for the route's slate"
                )));
            }
            id.to_string()
        }
        None => loop {
            let candidate = format!("{prefix}{next}");
            *next += 1;
            if !taken(&candidate) {
                break candidate;
            }
        },
    };
    if taken(&id) {
        return Err(Error::AlreadyExists(format!("{what} `{id}`")));
    }
    Ok(id)
}

/// Checks what a URI cannot say by itself but this host can: the network interface it names
/// exists.
fn on_this_host(endpoint: Endpoint) -> Result<Endpoint> {
    if let Endpoint::Udp(u) = &endpoint {
        if !u.iface_exists() {
            let name = u.iface.as_deref().unwrap_or_default();
            return Err(Error::uri(
                &endpoint,
                format!("network interface `iface={name}` does not exist on this host"),
            ));
        }
    }
    Ok(endpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(inputs: &[(&str, Option<&str>)], outputs: &[(&str, Option<&str>)]) -> RouteSpec {
        RouteSpec {
            name: "news".into(),
            inputs: inputs
                .iter()
                .map(|&(uri, id)| InputSpec {
                    uri: uri.into(),
                    id: id.map(Into::into),
                })
                .collect(),
            outputs: outputs
                .iter()
                .map(|&(uri, id)| OutputSpec {
                    uri: uri.into(),
                    id: id.map(Into::into),
                })
                .collect(),
            ..RouteSpec::default()
        }
    }

    fn one_input() -> RouteSpec {
        spec(&[("udp://127.0.0.1:5000", None)], &[])
    }

    /// What is wrong, without the field it is at.
    fn inner(e: Error) -> Error {
        match e {
            Error::At { source, .. } => *source,
            e => e,
        }
    }

    fn config_error(spec: &RouteSpec) -> String {
        match Checked::new(spec).map_err(inner) {
            Err(Error::InvalidConfig(why)) => why,
            Err(e) => panic!("not a config error: {e}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn defaults_fill_what_the_spec_leaves_out() {
        let s = Checked::new(&one_input()).unwrap().settings;
        assert_eq!(s.queue_bytes, DEFAULT_TAP_QUEUE_BYTES);
        assert_eq!(s.switch.loss_timeout, limits::DEFAULT_LOSS_TIMEOUT);
        assert_eq!(s.switch.failback_after, limits::DEFAULT_FAILBACK_AFTER);
        assert!(s.switch.slate);
        assert_eq!(s.slate_size, None);
    }

    #[test]
    fn a_route_needs_a_good_name_and_an_input() {
        let bad_name = RouteSpec {
            name: "a b".into(),
            ..one_input()
        };
        assert!(config_error(&bad_name).contains("route name `a b`"));
        let no_input = spec(&[], &[("udp://127.0.0.1:6000", None)]);
        assert!(config_error(&no_input).contains("needs at least one input"));
    }

    #[test]
    fn settings_out_of_range_are_refused() {
        let with = |f: fn(&mut RouteSpec)| {
            let mut s = one_input();
            f(&mut s);
            config_error(&s)
        };
        assert!(with(|s| s.queue_bytes = Some(MIN_QUEUE_BYTES - 1)).contains("queue_bytes"));
        assert!(with(|s| s.switch.loss_timeout_ms = Some(49)).contains("loss_timeout=49 ms"));
        assert!(with(|s| s.switch.loss_timeout_ms = Some(60_001)).contains("50..60000 ms"));
        assert!(with(|s| s.switch.failback_after_ms = Some(3_600_001)).contains("failback"));
        assert!(with(|s| s.switch.slate_size = Some((1281, 720))).contains("even sides"));
        assert!(with(|s| s.switch.slate_size = Some((8000, 720))).contains("7680x4320"));
        let mut edge = one_input();
        edge.queue_bytes = Some(MIN_QUEUE_BYTES);
        edge.switch.loss_timeout_ms = Some(50);
        edge.switch.failback_after_ms = Some(3_600_000);
        edge.switch.slate_size = Some((16, 16));
        assert!(Checked::new(&edge).is_ok());
    }

    #[test]
    fn ids_are_given_in0_and_out0_on_past_the_ones_taken() {
        let s = spec(
            &[
                ("udp://127.0.0.1:5000", Some("in1")),
                ("udp://127.0.0.1:5001", None),
                ("udp://127.0.0.1:5002", None),
            ],
            &[
                ("udp://127.0.0.1:6000", None),
                ("udp://127.0.0.1:6001", Some("main")),
            ],
        );
        let c = Checked::new(&s).unwrap();
        let ids = |v: &[Wanted]| v.iter().map(|w| w.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&c.inputs), ["in1", "in0", "in2"]);
        assert_eq!(ids(&c.outputs), ["out0", "main"]);
        assert_eq!((c.next_input, c.next_output), (3, 1));
    }

    #[test]
    fn ids_are_unique_names_and_never_slate() {
        let twice = spec(
            &[
                ("udp://127.0.0.1:5000", Some("a")),
                ("udp://127.0.0.1:5001", Some("a")),
            ],
            &[],
        );
        assert!(matches!(
            Checked::new(&twice).map_err(inner),
            Err(Error::AlreadyExists(_))
        ));
        let slate = spec(&[("udp://127.0.0.1:5000", Some(SLATE_ID))], &[]);
        assert!(config_error(&slate).contains("reserved"));
        let bad = spec(&[("udp://127.0.0.1:5000", Some("a/b"))], &[]);
        assert!(config_error(&bad).contains("input name `a/b`"));
    }

    #[test]
    fn a_bad_uri_is_named() {
        let s = spec(&[("udp://127.0.0.1:5000", None)], &[("bogus://x", None)]);
        match Checked::new(&s) {
            Err(Error::At { field, source }) => {
                assert!(field.ends_with("].uri"), "{field}");
                assert!(matches!(*source, Error::InvalidUri { .. }), "{source}");
            }
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("a bad URI was taken"),
        }
    }

    #[test]
    fn only_the_queue_and_the_slate_need_a_restart() {
        let running = Checked::new(&one_input()).unwrap().settings;
        let mut s = one_input();
        s.switch.loss_timeout_ms = Some(1_000);
        s.switch.failback_after_ms = Some(0);
        assert!(!running.needs_restart(&s));
        let changes: [fn(&mut RouteSpec); 3] = [
            |s| s.queue_bytes = Some(MIN_QUEUE_BYTES),
            |s| s.switch.slate = Some(false),
            |s| s.switch.slate_size = Some((640, 360)),
        ];
        for change in changes {
            let mut s = one_input();
            change(&mut s);
            assert!(running.needs_restart(&s));
        }
        // The defaults spelled out are no change.
        let mut s = one_input();
        s.queue_bytes = Some(DEFAULT_TAP_QUEUE_BYTES);
        s.switch.slate = Some(true);
        assert!(!running.needs_restart(&s));
    }
}
