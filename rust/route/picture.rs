//! Pictures of a route: a decode branch off its hub (`tap::decode`) for the route's output or
//! for one input, started when asked and stopped when dropped; a snapshot is the first
//! picture of such a branch.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{lock, Route};
use crate::error::{Error, Result};
use crate::hub::{Feed, Hub};
use crate::limits::SLATE_ID;
use crate::tap::{DecodeSettings, DecodeStats, Decoder, Picture};

/// Numbers the decode branches of the process (their pipelines' names).
static BRANCHES: AtomicU64 = AtomicU64::new(1);

/// A running decode branch of a route; stops and detaches when dropped.
pub struct Decoding {
    decoder: Decoder,
    hub: Arc<Hub>,
    /// The input it watches (None: the route's output).
    feed: Option<Arc<Feed>>,
    /// What it shows, for errors: `route `lab`` or `input `in1` of route `lab``.
    pub what: String,
    closed: std::sync::atomic::AtomicBool,
    /// The route's (`Route::stopped`): a wait ends with `Closed` when the route stops.
    route_stopped: Arc<AtomicBool>,
    /// It watches a cold-standby input (connected only while on air): says so when no data
    /// comes.
    cold: bool,
}

/// The longest a wait for a picture blocks between looks at whether the branch or its route
/// closed and whether the caller wants to go on.
const SLICE: Duration = Duration::from_millis(250);

/// Asked between slices of a wait: false ends it (a Ctrl-C the Python layer saw).
pub type GoOn<'a> = &'a mut dyn FnMut() -> bool;

/// The error of a wait that `GoOn` ended (the caller raises its own in its place).
fn interrupted(what: &str) -> Error {
    Error::Closed(format!("the wait for a picture of {what} (interrupted)"))
}

impl Decoding {
    /// The newest picture, waiting up to `timeout` for one (None: none came). A branch closed,
    /// or whose route stopped, is `Closed`.
    pub fn pull(&self, timeout: Duration) -> Result<Option<Picture>> {
        self.pull_or(timeout, &mut || true)
    }

    /// `pull`, asking `go_on` between slices of the wait.
    pub fn pull_or(&self, timeout: Duration, go_on: GoOn<'_>) -> Result<Option<Picture>> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.closed.load(Relaxed) {
                return Err(Error::Closed(format!("the decode branch of {}", self.what)));
            }
            if self.route_stopped.load(Relaxed) {
                return Err(Error::Closed(format!("{} (stopped)", self.what)));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if let Some(p) = self.decoder.pull(left.min(SLICE))? {
                return Ok(Some(p));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            if !go_on() {
                return Err(interrupted(&self.what));
            }
        }
    }

    pub fn stats(&self) -> DecodeStats {
        self.decoder.stats()
    }

    /// Detaches from the hub and stops the pipeline. Idempotent.
    pub fn close(&self) {
        if self.closed.swap(true, Relaxed) {
            return;
        }
        let id = &self.decoder.tap.id;
        match &self.feed {
            Some(feed) => {
                self.hub.detach_from_feed(feed, id);
            }
            None => {
                self.hub.detach(id);
            }
        }
        self.decoder.stop();
    }
}

impl Drop for Decoding {
    fn drop(&mut self) {
        self.close();
    }
}

impl Route {
    /// Starts a decode branch of the route's output (`input` None) or of one input, as it
    /// arrives whether on air or not. It never slows the route: the hub drops for it (counted
    /// in its stats) when it falls behind.
    /// With `from_gop`, a branch of the output starts with the GOP the hub keeps (a snapshot:
    /// a picture at once); without, with the next live keyframe (frames: live ones only).
    pub fn decode(
        &self,
        input: Option<&str>,
        settings: &DecodeSettings,
        from_gop: bool,
    ) -> Result<Decoding> {
        let (feed, what, cold) = {
            let inner = lock(&self.inner);
            if inner.closed {
                return Err(Error::Closed(format!("route `{}`", self.name)));
            }
            match input {
                None => (None, format!("route `{}`", self.name), false),
                Some(id) => {
                    let what = format!("input `{id}` of route `{}`", self.name);
                    let (feed, cold) = if id == SLATE_ID {
                        if !self.settings.switch.slate {
                            return Err(Error::NotFound(format!(
                                "{what} (the route has no slate: slate=false)"
                            )));
                        }
                        (Some(inner.slate_feed.clone()), false)
                    } else {
                        let slot = (inner.inputs.iter().find(|s| s.id == id))
                            .ok_or_else(|| Error::NotFound(what.clone()))?;
                        (slot.feed.clone(), slot.cold)
                    };
                    let feed = feed.ok_or_else(|| {
                        Error::InvalidConfig(format!("{what} has no feed to decode"))
                    })?;
                    (Some(feed), what, cold)
                }
            }
        };
        let n = BRANCHES.fetch_add(1, Relaxed);
        let decoder = Decoder::build(&format!("castway-{}-decode{n}", self.name), settings)?;
        // On the output, the tap is sent the hub's join burst (PAT/PMT and the latest GOP)
        // before its first live buffer, as any joining output, unless it wants live data only.
        if !from_gop {
            decoder.tap.skip_burst();
        }
        if let Err(e) = decoder.start() {
            decoder.stop();
            return Err(e);
        }
        {
            // Under the route's lock: a route stopping now does not leave the tap attached.
            let inner = lock(&self.inner);
            if inner.closed {
                drop(inner);
                decoder.stop();
                return Err(Error::Closed(format!("route `{}`", self.name)));
            }
            match &feed {
                Some(f) => self.hub.attach_to_feed(f, decoder.tap.clone()),
                None => self.hub.attach(decoder.tap.clone()),
            }
        }
        Ok(Decoding {
            decoder,
            hub: self.hub.clone(),
            feed,
            what,
            closed: Default::default(),
            route_stopped: self.stopped.clone(),
            cold,
        })
    }

    /// The route's current picture: one of its latest GOP, decoded from the keyframe the hub
    /// keeps (at once; at most a GOP old), or else from the next keyframe, as an input's
    /// picture is: waits up to `timeout` for it.
    pub fn snapshot(
        &self,
        input: Option<&str>,
        settings: &DecodeSettings,
        timeout: Duration,
    ) -> Result<Picture> {
        self.snapshot_or(input, settings, timeout, &mut || true)
    }

    /// `snapshot`, asking `go_on` between slices of the wait.
    pub fn snapshot_or(
        &self,
        input: Option<&str>,
        settings: &DecodeSettings,
        timeout: Duration,
        go_on: GoOn<'_>,
    ) -> Result<Picture> {
        let branch = self.decode(input, settings, true)?;
        // A picture, a pipeline error, the route stopping, or the deadline.
        if let Some(p) = branch.pull_or(timeout, go_on)? {
            return Ok(p);
        }
        let s = branch.stats();
        let why = if s.bytes == 0 && branch.cold {
            "no data arrived: it is a cold standby, connected only while on air"
        } else if s.bytes == 0 {
            "no data arrived"
        } else {
            "data arrived but no keyframe decoded"
        };
        Err(Error::Timeout(format!(
            "no picture of {} within {:.1} s ({why})",
            branch.what,
            timeout.as_secs_f64()
        )))
    }
}
