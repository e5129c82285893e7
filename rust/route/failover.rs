//! Failover glue: what the switch decides, applied to the hub; the slate and cold standby
//! inputs started and stopped as the switch needs them; manual locks and switch waits.

use std::time::{Duration, Instant};

use super::slot::{Slot, Status};
use super::stats::SwitchRecord;
use super::{lock, Inner, Route, CAT};
use crate::error::Result;
use crate::events::{self, Kind};
use crate::hub::Feed;
use crate::limits::{self, DEFAULT_SLATE_SIZE, SLATE_ID};
use crate::switch::{Reason, Source, Switched, HISTORY};
use crate::uri::{Endpoint, Role, TestEndpoint};

impl Route {
    /// Switches to input `id` and holds it there until `auto`: at its next keyframe if what
    /// goes out now still plays, at once otherwise. If it is lost the slate covers.
    pub fn switch_to(&self, id: &str) -> Result<()> {
        let mut inner = lock(&self.inner);
        let i = self.position(&inner.inputs, "input", id)?;
        let now = self.clock.now();
        self.feed_switch(&mut inner, now);
        if let Some(s) = inner.switch.lock(i, now) {
            self.apply(&mut inner, s, now);
        }
        // A cold input is connected now; the switch takes it once it delivers.
        self.manage_cold(&mut inner, now);
        self.reschedule();
        Ok(())
    }

    /// Back to automatic choice by priority.
    pub fn auto(&self) {
        let mut inner = lock(&self.inner);
        let now = self.clock.now();
        self.feed_switch(&mut inner, now);
        if let Some(s) = inner.switch.unlock(now) {
            self.apply(&mut inner, s, now);
        }
        self.reschedule();
    }

    /// Waits until a switch with a sequence number above `after` happened and returns it (the
    /// oldest one still kept), or None after `timeout` or when the route stops. The wait is on
    /// the gateway's event log: every switch and the route's shutdown are events of the route.
    pub fn wait_switch(&self, after: u64, timeout: Duration) -> Option<SwitchRecord> {
        // A real wait on the condition variable: the system clock, not the route's.
        let deadline = Instant::now() + timeout;
        loop {
            // Read before the history: a switch recorded after this look is pushed to the log
            // (under the same lock) with a number above `seen`.
            let seen = self.log.latest();
            {
                let inner = lock(&self.inner);
                if let Some(r) = inner.history.iter().find(|r| r.seq > after) {
                    return Some(r.clone());
                }
                if inner.closed {
                    return None;
                }
            }
            let mine = |e: &events::Event| e.route.as_deref() == Some(self.name.as_str());
            if !self.log.wait_for(seen, deadline, mine) {
                return None;
            }
        }
    }

    /// Hands the switch the latest data time of each input.
    pub(super) fn feed_switch(&self, inner: &mut Inner, now: Instant) {
        let Inner { inputs, switch, .. } = inner;
        for (i, slot) in inputs.iter().enumerate() {
            let fresh = slot.status == Status::Running || slot.status == Status::Starting;
            if let (true, Some(feed)) = (fresh, &slot.feed) {
                if let Some(t) = self.hub.last_data(feed) {
                    if t <= now && slot.delivered() {
                        switch.data(i, t);
                    }
                }
            }
        }
    }

    /// Records a decision of the switch and makes the hub follow it.
    pub(super) fn apply(&self, inner: &mut Inner, s: Switched, now: Instant) {
        let from = inner.source_name(s.from);
        self.apply_named(inner, s, from, now);
    }

    pub(super) fn apply_named(
        &self,
        inner: &mut Inner,
        s: Switched,
        from: Option<String>,
        now: Instant,
    ) {
        // The hub feed of what the switch had on air (before an input's removal shifts the
        // indices, the caller names it; its feed is the one on air if any).
        let from_feed = match s.from {
            Source::Input(i) => inner
                .inputs
                .get(i)
                .filter(|slot| from.as_deref() == Some(slot.id.as_str()))
                .and_then(|slot| slot.feed.as_ref().map(|f| f.id)),
            Source::Slate => Some(inner.slate_feed.id),
            Source::Nothing => None,
        };
        // The route's history shows the moment before each switch, not only once a second.
        self.sample(inner, true);
        inner.seq += 1;
        inner.by_reason[s.reason as usize] += 1;
        let mut record = SwitchRecord {
            seq: inner.seq,
            // Set below, as the event log stamps it: both show the same time.
            at_unix: 0.0,
            from,
            to: inner.source_name(s.to),
            reason: s.reason.as_str(),
        };
        gst::info!(
            CAT,
            "{}: switch {} -> {} ({})",
            self.name,
            record.from.as_deref().unwrap_or("nothing"),
            record.to.as_deref().unwrap_or("nothing"),
            record.reason
        );
        record.at_unix = self.emit(events::Event {
            from: record.from.clone(),
            to: record.to.clone(),
            reason: Some(record.reason.into()),
            ..events::Event::new(Kind::Switch)
        });
        if inner.history.len() == HISTORY {
            inner.history.pop_front();
        }
        inner.history.push_back(record);
        inner.timers.disarm();
        let target = match s.to {
            Source::Input(i) => inner.inputs.get(i).and_then(|s| s.feed.clone()),
            Source::Slate => {
                self.start_slate(inner, now);
                Some(inner.slate_feed.clone())
            }
            Source::Nothing => None,
        };
        // Every input is lost and the input on air stays the hub's until something else can
        // really go out: a stall that ends before the slate delivers costs nothing, and a
        // route with one input passes all it receives.
        // Only when the input that was lost is the one on air (not, say, an input a manual
        // switch was waiting for while another still plays).
        let lost = matches!(
            s.reason,
            Reason::Lost | Reason::Error | Reason::Eos | Reason::Slate
        ) && matches!(s.to, Source::Slate | Source::Nothing)
            && self.hub.active() != 0
            && from_feed.is_some_and(|id| id == self.hub.active());
        // A slate already running (a cover called off before) has no first keyframe to wait
        // for: it goes out at once, its video from its next keyframe.
        let slate_plays = s.to == Source::Slate && self.delivers(inner, &inner.slate_feed);
        match target {
            // Only the slate can replace what was on air: it goes out at its first keyframe,
            // unless what was on air delivers again first.
            Some(feed) if lost && !slate_plays => {
                self.hub.cover_with(&feed);
                inner.timers.arm(now);
            }
            // What goes out still plays: change over at the new feed's keyframe, no gap.
            Some(feed) if self.on_air_plays(inner) => {
                self.hub.cut_at_keyframe(&feed);
                inner.timers.arm(now);
            }
            None if lost => self.hub.disarm(),
            target => self.hub.cut_to(target.as_deref()),
        }
    }

    /// Tells the hub which input is the route's only one, if it has one input: that input
    /// has nothing to switch to, so all it delivers goes out.
    pub(super) fn note_sole(&self, inner: &Inner) {
        let sole = match inner.inputs.as_slice() {
            [only] => only.feed.as_deref(),
            _ => None,
        };
        self.hub.set_sole(sole);
    }

    /// Tells the shared SRT port the inputs' priority order: a publisher naming only the route
    /// takes the highest-priority free `srt-shared://` input.
    pub(super) fn note_priority(&self, inner: &Inner) {
        let ids: Vec<&str> = inner.inputs.iter().map(|s| s.id.as_str()).collect();
        self.claims.shared_srt.set_priority(&self.name, &ids);
    }

    /// Whether the feed going out delivered within the loss timeout.
    pub(super) fn on_air_plays(&self, inner: &Inner) -> bool {
        inner
            .feed_by_id(self.hub.active())
            .is_some_and(|f| self.delivers(inner, &f))
    }

    /// Whether `feed` delivered within the loss timeout.
    fn delivers(&self, inner: &Inner, feed: &Feed) -> bool {
        let loss = inner.switch.config().loss_timeout.as_millis() as u64;
        self.hub.idle_ms(feed).is_some_and(|ms| ms < loss)
    }

    /// Starts the slate's pipeline unless it runs, matching the route's video PIDs and size.
    pub(super) fn start_slate(&self, inner: &mut Inner, _now: Instant) {
        if inner
            .slate
            .as_ref()
            .is_some_and(|s| s.status != Status::Stopped)
        {
            return;
        }
        // The layout of what went out last, so receivers keep their streams.
        let feed = inner
            .feed_by_id(self.hub.active())
            .or_else(|| inner.inputs.first().and_then(|s| s.feed.clone()));
        let programs = feed.as_ref().map(|f| f.programs()).unwrap_or_default();
        // The configured size, else the picture of what was on air, else 720p.
        let seen = feed
            .and_then(|f| f.video_size())
            .filter(|&size| limits::slate_size_in_range(size))
            .map(|(w, h)| (w & !1, h & !1));
        let (width, height) = self
            .settings
            .slate_size
            .or(seen)
            .unwrap_or(DEFAULT_SLATE_SIZE);
        let endpoint = Endpoint::Test(TestEndpoint {
            width,
            height,
            fps: 25,
            bitrate_kbps: 1_000,
            pattern: "smpte".into(),
            audio: true,
            silence: true,
            video_pid: programs.video().map(|v| v.pid).filter(|&p| p >= 0x20),
            audio_pid: programs.audio_pid().filter(|&p| p >= 0x20),
            pcr_pid: programs.pcr_pid,
        });
        let mut slot = Slot::new(
            SLATE_ID.into(),
            Role::Input,
            endpoint,
            Some(inner.slate_feed.clone()),
            self.settings.queue_bytes,
        );
        if let Err(e) = self.start_slot(&mut slot) {
            gst::warning!(CAT, "{}: the slate cannot start: {e}", self.name);
            slot.set_error(e.to_string());
        }
        inner.slate = Some(slot);
    }

    /// Starts cold inputs that are needed (nothing of higher priority delivers, or locked) and
    /// stops those no longer needed.
    pub(super) fn manage_cold(&self, inner: &mut Inner, now: Instant) {
        let young = inner.timers.young(now);
        let active = self.hub.active();
        let pending = self.hub.pending();
        for i in 1..inner.inputs.len() {
            if !inner.inputs[i].cold {
                continue;
            }
            let needed = inner.switch.locked() == Some(i)
                || (!young && !(0..i).any(|h| inner.switch.alive(h, now)));
            let slot = &mut inner.inputs[i];
            let on_air = slot
                .feed
                .as_ref()
                .is_some_and(|f| f.id == active || f.id == pending);
            match slot.status {
                Status::Standby | Status::Stopped if needed => {
                    if let Err(e) = self.start_slot(slot) {
                        slot.fail(&self.hub, e.to_string(), now);
                    }
                }
                Status::Starting | Status::Running | Status::Retrying if !needed && !on_air => {
                    slot.stop(&self.hub, Status::Standby);
                    slot.restart_at = None;
                }
                _ => {}
            }
        }
    }

    /// Loss detection, failback and cold standby; runs several times per loss timeout.
    pub(super) fn on_switch_tick(&self, now: Instant) {
        let mut inner = lock(&self.inner);
        if inner.closed {
            return;
        }
        self.feed_switch(&mut inner, now);
        self.notice_inputs(&mut inner, now, None);
        // Inputs that never delivered are waiting, not lost (see `Timers::may_decide`).
        inner.any_data |= inner.inputs.iter().any(|s| s.delivered());
        let first_delivered = inner.inputs.first().is_some_and(|s| s.delivered());
        if inner
            .timers
            .may_decide(now, inner.any_data, first_delivered)
        {
            if let Some(s) = inner.switch.tick(now) {
                self.apply(&mut inner, s, now);
            }
        }
        // An armed cut whose feed never showed a keyframe, or whose on-air feed died meanwhile,
        // happens now. The slate is awaited (its first packet is a keyframe): until it
        // delivers, the lost input stays on air in case it comes back.
        let pending = self.hub.pending();
        if pending != 0 {
            let waited = inner.timers.keyframe_overdue(now);
            let slate = pending == inner.slate_feed.id;
            if waited || (!slate && !self.on_air_plays(&inner)) {
                let feed = inner.feed_by_id(pending);
                self.hub.cut_to(feed.as_deref());
                inner.timers.disarm();
            }
        }
        self.manage_cold(&mut inner, now);
        // The slate stops once something else goes out.
        let slate_id = inner.slate_feed.id;
        if self.hub.active() != slate_id
            && self.hub.pending() != slate_id
            && inner.switch.active() != Source::Slate
        {
            if let Some(mut slate) = inner.slate.take() {
                slate.stop(&self.hub, Status::Stopped);
            }
        }
        self.notice_route(&mut inner, false);
    }
}
