//! The route's recorder: start, pause, resume and stop a recording (a hub tap, `record/`),
//! and its stats. A recording never touches the outputs: attaching and detaching a tap is a
//! list edit under the hub's `taps` lock.

use std::sync::Arc;

use super::{lock, Route};
use crate::error::{Error, Result};
use crate::hub::Tap;
use crate::record::{RecordSettings, Recorder, RecorderStats, TAP_ID};

/// What a route's earlier recorders did: each start of a recording, however it is made (a
/// policy, gRPC, the Python API), adds the figures of the recorder it replaces, so that the
/// stats' `*_all` figures run on across restarts of the recorder for the route's life.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Earlier {
    segments: u64,
    bytes: u64,
    drops: u64,
    errors: u64,
}

impl Earlier {
    fn add(&mut self, s: &RecorderStats) {
        self.segments += s.segments;
        self.bytes += s.bytes;
        self.drops += s.drops;
        self.errors += s.errors;
    }
}

impl Route {
    /// Starts recording with `settings`; an error if it records already (pause and resume
    /// it, or stop it first).
    pub fn start_recording(&self, settings: RecordSettings) -> Result<()> {
        let mut inner = lock(&self.inner);
        if inner.closed {
            return Err(Error::Closed(format!("route `{}`", self.name)));
        }
        if inner.recording {
            return Err(Error::AlreadyExists(format!(
                "a recording of route `{}`",
                self.name
            )));
        }
        let hub = Arc::downgrade(&self.hub);
        let cuts: crate::record::Cuts = Arc::new(move || hub.upgrade().map_or(0, |h| h.cuts()));
        let (recorder, intake) = Recorder::start(&self.name, settings, self.log.clone(), cuts)?;
        self.hub
            .attach(Arc::new(Tap::record(TAP_ID.into(), intake, Arc::default())));
        if let Some(last) = inner.recorder.replace(Arc::new(recorder)) {
            inner.recorded_before.add(&last.stats());
        }
        inner.recording = true;
        Ok(())
    }

    /// Pauses (`true`) or resumes the recording: a pause closes the open segment; a resume
    /// opens a new one at the next PAT and keyframe.
    pub fn pause_recording(&self, pause: bool) -> Result<()> {
        let inner = lock(&self.inner);
        match &inner.recorder {
            Some(r) if inner.recording && pause => r.pause(),
            Some(r) if inner.recording => r.resume(),
            _ => {
                return Err(Error::NotFound(format!(
                    "a recording of route `{}`",
                    self.name
                )))
            }
        }
        Ok(())
    }

    /// Sets the running recording's free-space floor, checked before each segment opens.
    pub fn set_recording_floor(&self, min_free_bytes: u64) -> Result<()> {
        let inner = lock(&self.inner);
        match &inner.recorder {
            Some(r) if inner.recording => r.set_min_free(min_free_bytes),
            _ => {
                return Err(Error::NotFound(format!(
                    "a recording of route `{}`",
                    self.name
                )))
            }
        }
        Ok(())
    }

    /// Stops the recording: the open segment ends at the next video frame's start, as at a
    /// pause (at most about 1 s, the tap still attached), then what is queued is written and
    /// the segment closed (waiting at most 5 s for the disk, with the route's lock let go).
    /// Its stats stay until the next start.
    pub fn stop_recording(&self) -> Result<()> {
        self.settle_recording();
        let recorder = {
            let mut inner = lock(&self.inner);
            if !inner.recording {
                return Err(Error::NotFound(format!(
                    "a recording of route `{}`",
                    self.name
                )));
            }
            inner.recording = false;
            drop(self.hub.detach(TAP_ID));
            inner.recorder.clone()
        };
        if let Some(r) = recorder {
            r.finish();
        }
        Ok(())
    }

    /// Ends a running recording's open segment at a frame's start before a stop detaches its
    /// tap (waits about 1 s at most, with the route's lock let go).
    pub(super) fn settle_recording(&self) {
        if let Some(r) = self.running_recorder() {
            r.settle();
        }
    }

    /// Asks a running recording to end its open segment at a frame's start, without waiting:
    /// a gateway that stops asks every route first, so that the routes' `shutdown`s then wait
    /// for their recorders side by side rather than one after another.
    pub fn ask_settle_recording(&self) {
        if let Some(r) = self.running_recorder() {
            r.ask_settle();
        }
    }

    fn running_recorder(&self) -> Option<Arc<Recorder>> {
        let inner = lock(&self.inner);
        (inner.recording && !inner.closed)
            .then(|| inner.recorder.clone())
            .flatten()
    }

    /// The recorder's stats (state `stopped` when it never ran).
    pub(super) fn recording_stats(&self, inner: &super::Inner) -> RecorderStats {
        let mut stats = match &inner.recorder {
            Some(r) => r.stats(),
            None => RecorderStats {
                state: "stopped",
                ..RecorderStats::default()
            },
        };
        let before = &inner.recorded_before;
        stats.segments_all = before.segments + stats.segments;
        stats.bytes_all = before.bytes + stats.bytes;
        stats.drops_all = before.drops + stats.drops;
        stats.errors_all = before.errors + stats.errors;
        stats
    }
}
