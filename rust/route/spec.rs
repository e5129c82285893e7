//! What a route is asked to be: the spec types the bindings fill in, and their checks (names,
//! ids, URIs, settings in range) that run before anything starts.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::limits::{
    self, check_number, DEFAULT_GOP_CACHE_BYTES, DEFAULT_TAP_QUEUE_BYTES, SLATE_ID,
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

/// A route's recording policy as the spec gives it (`None`: not given). The core checks it;
/// the control plane acts on it (starts, schedules and prunes recordings).
#[derive(Debug, Clone, Default)]
pub struct RecordingSpec {
    pub segment_ms: Option<u64>,
    /// Path pattern under the recordings directory (`record::check_pattern`).
    pub path: Option<String>,
    /// `ts` (the default) or `mp4`.
    pub format: Option<String>,
    pub max_age_s: Option<u64>,
    pub max_bytes: Option<u64>,
    pub min_free_bytes: Option<u64>,
}

impl RecordingSpec {
    /// Checks every field given; errors at `recording.<field>`.
    pub fn check(&self) -> Result<()> {
        for (field, value) in [
            ("recording.segment_ms", self.segment_ms),
            ("recording.max_age_s", self.max_age_s),
            ("recording.max_bytes", self.max_bytes),
            ("recording.min_free_bytes", self.min_free_bytes),
        ] {
            if let Some(v) = value {
                check_number(field, v)?;
            }
        }
        if let Some(p) = &self.path {
            crate::record::check_pattern(p).map_err(|e| e.at("recording.path"))?;
        }
        match self.format.as_deref() {
            None | Some("ts" | "mp4") => Ok(()),
            Some(other) => Err(Error::InvalidConfig(format!(
                "`{other}` is not a recording format (`ts`, `mp4`)"
            ))
            .at("recording.format")),
        }
    }
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
    /// The bound of the route's GOP cache for instant start, in bytes (0: off); `None` for
    /// the default.
    pub gop_cache_bytes: Option<u64>,
    pub switch: SwitchSpec,
    pub recording: RecordingSpec,
}

/// How much of a route a spec is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecKind {
    /// A route as it runs: it needs a good name and an input, and its URIs are checked on this
    /// host too (a UDP `iface` must exist).
    Whole,
    /// A part of one (the control server's templates, and its routes before their template is
    /// merged in): each field given is checked, none is required.
    Part,
}

/// Checks every field of `spec` without starting anything. Errors about one field are at its
/// path: `name`, `inputs`, `inputs[1].id`, `outputs[2].uri`, `queue_bytes`, `loss_timeout_ms`,
/// `failback_after_ms`, `slate_size`.
pub fn check_spec(spec: &RouteSpec, kind: SpecKind) -> Result<()> {
    Checked::check(spec, kind).map(|_| ())
}

/// A route's settings, checked and with the defaults filled in.
#[derive(Debug, Clone, Copy)]
pub(super) struct RouteSettings {
    /// Per-output queue bound in bytes.
    pub queue_bytes: u64,
    /// The GOP cache's bound (0: instant start off); changes live.
    pub gop_cache_bytes: u64,
    /// Loss and failback times and whether there is a slate, as the route starts with them
    /// (the switch holds the times in force: `reconfigure` changes them there).
    pub switch: SwitchConfig,
    /// The slate's picture size, when the spec sets one.
    pub slate_size: Option<(u32, u32)>,
}

impl RouteSettings {
    /// Checks the settings of `spec` (queue bound, switch times, slate size). A part is held
    /// to the GOP cache's bound only when it gives both it and the queue's.
    pub fn check(spec: &RouteSpec, kind: SpecKind) -> Result<RouteSettings> {
        let queue_bytes = match spec.queue_bytes {
            Some(n) => check_number("queue_bytes", n)?,
            None => DEFAULT_TAP_QUEUE_BYTES,
        };
        // A burst must fit an output's queue whole (the hub skips one that does not): a GOP
        // cache larger than half the queue is refused, and the default is bounded to it.
        let gop_cache_bytes = match spec.gop_cache_bytes {
            Some(n) => check_number("gop_cache_bytes", n)?,
            None => DEFAULT_GOP_CACHE_BYTES.min(queue_bytes / 2),
        };
        let both = spec.gop_cache_bytes.is_some() && spec.queue_bytes.is_some();
        if gop_cache_bytes > queue_bytes / 2 && (kind == SpecKind::Whole || both) {
            let why = format!(
                "gop_cache_bytes {gop_cache_bytes} is more than half of queue_bytes \
                 {queue_bytes}: a burst of the GOP would not fit an output's queue"
            );
            return Err(Error::InvalidConfig(why).at("gop_cache_bytes"));
        }
        Ok(RouteSettings {
            queue_bytes,
            gop_cache_bytes,
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
    /// A whole route's spec, checked.
    pub fn new(spec: &RouteSpec) -> Result<Checked> {
        Checked::check(spec, SpecKind::Whole)
    }

    fn check(spec: &RouteSpec, kind: SpecKind) -> Result<Checked> {
        if kind == SpecKind::Whole {
            check_name("route", &spec.name).map_err(|e| e.at("name"))?;
            if spec.inputs.is_empty() {
                let why = format!("route `{}` needs at least one input", spec.name);
                return Err(Error::InvalidConfig(why).at("inputs"));
            }
        }
        let settings = RouteSettings::check(spec, kind)?;
        spec.recording.check()?;
        let inputs: Vec<(&str, Option<&str>)> = (spec.inputs.iter())
            .map(|i| (i.uri.as_str(), i.id.as_deref()))
            .collect();
        let outputs: Vec<(&str, Option<&str>)> = (spec.outputs.iter())
            .map(|o| (o.uri.as_str(), o.id.as_deref()))
            .collect();
        let (inputs, next_input) = checked_side(Role::Input, &inputs, kind)?;
        let (outputs, next_output) = checked_side(Role::Output, &outputs, kind)?;
        check_outputs(&outputs)?;
        Ok(Checked {
            settings,
            inputs,
            outputs,
            next_input,
            next_output,
        })
    }
}

/// The inputs or the outputs of a spec, `(uri, id)` each, checked: ids given (`assign_ids`),
/// URIs parsed (and checked on this host for a whole route).
fn checked_side(
    role: Role,
    endpoints: &[(&str, Option<&str>)],
    kind: SpecKind,
) -> Result<(Vec<Wanted>, usize)> {
    let (ids, next) = assign_ids(role, "", endpoints, &[])?;
    let mut wanted = Vec::with_capacity(ids.len());
    for (n, (id, &(uri, _))) in ids.into_iter().zip(endpoints).enumerate() {
        let parsed = match kind {
            SpecKind::Whole => self::wanted(role, id, uri),
            SpecKind::Part => {
                Endpoint::parse_as(uri, role).map(|(endpoint, cold)| Wanted { id, endpoint, cold })
            }
        };
        wanted.push(parsed.map_err(|e| e.at(format!("{}[{n}].uri", group(role))))?);
    }
    Ok((wanted, next))
}

/// What no route's outputs can do together: take two places on the shared SRT port (a route
/// has one at most), or write one file (two writers would interleave their streams in it; the
/// file as `file_identity` knows it, so `a/../x.ts` and a link to `x.ts` are `x.ts`).
fn check_outputs(outputs: &[Wanted]) -> Result<()> {
    for (n, w) in outputs.iter().enumerate() {
        let earlier = &outputs[..n];
        let earlier = earlier.iter().map(|o| (o.id.as_str(), &o.endpoint));
        if let Some(first) = conflicting_output(earlier, &w.endpoint) {
            return Err(first.at(format!("outputs[{n}].uri")));
        }
    }
    Ok(())
}

/// Why `endpoint` cannot join the outputs `others` of its route, if it cannot.
pub(super) fn conflicting_output<'a>(
    others: impl IntoIterator<Item = (&'a str, &'a Endpoint)>,
    endpoint: &Endpoint,
) -> Option<Error> {
    let file = endpoint
        .written_file(Role::Output)
        .map(crate::gateway::file_identity);
    for (id, other) in others {
        if endpoint.is_shared() && other.is_shared() {
            return Some(Error::InvalidConfig(format!(
                "a route has one srt-shared:// output at most, and {id} of the same route is one"
            )));
        }
        let other = other.written_file(Role::Output);
        if file.is_some() && other.map(crate::gateway::file_identity) == file {
            return Some(Error::InvalidConfig(format!(
                "`{endpoint}` writes its file like {id} of the same route (a file takes one \
                 writer: two would interleave their streams in it)"
            )));
        }
    }
    None
}

/// An input or output URI parsed (an input's with its `standby`) and checked on this host.
pub(super) fn wanted(role: Role, id: String, uri: &str) -> Result<Wanted> {
    let (endpoint, cold) = Endpoint::parse_as(uri, role)?;
    let endpoint = on_this_host(endpoint)?;
    Ok(Wanted { id, endpoint, cold })
}

/// Checks the switch settings of a spec and fills in the defaults.
fn switch_config(spec: &SwitchSpec) -> Result<SwitchConfig> {
    let d = SwitchConfig::default();
    let ms = |field: &str, value: Option<u64>, default: Duration| -> Result<Duration> {
        value.map_or(Ok(default), |v| {
            check_number(field, v).map(Duration::from_millis)
        })
    };
    let loss_timeout = ms("loss_timeout_ms", spec.loss_timeout_ms, d.loss_timeout)?;
    let failback_after = ms(
        "failback_after_ms",
        spec.failback_after_ms,
        d.failback_after,
    )?;
    if let Some((w, h)) = spec.slate_size {
        if !limits::slate_size_in_range((w, h)) || w % 2 != 0 || h % 2 != 0 {
            return Err(slate_size_error(format!("{w}x{h}")));
        }
    }
    Ok(SwitchConfig {
        loss_timeout,
        failback_after,
        slate: spec.slate.unwrap_or(d.slate),
    })
}

/// A slate size written `WIDTHxHEIGHT` (as the control server's specs and the notebook API
/// may give it), checked.
pub fn parse_slate_size(text: &str) -> Result<(u32, u32)> {
    limits::parse_picture_size(text).ok_or_else(|| slate_size_error(format!("`{text}`")))
}

fn slate_size_error(size: String) -> Error {
    let why = format!("slate size {size} must be {}", limits::picture_size_rule());
    Error::InvalidConfig(why).at("slate_size")
}

/// Route, template, key, input and output names: what fits in a URL path and a log line (see
/// `limits::MAX_NAME_LEN`).
pub fn check_name(what: &str, name: &str) -> Result<()> {
    if limits::name_ok(name) {
        Ok(())
    } else {
        Err(Error::InvalidConfig(format!(
            "{what} name `{name}` must be {}",
            limits::name_rule()
        )))
    }
}

/// An input or output id someone gave: a name, and not the slate's.
fn check_id(what: &str, id: &str) -> Result<()> {
    check_name(what, id)?;
    if id == SLATE_ID {
        return Err(Error::InvalidConfig(format!(
            "{what} id `{SLATE_ID}` is reserved for the route's slate"
        )));
    }
    Ok(())
}

/// `inputs` or `outputs`: where a spec lists endpoints of `role`.
fn group(role: Role) -> &'static str {
    match role {
        Role::Input => "inputs",
        Role::Output => "outputs",
    }
}

/// Gives each of a spec's inputs or outputs (`role`), `(uri, id)` each, its id: the one it has
/// (checked: a name, not the slate's, not used twice), else the id the `previous` spec gave
/// the same URI (`(uri, id)` each) if no endpoint has it now, else the next free
/// `{prefix}in<n>`/`{prefix}out<n>`. Returns the ids and the counter past the last `<n>` given.
/// Errors are at `inputs[n].id`/`outputs[n].id`.
pub fn assign_ids(
    role: Role,
    prefix: &str,
    endpoints: &[(&str, Option<&str>)],
    previous: &[(&str, &str)],
) -> Result<(Vec<String>, usize)> {
    let mut used: Vec<&str> = Vec::new();
    for (n, &(_, id)) in endpoints.iter().enumerate() {
        let Some(id) = id else { continue };
        let at = |e: Error| e.at(format!("{}[{n}].id", group(role)));
        check_id(&role.to_string(), id).map_err(at)?;
        if used.contains(&id) {
            return Err(at(Error::InvalidConfig(format!(
                "{role} id `{id}` is used twice"
            ))));
        }
        used.push(id);
    }
    // The first previous id of each URI, unless an endpoint has it now.
    let mut reusable: Vec<(&str, &str)> = Vec::new();
    for &(uri, id) in previous {
        if !used.contains(&id) && !reusable.iter().any(|&(u, _)| u == uri) {
            reusable.push((uri, id));
        }
    }
    let mut given: Vec<String> = used.iter().map(|id| id.to_string()).collect();
    let mut ids = Vec::with_capacity(endpoints.len());
    let mut next = 0;
    for &(uri, id) in endpoints {
        let id = match id {
            Some(id) => id.to_string(),
            None => {
                let kept = (reusable.iter().position(|&(u, _)| u == uri))
                    .map(|i| reusable.remove(i).1.to_string())
                    .filter(|id| !given.contains(id));
                let id = kept.unwrap_or_else(|| {
                    next_free(role, prefix, &mut next, |c| given.iter().any(|g| g == c))
                });
                given.push(id.clone());
                id
            }
        };
        ids.push(id);
    }
    Ok((ids, next))
}

/// The id of one new input or output of a running route: the given one (checked), or
/// `{in|out}{n}`, counting `next` up past ids already `taken`.
pub(super) fn slot_id(
    role: Role,
    given: Option<&str>,
    next: &mut usize,
    taken: impl Fn(&str) -> bool,
) -> Result<String> {
    let what = role.to_string();
    let id = match given {
        Some(id) => {
            check_id(&what, id)?;
            id.to_string()
        }
        None => next_free(role, "", next, &taken),
    };
    if taken(&id) {
        return Err(Error::AlreadyExists(format!("{what} `{id}`")));
    }
    Ok(id)
}

/// `{prefix}in<n>` (or `out<n>`) for the first `<n>` from `next` on that is not `taken`; `next`
/// moves past it.
fn next_free(role: Role, prefix: &str, next: &mut usize, taken: impl Fn(&str) -> bool) -> String {
    let auto = match role {
        Role::Input => "in",
        Role::Output => "out",
    };
    loop {
        let candidate = format!("{prefix}{auto}{next}");
        *next += 1;
        if !taken(&candidate) {
            return candidate;
        }
    }
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
    use crate::limits::{MAX_QUEUE_BYTES, MIN_QUEUE_BYTES};

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

    /// The field an error is at, and what it says.
    fn refused(spec: &RouteSpec, kind: SpecKind) -> (String, String) {
        match check_spec(spec, kind) {
            Err(Error::At { field, source }) => (field, source.to_string()),
            Err(e) => panic!("not at a field: {e}"),
            Ok(()) => panic!("accepted"),
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
        assert!(with(|s| s.queue_bytes = Some(MIN_QUEUE_BYTES - 1)).contains("65535 is outside"));
        assert!(with(|s| s.queue_bytes = Some(MAX_QUEUE_BYTES + 1)).contains("..1073741824"));
        assert!(with(|s| s.switch.loss_timeout_ms = Some(49)).contains("49 is outside 50..60000"));
        assert!(with(|s| s.switch.loss_timeout_ms = Some(60_001)).contains("50..60000"));
        assert!(with(|s| s.switch.failback_after_ms = Some(3_600_001)).contains("0..3600000"));
        assert!(with(|s| s.switch.slate_size = Some((1281, 720))).contains("even sides"));
        assert!(with(|s| s.switch.slate_size = Some((8000, 720))).contains("7680x4320"));
        // Each at its field, as the notebook API names it.
        let mut s = one_input();
        s.switch.failback_after_ms = Some(3_600_001);
        assert_eq!(refused(&s, SpecKind::Whole).0, "failback_after_ms");
        s.switch.slate_size = Some((7, 7));
        s.switch.failback_after_ms = None;
        assert_eq!(refused(&s, SpecKind::Whole).0, "slate_size");
        assert_eq!(parse_slate_size("640x360").unwrap(), (640, 360));
        let e = parse_slate_size("7x7").unwrap_err().to_string();
        assert!(e.starts_with("slate_size: ") && e.contains("`7x7`"), "{e}");
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
        assert_eq!(
            refused(&twice, SpecKind::Whole),
            (
                "inputs[1].id".into(),
                "invalid configuration: input id `a` is used twice".into()
            )
        );
        let slate = spec(&[("udp://127.0.0.1:5000", Some(SLATE_ID))], &[]);
        assert!(config_error(&slate).contains("reserved"));
        let bad = spec(&[("udp://127.0.0.1:5000", Some("a/b"))], &[]);
        assert!(config_error(&bad).contains("input name `a/b`"));
    }

    #[test]
    fn ids_given_are_kept_free_for_them_and_previous_ids_are_kept_by_uri() {
        let ids = |endpoints: &[(&str, Option<&str>)], previous: &[(&str, &str)], prefix| {
            assign_ids(Role::Input, prefix, endpoints, previous).unwrap()
        };
        // An id given later is not handed out earlier.
        assert_eq!(
            ids(&[("a", None), ("b", Some("in0"))], &[], "").0,
            ["in1", "in0"]
        );
        // An endpoint without an id keeps the one its URI had, unless another one has it now.
        let previous = [("a", "main"), ("b", "in0"), ("c", "x")];
        let (got, next) = ids(
            &[("c", Some("main")), ("b", None), ("a", None)],
            &previous,
            "",
        );
        assert_eq!(
            (got, next),
            (vec!["main".into(), "in0".into(), "in1".into()], 2)
        );
        // A template's ids carry its name.
        assert_eq!(ids(&[("a", None)], &[], "t-").0, ["t-in0"]);
        let (field, why) = match assign_ids(Role::Output, "", &[("a", Some("-x"))], &[]) {
            Err(Error::At { field, source }) => (field, source.to_string()),
            other => panic!("{other:?}"),
        };
        assert_eq!(field, "outputs[0].id");
        assert!(why.contains("starting with a letter or digit"), "{why}");
    }

    #[test]
    fn a_part_of_a_route_needs_no_name_nor_input_but_its_fields_are_checked() {
        let part = spec(&[], &[("udp://239.1.1.1:5000?iface=nosuch0", None)]);
        let part = RouteSpec {
            name: String::new(),
            ..part
        };
        // Only a whole route is checked on this host (its iface must exist).
        assert!(check_spec(&part, SpecKind::Part).is_ok());
        assert_eq!(refused(&part, SpecKind::Whole).0, "name");
        let named = RouteSpec {
            name: "news".into(),
            ..part.clone()
        };
        assert_eq!(refused(&named, SpecKind::Whole).0, "inputs");
        let bad = RouteSpec {
            queue_bytes: Some(1),
            ..part.clone()
        };
        assert_eq!(refused(&bad, SpecKind::Part).0, "queue_bytes");
        let bad_uri = spec(&[("udp://:notaport", None)], &[]);
        assert_eq!(refused(&bad_uri, SpecKind::Part).0, "inputs[0].uri");
    }

    #[test]
    fn a_gop_cache_larger_than_half_the_queue_is_refused_and_the_default_is_bounded() {
        let mut s = one_input();
        s.queue_bytes = Some(MIN_QUEUE_BYTES);
        s.gop_cache_bytes = Some(MIN_QUEUE_BYTES / 2 + 1);
        let (field, why) = refused(&s, SpecKind::Whole);
        assert_eq!(field, "gop_cache_bytes");
        assert!(why.contains("half of queue_bytes"), "{why}");
        s.gop_cache_bytes = Some(MIN_QUEUE_BYTES / 2);
        assert!(Checked::new(&s).is_ok());
        s.gop_cache_bytes = None;
        let settings = Checked::new(&s).unwrap().settings;
        assert_eq!(settings.gop_cache_bytes, MIN_QUEUE_BYTES / 2);
        // A part without the queue's bound is checked once merged into a whole route.
        let part = RouteSpec {
            queue_bytes: None,
            gop_cache_bytes: Some(8 << 20),
            ..one_input()
        };
        assert!(check_spec(&part, SpecKind::Part).is_ok());
    }

    #[test]
    fn outputs_take_one_shared_place_and_one_writer_per_file() {
        let two = |a: &str, b: &str| {
            refused(
                &spec(&[("test://", None)], &[(a, None), (b, None)]),
                SpecKind::Whole,
            )
        };
        let (field, e) = two("srt-shared://", "srt-shared://?users=v:secretsecret");
        assert_eq!(field, "outputs[1].uri");
        assert!(
            e.contains("one srt-shared:// output at most") && e.contains("out0"),
            "{e}"
        );
        let (field, e) = two("file:///tmp/x.ts", "file:///tmp/../tmp/x.ts");
        assert_eq!(field, "outputs[1].uri");
        assert!(e.contains("like out0 of the same route"), "{e}");
        assert!(Checked::new(&spec(
            &[("srt-shared://", None), ("file:///tmp/x.ts", None)],
            &[("srt-shared://", None), ("file:///tmp/y.ts", None)]
        ))
        .is_ok());
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
