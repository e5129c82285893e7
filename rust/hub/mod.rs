//! The hub: fan-out from the active input to every output of a route.
//!
//! Inputs are separate GStreamer pipelines. A pad probe at the end of each input pipeline hands
//! every buffer to [`Hub::ingest`] on the input's streaming thread; the hub makes sure it is
//! whole MPEG-TS packets, counts it, and — if the input is the active one — offers it to every
//! output: the same buffer (a refcount, no copy) to the `appsrc` of an SRT or file output's
//! pipeline, or one datagram on a UDP output's non-blocking socket. An output whose queue (or
//! send buffer) is full drops the buffer and counts it; nothing an output does can block this
//! thread. docs/architecture.md says why.
//!
//! Switching happens here too. Only the active feed's data goes out; every other feed is read
//! and watched (warm standby) and dropped. A cut to another feed is either immediate (the
//! active one is lost) or armed to happen at that feed's next keyframe (the active one still
//! plays: failback and manual switches), so the outputs never see a gap. Everything that goes
//! out passes the [`Restamper`], which splices the runs into one stream.
//!
//! Instant start lives here too (`gop.rs`): the hub keeps the last GOP of what it fans out, and
//! an output that joins (a new tap, or one `Tap::join` re-arms) is sent that burst right before
//! its first live buffer. See [`Hub::join_burst`] for why nothing is lost or sent twice between
//! the two.
//!
//! Lock order: `splice` → `Feed::state` → `taps` → `gop`. A feed's streaming thread never holds
//! its `state` while it takes `splice`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Instant;

mod gop;

pub use gop::{GopCacheStats, DEFAULT_GOP_CACHE_BYTES};

use crate::sink::srt::SrtOutput;
use crate::sink::udp::UdpSender;
use crate::stats::Counters;
use crate::ts::{
    h264_size_in, pcr_base, pid, starts_keyframe, Aligned, Aligner, Analysis, AnalysisStats, Codec,
    ConditionChange, Cut, Programs, Restamper, Video, PACKETS_PER_BUFFER, PACKET_SIZE, PTS_WRAP,
};

/// The largest buffer handed to outputs: 7 TS packets, one SRT or UDP payload.
const MAX_BUFFER_BYTES: usize = PACKETS_PER_BUFFER * PACKET_SIZE;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "castway-hub",
        gst::DebugColorFlags::empty(),
        Some("castway fan-out hub"),
    )
});

/// Bytes an output may queue before the hub drops for it (about 2 s at 8 Mbit/s).
pub const DEFAULT_TAP_QUEUE_BYTES: u64 = 2 * 1024 * 1024;

/// A time on the hub's 90 kHz clock in milliseconds, never 0 (0 means "never" to the feeds'
/// `last_data_ms`).
fn ms_of_90k(ticks: u64) -> u64 {
    (ticks / 90).max(1)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One output's attachment to the hub.
pub struct Tap {
    pub id: String,
    out: Out,
    pub counters: Arc<Counters>,
    /// Joining: the next buffer offered is preceded by the hub's burst (instant start). Set
    /// when the tap is made, and by `join`.
    joining: AtomicBool,
}

/// Where a tap hands buffers.
enum Out {
    /// The output pipeline's `appsrc`, whose `max-bytes` bounds the output's queue. `full` is
    /// set by its enough-data callback and cleared by need-data: the hub drops while it is
    /// set, without asking the appsrc per buffer.
    Queue {
        appsrc: gst_app::AppSrc,
        full: Arc<AtomicBool>,
    },
    /// A UDP socket, sent on at once (never blocks: a full send buffer is a drop).
    Udp(UdpSender),
    /// A recorder's queue (never blocks: a full queue is a drop, counted by the recorder).
    Record(crate::record::Intake),
    /// An SRT output's connections, sent on at once (never blocks: a full send buffer is a
    /// drop for that connection; the output counts).
    Srt(Arc<SrtOutput>),
}

impl Tap {
    /// Attaches to `appsrc`, whose `max-bytes` bounds the output's queue. Installs the appsrc's
    /// callbacks.
    pub fn new(id: String, appsrc: gst_app::AppSrc, counters: Arc<Counters>) -> Tap {
        let full = Arc::new(AtomicBool::new(false));
        let (on_need, on_enough) = (full.clone(), full.clone());
        appsrc.set_callbacks(
            gst_app::AppSrcCallbacks::builder()
                .need_data(move |_, _| on_need.store(false, Relaxed))
                .enough_data(move |_| on_enough.store(true, Relaxed))
                .build(),
        );
        Tap {
            id,
            out: Out::Queue { appsrc, full },
            counters,
            joining: AtomicBool::new(true),
        }
    }

    /// Attaches a UDP output's socket. It does not join: a burst would be a GOP of datagrams
    /// sent at once on the input's thread, more than a receiver's default socket buffer holds,
    /// lost there where castway cannot count it; a UDP output starts at the live data.
    pub fn udp(id: String, sender: UdpSender, counters: Arc<Counters>) -> Tap {
        Tap {
            id,
            out: Out::Udp(sender),
            counters,
            joining: AtomicBool::new(false),
        }
    }

    /// Attaches a recorder (`record::Recorder::start` made its intake).
    pub fn record(id: String, intake: crate::record::Intake, counters: Arc<Counters>) -> Tap {
        Tap {
            id,
            out: Out::Record(intake),
            counters,
            // A recording starts at the next cut of the live data: a burst of what went out
            // before would be written twice (segments are exact slices of the output).
            joining: AtomicBool::new(false),
        }
    }

    /// Attaches an SRT output.
    pub fn srt(id: String, output: Arc<SrtOutput>, counters: Arc<Counters>) -> Tap {
        Tap {
            id,
            out: Out::Srt(output),
            counters,
            // Each connection gets the burst when it is made (`SrtOutput::welcome`).
            joining: AtomicBool::new(false),
        }
    }

    /// The first send error of a UDP output since the last call.
    pub fn take_error(&self) -> Option<String> {
        match &self.out {
            Out::Udp(s) => s.take_error(),
            Out::Queue { .. } | Out::Record(_) | Out::Srt(_) => None,
        }
    }

    /// The tap without a burst of its own: for a reader that got it through [`Hub::join`].
    pub fn joined(self) -> Tap {
        self.joining.store(false, Relaxed);
        self
    }

    /// No burst for this tap: it starts with the next live buffer (a reader that wants live
    /// data only, such as a frame loop).
    pub fn skip_burst(&self) {
        self.joining.store(false, Relaxed);
    }

    /// Sends the hub's burst before the next live buffer (a reader joined the output anew).
    /// A UDP output never joins (see `Tap::udp`).
    pub fn join(&self) {
        if !matches!(self.out, Out::Udp(_)) {
            self.joining.store(true, Relaxed);
        }
    }

    /// Whether the output takes data now: an output pipeline takes it once it is PAUSED
    /// (before, its appsrc refuses it as flushing); a socket always. Asked only while joining,
    /// so that the burst is not spent on an output still starting.
    fn ready(&self) -> bool {
        match &self.out {
            Out::Queue { appsrc, .. } => {
                use gst::prelude::ElementExtManual;
                appsrc.current_state() >= gst::State::Paused
            }
            Out::Udp(_) | Out::Record(_) | Out::Srt(_) => true,
        }
    }

    /// Sends the burst of a joining tap whole or not at all: a burst cut short (a GOP larger
    /// than the room left in the output's queue) would hand the receiver a keyframe, part of
    /// its GOP and then a gap. Sent, it is counted as sent and in the output's
    /// `burst_packets`; skipped, as dropped, and the output starts at the live data.
    fn offer_burst(&self, burst: &[gst::Buffer]) {
        let bytes: usize = burst.iter().map(|b| b.size()).sum();
        if bytes == 0 {
            return;
        }
        if !self.has_room(bytes) {
            gst::debug!(CAT, "{}: burst of {bytes} bytes skipped, no room", self.id);
            self.counters.drop_bytes(bytes);
            return;
        }
        for b in burst {
            if self.offer(b) {
                self.counters.burst(b.size());
            }
        }
    }

    /// Whether the output's queue has room for `bytes` more now (a socket or recorder: always,
    /// they do not burst from a queue of ours).
    fn has_room(&self, bytes: usize) -> bool {
        match &self.out {
            Out::Queue { full, .. } if full.load(Relaxed) => false,
            Out::Queue { appsrc, .. } => {
                let free = appsrc
                    .max_bytes()
                    .saturating_sub(appsrc.current_level_bytes());
                bytes as u64 <= free
            }
            Out::Udp(_) | Out::Record(_) | Out::Srt(_) => true,
        }
    }

    /// Sends or drops (and counts) one buffer; true if it was sent.
    fn offer(&self, buffer: &gst::Buffer) -> bool {
        let size = buffer.size();
        let sent = match &self.out {
            Out::Queue { full, .. } if full.load(Relaxed) => false,
            // Err: flushing, the output pipeline is (re)starting or stopping.
            Out::Queue { appsrc, .. } => appsrc.push_buffer(buffer.clone()).is_ok(),
            Out::Udp(socket) => buffer.map_readable().is_ok_and(|m| socket.send(&m)),
            Out::Record(intake) => intake.offer(buffer),
            // Counted by the output itself, which knows its connections.
            Out::Srt(output) => match buffer.map_readable() {
                Ok(m) => return output.send(&m, &self.counters),
                Err(_) => false,
            },
        };
        if sent {
            self.counters.add(size);
        } else {
            self.counters.drop_bytes(size);
        }
        sent
    }
}

/// A PCR this far off what the wall clock predicts (90 kHz, 500 ms) starts a new run.
const PCR_JUMP_90K: u64 = 45_000;
/// A PCR older than this (90 kHz, 1 s) no longer tells a feed's clock now.
const PCR_FRESH_90K: u64 = 90_000;
/// For a cut that holds nothing back the clock must be certain: a PCR this recent (90 kHz,
/// 100 ms, the largest PCR interval ISO 13818-1 allows), else the run waits for its first.
const PCR_NOW_90K: u64 = 9_000;
/// Buffers a whole cut may hold while it waits for the run's first PCR (kept, not dropped);
/// past this the run goes on with the clock it has.
const MAX_DEFERRED_BYTES: usize = 256 * 1024;

/// What only the feed's streaming thread changes (and a cut reads).
#[derive(Default)]
struct FeedState {
    aligner: Aligner,
    programs: Programs,
    /// The latest PCR and when it arrived (hub clock, 90 kHz).
    last_pcr: Option<(u64, u64)>,
    /// The picture size the video's last SPS declared (H.264).
    video_size: Option<(u32, u32)>,
    /// TR 101 290 and what the stream carries, as it arrives (before any switch or splice).
    analysis: Analysis,
}

impl FeedState {
    /// Reads PSI and PCRs of whole packets; returns whether the PCR jumped (the source
    /// started over: a restarted encoder).
    fn watch(&mut self, data: &[u8], now: u64) -> bool {
        let mut jumped = false;
        for p in data.chunks_exact(PACKET_SIZE) {
            self.analysis.packet(p, now);
            self.programs.observe(p);
            if self.video_size.is_none() && p[1] & 0x40 != 0 {
                if let Some(v) = self.programs.video().filter(|v| v.codec == Codec::H264) {
                    if pid(p) == usize::from(v.pid) {
                        self.video_size = h264_size_in(p).or(self.video_size);
                    }
                }
            }
            let Some(pcr) = pcr_base(p) else { continue };
            if self
                .programs
                .pcr_pid
                .is_some_and(|x| usize::from(x) != pid(p))
            {
                continue;
            }
            if let Some((prev, at)) = self.last_pcr {
                // A jump is a clock that disagrees with the wall clock *and* with its own last
                // PCR: a stall of castway's own thread (packets that waited, then arrive in a
                // burst) is neither a new run nor a jump of the source.
                let distance = |a: u64, b: u64| {
                    let d = a.wrapping_sub(b) % PTS_WRAP;
                    d.min(PTS_WRAP - d)
                };
                let expected = (prev + now.saturating_sub(at)) % PTS_WRAP;
                let step = pcr.wrapping_sub(prev) % PTS_WRAP;
                jumped |=
                    distance(pcr, expected) > PCR_JUMP_90K && (step == 0 || step > PCR_JUMP_90K);
            }
            self.last_pcr = Some((pcr, now));
        }
        self.analysis.tick(now);
        jumped
    }

    /// The cut for a new run at `now`. A control thread reads `now` before it locks the feed's
    /// state, so the streaming thread may have stored a PCR that arrived later meanwhile: it
    /// counts as arrived at `now`.
    fn cut(&self, now: u64) -> Cut {
        Cut {
            source_pcr: self
                .last_pcr
                .filter(|&(_, at)| now.saturating_sub(at) < PCR_FRESH_90K)
                .map(|(pcr, at)| (pcr + now.saturating_sub(at)) % PTS_WRAP),
            pcr_pid: self.programs.pcr_pid,
            video: self.programs.video(),
            whole: false,
        }
    }

    /// A cut that holds nothing back, for a route's only input. Its clock is known only from a
    /// PCR seen just now; otherwise (a sender back after a pause, a new connection) the run
    /// waits for its first PCR, holding its buffers rather than dropping them.
    fn whole_cut(&self, now: u64) -> Cut {
        Cut {
            source_pcr: self
                .last_pcr
                .filter(|&(_, at)| now.saturating_sub(at) < PCR_NOW_90K)
                .map(|(pcr, at)| (pcr + now.saturating_sub(at)) % PTS_WRAP),
            whole: true,
            ..self.cut(now)
        }
    }

    /// The cut for `feed`'s new run: whole if it is the route's only input.
    fn cut_for(&self, now: u64, whole: bool) -> Cut {
        if whole {
            self.whole_cut(now)
        } else {
            self.cut(now)
        }
    }
}

/// One input's attachment to the hub; owned by the input's pad probe.
pub struct Feed {
    /// Unique within the hub (0 is "no feed").
    pub id: u64,
    pub counters: Arc<Counters>,
    /// Only the input's streaming thread locks it, and a cut.
    state: Mutex<FeedState>,
    /// Why the last rejected buffer was not MPEG-TS; taken by the control thread.
    not_ts: Mutex<Option<String>>,
    has_not_ts: AtomicBool,
    /// The PCR jumped since the last buffer went out: a new run, if the hub splices.
    jumped: AtomicBool,
    /// When data last arrived, in milliseconds since the hub was made.
    last_data_ms: AtomicU64,
    /// Branches that take this input's data as it arrives, on air or not (a decode branch
    /// for a picture of the input); `tapped` says whether there are any, so a feed without
    /// pays one atomic load per buffer. A leaf lock.
    taps: Mutex<Vec<Arc<Tap>>>,
    tapped: AtomicBool,
}

impl Feed {
    /// Takes the reason the input's data was rejected, if any arrived since the last call.
    pub fn take_not_ts(&self) -> Option<String> {
        if !self.has_not_ts.swap(false, Relaxed) {
            return None;
        }
        lock(&self.not_ts).take()
    }

    /// A new connection: forgets any partial packet, lost sync or clock of the last one.
    pub fn reset(&self) {
        let mut s = lock(&self.state);
        s.aligner = Aligner::default();
        s.last_pcr = None;
        s.video_size = None;
        s.analysis.reset();
        self.jumped.store(false, Relaxed);
    }

    /// The TR 101 290 condition changes numbered above `seq` that are still kept (the last
    /// 128), oldest first: what the control thread's tick hands to an event log.
    pub fn condition_changes_after(&self, seq: u64) -> Vec<ConditionChange> {
        lock(&self.state).analysis.changes_after(seq)
    }

    /// The reason the input's data was rejected, if any is pending, without taking it.
    pub fn peek_not_ts(&self) -> Option<String> {
        if !self.has_not_ts.load(Relaxed) {
            return None;
        }
        lock(&self.not_ts).clone()
    }

    /// The program layout last seen on this feed (for a slate that matches it).
    pub fn programs(&self) -> Programs {
        lock(&self.state).programs.clone()
    }

    pub fn video(&self) -> Option<Video> {
        lock(&self.state).programs.video()
    }

    /// The picture size of the feed's video, once an H.264 SPS told it.
    pub fn video_size(&self) -> Option<(u32, u32)> {
        lock(&self.state).video_size
    }
}

/// Counts of what the hub did at cuts.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpliceStats {
    pub cuts: u64,
    /// Packets not sent because their PID had not started cleanly after a cut.
    pub held_back: u64,
    /// Times a PAT or PMT whose content differed from what went out last got a new version
    /// number (so receivers read it).
    pub psi_versions_bumped: u64,
    /// PAT and PMT sections after a cut that span TS packets: passed as they are, their
    /// version not checked.
    pub psi_multi_packet: u64,
}

pub struct Hub {
    epoch: Instant,
    /// The Unix time of `epoch`.
    unix_epoch: f64,
    next_feed: AtomicU64,
    /// The feed whose data goes out (0: none).
    active: AtomicU64,
    /// A feed to cut over to at its next keyframe (0: none).
    pending: AtomicU64,
    /// The pending cut covers a loss (the slate): the feed on air delivering again calls it off.
    cover: AtomicBool,
    /// The route's only input (0: it has several): when it delivers while something else goes
    /// out (the slate), it goes out again from that packet on, nothing held back.
    sole: AtomicU64,
    /// Buffers of the feed on air that a whole cut holds until its run's first PCR, with the
    /// counters to charge if they never go out. Locked only under `splice`.
    deferred: Mutex<Vec<(Arc<Counters>, gst::Buffer)>>,
    taps: Mutex<Vec<Arc<Tap>>>,
    splice: Mutex<Restamper>,
    cuts: AtomicU64,
    /// The last GOP that went out (instant start). Pushed to by the fan-out under `splice`;
    /// a leaf lock.
    gop: Mutex<gop::GopCache>,
}

impl Default for Hub {
    fn default() -> Self {
        let unix_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Hub {
            epoch: Instant::now(),
            unix_epoch,
            next_feed: AtomicU64::new(1),
            active: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            cover: AtomicBool::new(false),
            sole: AtomicU64::new(0),
            deferred: Mutex::new(Vec::new()),
            taps: Mutex::new(Vec::new()),
            splice: Mutex::new(Restamper::default()),
            cuts: AtomicU64::new(0),
            gop: Mutex::new(gop::GopCache::new(0)),
        }
    }
}

impl Hub {
    /// A hub that keeps the last GOP it sent, up to `gop_cache_bytes` (0: instant start off).
    pub fn new(gop_cache_bytes: u64) -> Hub {
        let hub = Hub::default();
        hub.set_gop_cache_bytes(gop_cache_bytes);
        hub
    }

    /// Changes the GOP cache's bound (0: off). What it held is forgotten, its counts stay;
    /// it keeps the next GOP that starts.
    pub fn set_gop_cache_bytes(&self, limit: u64) {
        let _splice = lock(&self.splice);
        lock(&self.gop).set_limit(limit);
    }

    /// What a reader joining the route now is sent before the live data (instant start): the
    /// latest PAT and PMT, then the last GOP that went out, from its keyframe on (`gop.rs`).
    /// Empty when the cache is off or holds no whole GOP start.
    ///
    /// The burst ends with the buffer fanned out last, so it is seamless only if the reader
    /// gets live data from the very next buffer on. Every fan-out runs under `splice`, so:
    /// called on the fan-out path (a tap's send, as [`Tap::join`] does: the hub sends the
    /// burst to a joining tap right before offering it the live buffer) or inside
    /// [`Hub::join`], which holds `splice` while the reader is added to what the fan-out
    /// reaches, no buffer can fall between the burst and the first live buffer, nor be in
    /// both. Takes only the cache's own (leaf) lock, so it may be called from a tap's send.
    pub fn join_burst(&self) -> Vec<gst::Buffer> {
        lock(&self.gop).burst()
    }

    /// Runs `add_reader` with the burst while no buffer is fanned out, for a reader joining
    /// from another thread (an SRT listener's new caller): `add_reader` sends the burst and
    /// puts the reader where the next fan-out reaches it. It runs under `splice`, so it may
    /// take only locks that come after the hub's (an SRT output's callers list), and must not
    /// block.
    pub fn join<R>(&self, add_reader: impl FnOnce(Vec<gst::Buffer>) -> R) -> R {
        let _splice = lock(&self.splice);
        add_reader(self.join_burst())
    }

    pub fn gop_cache_stats(&self) -> GopCacheStats {
        lock(&self.gop).stats()
    }

    pub fn feed(&self) -> Arc<Feed> {
        Arc::new(Feed {
            id: self.next_feed.fetch_add(1, Relaxed),
            counters: Arc::new(Counters::default()),
            state: Mutex::new(FeedState {
                analysis: Analysis::new(self.unix_epoch),
                ..FeedState::default()
            }),
            not_ts: Mutex::new(None),
            has_not_ts: AtomicBool::new(false),
            jumped: AtomicBool::new(false),
            last_data_ms: AtomicU64::new(0),
            taps: Mutex::new(Vec::new()),
            tapped: AtomicBool::new(false),
        })
    }

    /// The id of the feed that goes out (0: none).
    pub fn active(&self) -> u64 {
        self.active.load(Relaxed)
    }

    /// The id of the feed armed to go out at its next keyframe (0: none).
    pub fn pending(&self) -> u64 {
        self.pending.load(Relaxed)
    }

    fn now_ms(&self) -> u64 {
        ms_of_90k(self.now_90k())
    }

    /// The hub's clock in 90 kHz ticks.
    fn now_90k(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64 * 9 / 100
    }

    /// What the analysis of `feed` shows now (its held errors and bitrates brought up to date).
    pub fn analysis(&self, feed: &Feed) -> AnalysisStats {
        let mut state = lock(&feed.state);
        state.analysis.tick(self.now_90k());
        state.analysis.stats()
    }

    /// Brings the analysis of `feed` up to date when no data arrives (the control thread, once
    /// a second): held errors clear, bitrates fall. A silent input starts no condition.
    pub fn analysis_tick(&self, feed: &Feed) {
        lock(&feed.state).analysis.tick(self.now_90k());
    }

    /// Milliseconds since `feed` last delivered valid data (None: never).
    pub fn idle_ms(&self, feed: &Feed) -> Option<u64> {
        match feed.last_data_ms.load(Relaxed) {
            0 => None,
            t => Some(self.now_ms().saturating_sub(t)),
        }
    }

    /// When `feed` last delivered data, as an `Instant` (None: never).
    pub fn last_data(&self, feed: &Feed) -> Option<Instant> {
        match feed.last_data_ms.load(Relaxed) {
            0 => None,
            t => Some(self.epoch + std::time::Duration::from_millis(t)),
        }
    }

    /// From the next buffer on, `feed` goes out (None: nothing does). Its PIDs start cleanly
    /// (video on a keyframe) and its timestamps continue what went out before.
    pub fn cut_to(&self, feed: Option<&Feed>) {
        let mut splice = lock(&self.splice);
        self.pending.store(0, Relaxed);
        self.cover.store(false, Relaxed);
        let Some(feed) = feed else {
            self.active.store(0, Relaxed);
            self.forget_deferred();
            // Nothing goes out: a reader joining later starts with what comes next.
            lock(&self.gop).clear();
            return;
        };
        self.active.store(feed.id, Relaxed);
        if !splice.seen() {
            // Nothing went out yet: nothing to continue, so the first run stays bit-exact.
            return;
        }
        let now = self.now_90k();
        feed.jumped.store(false, Relaxed);
        let cut = lock(&feed.state).cut_for(now, self.is_sole(feed));
        self.begin_run(&mut splice, cut, now);
        gst::debug!(CAT, "cut to feed {}", feed.id);
    }

    fn is_sole(&self, feed: &Feed) -> bool {
        self.sole.load(Relaxed) == feed.id
    }

    /// Starts a new run on the splicer. Buffers a whole cut still held for the last run's
    /// first PCR never go out: they are counted as held back.
    fn begin_run(&self, splice: &mut Restamper, cut: Cut, now: u64) {
        self.forget_deferred();
        splice.restart(cut, now);
        self.cuts.fetch_add(1, Relaxed);
    }

    /// Cuts to `feed` at its next keyframe; until then the active feed goes on. If `feed` is
    /// the one going out already, a cut armed for another feed is called off: the choice that
    /// armed it no longer stands (that feed may be lost by now).
    pub fn cut_at_keyframe(&self, feed: &Feed) {
        self.arm(feed, false);
    }

    /// Cuts to `feed` (the slate) at its next keyframe to cover for the feed on air, which is
    /// lost: if that one delivers again first, the cut is called off and nothing was cut.
    pub fn cover_with(&self, feed: &Feed) {
        self.arm(feed, true);
    }

    fn arm(&self, feed: &Feed, cover: bool) {
        let _splice = lock(&self.splice);
        let to = if self.active.load(Relaxed) == feed.id {
            0
        } else {
            feed.id
        };
        self.pending.store(to, Relaxed);
        self.cover.store(cover && to != 0, Relaxed);
    }

    /// Calls off an armed cut; what goes out stays.
    pub fn disarm(&self) {
        let _splice = lock(&self.splice);
        self.pending.store(0, Relaxed);
        self.cover.store(false, Relaxed);
    }

    /// Counts what a whole cut still holds as held back and forgets it (the route stops).
    pub fn drop_deferred(&self) {
        let _splice = lock(&self.splice);
        self.forget_deferred();
    }

    /// Counts the buffers a whole cut still holds as held back, and forgets them. Called with
    /// `splice` held.
    fn forget_deferred(&self) {
        for (counters, b) in lock(&self.deferred).drain(..) {
            counters.held_back(b.size() / PACKET_SIZE);
        }
    }

    /// Names the route's only input (None: it has several); see `Hub::sole`.
    pub fn set_sole(&self, feed: Option<&Feed>) {
        self.sole.store(feed.map_or(0, |f| f.id), Relaxed);
    }

    /// The active feed starts over (a looped file reopened, a reconnected sender): what follows
    /// is placed after what went out, from its first PCR on. Unless `always`, only once the
    /// hub splices anyway (before its first cut a single input passes bit-exact).
    pub fn restart_run(&self, feed: &Feed, always: bool) {
        let mut splice = lock(&self.splice);
        if self.active.load(Relaxed) != feed.id || !(always || splice.rewrites()) {
            return;
        }
        let now = self.now_90k();
        let cut = Cut {
            source_pcr: None,
            ..lock(&feed.state).cut_for(now, self.is_sole(feed))
        };
        self.begin_run(&mut splice, cut, now);
    }

    /// Cuts made so far (as `splice_stats`, without its lock: cheap enough per buffer).
    pub fn cuts(&self) -> u64 {
        self.cuts.load(Relaxed)
    }

    pub fn splice_stats(&self) -> SpliceStats {
        let splice = lock(&self.splice);
        let (psi_versions_bumped, psi_multi_packet) = splice.psi_versions();
        SpliceStats {
            cuts: self.cuts.load(Relaxed),
            held_back: splice.held_back(),
            psi_versions_bumped,
            psi_multi_packet,
        }
    }

    pub fn attach(&self, tap: Arc<Tap>) {
        gst::debug!(CAT, "attach output {}", tap.id);
        lock(&self.taps).push(tap);
    }

    pub fn detach(&self, id: &str) -> Option<Arc<Tap>> {
        let mut taps = lock(&self.taps);
        let i = taps.iter().position(|t| t.id == id)?;
        gst::debug!(CAT, "detach output {id}");
        Some(taps.remove(i))
    }

    /// Attaches a branch to `feed` alone: it gets the input's whole packets as they arrive,
    /// before the switch and the splicer.
    pub fn attach_to_feed(&self, feed: &Feed, tap: Arc<Tap>) {
        gst::debug!(CAT, "attach {} to feed {}", tap.id, feed.id);
        let mut taps = lock(&feed.taps);
        taps.push(tap);
        feed.tapped.store(true, Relaxed);
    }

    pub fn detach_from_feed(&self, feed: &Feed, id: &str) -> Option<Arc<Tap>> {
        let mut taps = lock(&feed.taps);
        let i = taps.iter().position(|t| t.id == id)?;
        let tap = taps.remove(i);
        feed.tapped.store(!taps.is_empty(), Relaxed);
        Some(tap)
    }

    /// Called on the input's streaming thread for each buffer it produces.
    pub fn ingest(&self, feed: &Feed, buffer: gst::Buffer) {
        let Ok(map) = buffer.map_readable() else {
            feed.counters.drop_bytes(buffer.size());
            return;
        };
        let now = self.now_90k();
        let mut state = lock(&feed.state);
        if state.aligner.passes_through(&map) {
            if state.watch(&map, now) {
                feed.jumped.store(true, Relaxed);
            }
            drop(state);
            drop(map);
            let size = buffer.size();
            if size <= MAX_BUFFER_BYTES {
                self.accept(feed, buffer, now);
                return;
            }
            // Whole packets, but more than one SRT/UDP payload: cut into 1316-byte views of
            // the same memory (no copy).
            for offset in (0..size).step_by(MAX_BUFFER_BYTES) {
                let len = MAX_BUFFER_BYTES.min(size - offset);
                match buffer.copy_region(gst::BufferCopyFlags::MEMORY, offset..offset + len) {
                    Ok(part) => self.accept(feed, part, now),
                    Err(_) => feed.counters.drop_bytes(len),
                }
            }
            return;
        }
        // Realigned runs, and what happened to sync, in stream order.
        enum Piece {
            Run(Vec<u8>),
            SyncByteError,
            SyncLost,
        }
        let mut pieces = Vec::new();
        let garbage = state.aligner.push(&map, |piece| {
            pieces.push(match piece {
                Aligned::Packets(run) => Piece::Run(run.to_vec()),
                Aligned::SyncByteError => Piece::SyncByteError,
                Aligned::SyncLost => Piece::SyncLost,
            })
        });
        let mut aligned = Vec::new();
        for piece in pieces {
            match piece {
                Piece::Run(run) => {
                    if state.watch(&run, now) {
                        feed.jumped.store(true, Relaxed);
                    }
                    aligned.push(run);
                }
                Piece::SyncByteError => state.analysis.sync_byte_error(now),
                Piece::SyncLost => state.analysis.sync_lost(now),
            }
        }
        state.analysis.tick(now);
        drop(state);
        if garbage > 0 {
            feed.counters.drop_bytes(garbage);
            if !feed.has_not_ts.load(Relaxed) {
                *lock(&feed.not_ts) =
                    Some(format!("input is not MPEG-TS: dropped {garbage} bytes without TS sync (0x47 every 188 bytes)"));
                feed.has_not_ts.store(true, Relaxed);
            }
        }
        drop(map);
        for run in aligned {
            self.accept(feed, gst::Buffer::from_mut_slice(run), now);
        }
    }

    /// Counts a whole-packet buffer and, if its feed goes out, splices it and offers it to
    /// every output. `now`: when `ingest` took it, on the hub's 90 kHz clock (read once per
    /// buffer: at a few hundred buffers a second per input the clock reads showed in profiles).
    fn accept(&self, feed: &Feed, buffer: gst::Buffer, now: u64) {
        feed.counters.add(buffer.size());
        if feed.tapped.load(Relaxed) {
            for tap in lock(&feed.taps).iter() {
                tap.offer(&buffer);
            }
        }
        feed.last_data_ms.store(ms_of_90k(now), Relaxed);
        let id = feed.id;
        if id != self.active.load(Relaxed)
            && id != self.pending.load(Relaxed)
            && id != self.sole.load(Relaxed)
        {
            feed.counters.off_air(buffer.size());
            return;
        }
        let mut splice = lock(&self.splice);
        if id == self.active.load(Relaxed) {
            if self.cover.swap(false, Relaxed) {
                // The feed on air is back before the cover went out: no cut at all.
                self.pending.store(0, Relaxed);
                gst::debug!(CAT, "feed {id} back before its cover: cut called off");
            }
        } else if id == self.sole.load(Relaxed) {
            // The route's only input is back while the slate goes out: every byte it delivers
            // goes out, from this packet on.
            self.pending.store(0, Relaxed);
            self.cover.store(false, Relaxed);
            self.active.store(id, Relaxed);
            feed.jumped.store(false, Relaxed);
            if splice.seen() {
                let cut = lock(&feed.state).whole_cut(now);
                self.begin_run(&mut splice, cut, now);
            }
            gst::debug!(CAT, "sole input {id} back: cut to it whole");
        } else if id == self.pending.load(Relaxed) && self.keyframe_in(feed, &buffer) {
            self.pending.store(0, Relaxed);
            self.cover.store(false, Relaxed);
            self.active.store(id, Relaxed);
            feed.jumped.store(false, Relaxed);
            let cut = lock(&feed.state).cut(now);
            self.begin_run(&mut splice, cut, now);
            gst::debug!(CAT, "cut to feed {id} at a keyframe");
        }
        if id != self.active.load(Relaxed) {
            feed.counters.off_air(buffer.size());
            return;
        }
        // Once splicing, a source starting over under us is spliced on too. Before the first
        // cut the stream passes as it comes, discontinuities and all (bit-exact).
        // (A run still waiting for its first PCR has no clock to jump from.)
        let unsettled = splice.awaiting_pcr() && splice.whole();
        if feed.jumped.swap(false, Relaxed) && splice.rewrites() && !unsettled {
            gst::debug!(CAT, "feed {id}: clock jumped, new run");
            let cut = lock(&feed.state).cut_for(now, self.is_sole(feed));
            self.begin_run(&mut splice, cut, now);
        }
        if !splice.rewrites() {
            if let Ok(map) = buffer.map_readable() {
                splice.observe(&map, now);
            }
            self.offer(&buffer);
            return;
        }
        if splice.awaiting_pcr() && splice.whole() {
            // A whole cut whose clock is not known yet: hold the buffers (not drop them) until
            // the run's first PCR places it, then send them all.
            let settled = buffer.map_readable().is_ok_and(|m| splice.settle(&m, now));
            let mut deferred = lock(&self.deferred);
            if !settled {
                let held: usize = deferred.iter().map(|(_, b)| b.size()).sum();
                if held + buffer.size() <= MAX_DEFERRED_BYTES {
                    deferred.push((feed.counters.clone(), buffer));
                    return;
                }
                gst::debug!(CAT, "feed {id}: no PCR in {held} bytes; going on");
                splice.stop_awaiting();
            }
            let waiting = std::mem::take(&mut *deferred);
            drop(deferred);
            for (_, b) in waiting {
                self.rewrite_and_offer(&mut splice, feed, b, now);
            }
        }
        self.rewrite_and_offer(&mut splice, feed, buffer, now);
    }

    /// Splices a buffer of the feed on air and offers what passes to every output.
    fn rewrite_and_offer(
        &self,
        splice: &mut Restamper,
        feed: &Feed,
        mut buffer: gst::Buffer,
        now: u64,
    ) {
        let size = buffer.size();
        let kept = match buffer.make_mut().map_writable() {
            Ok(mut map) => splice.rewrite(&mut map, now),
            Err(_) => 0,
        };
        feed.counters.held_back((size - kept) / PACKET_SIZE);
        if kept == 0 {
            return;
        }
        buffer.make_mut().set_size(kept);
        self.offer(&buffer);
    }

    /// Offers a buffer to every output; one that joins gets the burst first. Called with
    /// `splice` held (what makes a join seamless: see `join_burst`).
    fn offer(&self, buffer: &gst::Buffer) {
        for tap in lock(&self.taps).iter() {
            if tap.joining.load(Relaxed) {
                if !tap.ready() {
                    // Still starting: nothing may reach it before its burst (an appsrc takes
                    // data a moment before its state says PAUSED). Counted as its drop.
                    tap.counters.drop_bytes(buffer.size());
                    continue;
                }
                if tap.joining.swap(false, Relaxed) {
                    tap.offer_burst(&self.join_burst());
                }
            }
            tap.offer(buffer);
        }
        lock(&self.gop).push(buffer);
    }

    /// Whether a video keyframe starts in this buffer of `feed` (any random access point when
    /// the feed's video is not known yet).
    fn keyframe_in(&self, feed: &Feed, buffer: &gst::Buffer) -> bool {
        let video = feed.video();
        let Ok(map) = buffer.map_readable() else {
            return false;
        };
        map.chunks_exact(PACKET_SIZE).any(|p| match video {
            Some(v) => pid(p) == usize::from(v.pid) && starts_keyframe(p, v.codec),
            None => starts_keyframe(p, Codec::Other),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ts::tests::packet;

    /// A buffer of one video packet on PID 0x100: a keyframe (random access) or not.
    fn video(cc: u8, pcr: u64, key: bool) -> gst::Buffer {
        let mut p = packet(0x100, cc, Some(pcr), Some(pcr + 9_000));
        if key {
            p[5] |= 0x40;
        }
        gst::Buffer::from_mut_slice(p.to_vec())
    }

    fn hub_with_two_feeds() -> (Hub, Arc<Feed>, Arc<Feed>) {
        gst::init().unwrap();
        let hub = Hub::default();
        let (main, backup) = (hub.feed(), hub.feed());
        (hub, main, backup)
    }

    #[test]
    fn a_cut_armed_for_a_feed_is_called_off_when_the_choice_returns_to_the_feed_on_air() {
        let (hub, main, backup) = hub_with_two_feeds();
        hub.cut_to(Some(&backup));
        hub.ingest(&backup, video(0, 1_000, true));
        // Failback: main is to go out at its next keyframe ...
        hub.cut_at_keyframe(&main);
        assert_eq!(hub.pending(), main.id);
        // ... but main is lost before one comes, and the choice is backup again.
        hub.cut_at_keyframe(&backup);
        assert_eq!(hub.pending(), 0);
        // Main returns with a keyframe: it must not go out behind the switch's back.
        hub.ingest(&main, video(0, 50_000, true));
        assert_eq!(hub.active(), backup.id);
        assert_eq!(main.counters.snapshot().off_air, 1);
    }

    #[test]
    fn an_armed_cut_happens_at_the_keyframe_and_counts_what_waited() {
        let (hub, main, backup) = hub_with_two_feeds();
        hub.cut_to(Some(&backup));
        hub.ingest(&backup, video(0, 1_000, true));
        hub.cut_at_keyframe(&main);
        hub.ingest(&main, video(0, 50_000, false));
        assert_eq!(hub.active(), backup.id);
        hub.ingest(&main, video(1, 53_600, true));
        assert_eq!(hub.active(), main.id);
        assert_eq!(hub.pending(), 0);
        let m = main.counters.snapshot();
        assert_eq!((m.packets, m.off_air, m.held_back), (2, 1, 0));
        // The backup goes on arriving, off air now.
        hub.ingest(&backup, video(1, 4_600, false));
        assert_eq!(backup.counters.snapshot().off_air, 1);
    }

    #[test]
    fn disarm_keeps_what_goes_out() {
        let (hub, main, backup) = hub_with_two_feeds();
        hub.cut_to(Some(&main));
        hub.cut_at_keyframe(&backup);
        hub.disarm();
        hub.ingest(&backup, video(0, 1_000, true));
        assert_eq!(hub.active(), main.id);
    }

    #[test]
    fn a_cover_is_called_off_when_the_feed_on_air_delivers_first() {
        let (hub, input, slate) = hub_with_two_feeds();
        hub.cut_to(Some(&input));
        hub.ingest(&input, video(0, 1_000, true));
        // The input stalls; the slate is to cover it at its first keyframe ...
        hub.cover_with(&slate);
        // ... but the input's data comes first: nothing is cut.
        hub.ingest(&input, video(1, 4_600, false));
        assert_eq!(hub.pending(), 0);
        hub.ingest(&slate, video(0, 90_000, true));
        assert_eq!(hub.active(), input.id);
        assert_eq!(hub.splice_stats().cuts, 0);
        let i = input.counters.snapshot();
        assert_eq!((i.off_air, i.held_back), (0, 0));
    }

    #[test]
    fn a_sole_input_goes_out_again_from_its_first_packet_back() {
        let (hub, input, slate) = hub_with_two_feeds();
        hub.set_sole(Some(&input));
        hub.cut_to(Some(&input));
        hub.ingest(&input, video(0, 1_000, true));
        hub.cover_with(&slate);
        hub.ingest(&slate, video(0, 90_000, true));
        assert_eq!(hub.active(), slate.id);
        // Back mid-GOP: no keyframe, yet it goes out at once and nothing is held back.
        hub.ingest(&input, video(1, 40_000, false));
        hub.ingest(&input, video(2, 43_600, false));
        assert_eq!(hub.active(), input.id);
        let i = input.counters.snapshot();
        assert_eq!((i.packets, i.off_air, i.held_back), (3, 0, 0));
        assert_eq!(hub.splice_stats().held_back, 0);
    }

    /// `n` whole packets of PID 0x100 counting on from `cc`, as one buffer.
    fn run_of(cc: &mut u8, n: usize) -> gst::Buffer {
        let data: Vec<u8> = (0..n)
            .flat_map(|_| {
                *cc = (*cc + 1) & 0x0f;
                packet(0x100, *cc, None, None)
            })
            .collect();
        gst::Buffer::from_mut_slice(data)
    }

    #[test]
    fn a_pcr_stored_after_the_cut_read_the_clock_counts_as_arrived_then() {
        // `cut_to` reads the clock, then locks the feed's state: meanwhile the streaming thread
        // stored a PCR that arrived 10 ticks later.
        let state = FeedState {
            last_pcr: Some((5_000, 1_010)),
            ..FeedState::default()
        };
        assert_eq!(state.cut(1_000).source_pcr, Some(5_000));
        assert_eq!(state.whole_cut(1_000).source_pcr, Some(5_000));
    }

    #[test]
    fn garbage_on_an_input_is_a_loss_of_sync_and_two_sync_byte_errors_each_time() {
        let (hub, input, _) = hub_with_two_feeds();
        hub.cut_to(Some(&input));
        let mut cc = 0;
        let junk: Vec<u8> = (0..700u32).map(|i| (i * 7 + 3) as u8 & 0x3f).collect();
        hub.ingest(&input, run_of(&mut cc, 7));
        for _ in 0..3 {
            hub.ingest(&input, gst::Buffer::from_mut_slice(junk.clone()));
            hub.ingest(&input, run_of(&mut cc, 7));
            hub.ingest(&input, run_of(&mut cc, 7));
        }
        let a = hub.analysis(&input);
        assert!(a.sync);
        assert_eq!(
            (a.errors.ts_sync_loss, a.errors.sync_byte_error),
            (3, 6),
            "{:?}",
            a.history
        );
        assert_eq!(a.errors.continuity_count_error, 0);
        assert_eq!(input.counters.snapshot().drops, 4 * 3);
    }

    #[test]
    fn switches_between_inputs_cause_no_error_in_either_inputs_analysis() {
        let (hub, main, backup) = hub_with_two_feeds();
        let rx = udp_output(&hub);
        let (mut cc_main, mut cc_backup) = (0, 9);
        hub.cut_to(Some(&main));
        for i in 0..20 {
            // Each input's own stream runs on; the outputs get one, then the other.
            match i % 4 {
                0 => hub.cut_to(Some(&backup)),
                2 => hub.cut_to(Some(&main)),
                _ => {}
            }
            hub.ingest(&main, run_of(&mut cc_main, 7));
            hub.ingest(&backup, run_of(&mut cc_backup, 7));
        }
        assert!(!received(&rx).is_empty());
        for feed in [&main, &backup] {
            let a = hub.analysis(feed);
            assert_eq!(a.errors, crate::ts::ErrorCounts::default(), "{a:?}");
            assert_eq!(a.pids[0].packets, 20 * 7);
        }
    }

    #[test]
    fn a_cut_to_another_layout_gives_its_pat_and_pmt_new_versions_on_the_outputs() {
        use crate::ts::tests::tables::{packet as psi, pat, pmt, section_of};
        let (hub, ffmpeg, gst) = hub_with_two_feeds();
        let rx = udp_output(&hub);
        // Returns the buffer handed in, as another holder of it (a branch of the input) sees it.
        let tables = |feed: &Feed, pmt_pid: u16, video: u16| {
            let data = [psi(0, &pat(0, pmt_pid)), psi(pmt_pid, &pmt(0, video))].concat();
            let buffer = gst::Buffer::from_mut_slice(data);
            hub.ingest(feed, buffer.clone());
            buffer
        };
        hub.cut_to(Some(&ffmpeg));
        tables(&ffmpeg, 0x1000, 0x100);
        hub.ingest(&ffmpeg, video(0, 1_000, true));
        hub.cut_to(Some(&gst));
        hub.ingest(&gst, video(0, 90_000, true));
        let shared = tables(&gst, 0x20, 0x100);
        let out = received(&rx);
        let sections: Vec<&[u8]> = (out.iter().flat_map(|d| d.chunks(PACKET_SIZE)))
            .filter(|p| pid(p) != 0x100)
            .map(section_of)
            .collect();
        assert_eq!(sections.len(), 4, "ffmpeg's PAT and PMT, then gst's");
        assert_eq!(
            sections[..2],
            [pat(0, 0x1000), pmt(0, 0x100)],
            "before the cut: as is"
        );
        assert_eq!(sections[2..], [pat(1, 0x20), pmt(1, 0x100)]);
        // What went out is a copy: the input's buffer, shared, still says version 0.
        let kept = shared.map_readable().unwrap();
        assert_eq!(section_of(&kept[..PACKET_SIZE]), pat(0, 0x20));
        assert_eq!(hub.splice_stats().psi_versions_bumped, 2);
    }

    /// A UDP output on loopback and the socket that receives it.
    fn udp_output(hub: &Hub) -> std::net::UdpSocket {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let ep = crate::uri::UdpEndpoint {
            host: "127.0.0.1".into(),
            port: rx.local_addr().unwrap().port(),
            iface: None,
            ttl: None,
            buffer_size: 0,
        };
        let sender = UdpSender::open(&ep).unwrap();
        hub.attach(Arc::new(Tap::udp("out".into(), sender, Arc::default())));
        rx
    }

    fn received(rx: &std::net::UdpSocket) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok(n) = rx.recv(&mut buf) {
            out.push(buf[..n].to_vec());
        }
        out
    }

    #[test]
    fn an_output_joining_mid_gop_gets_the_gop_then_every_live_buffer_once() {
        use crate::ts::tests::{pat, pmt};
        gst::init().unwrap();
        let hub = Hub::new(64 * 1024);
        let input = hub.feed();
        hub.cut_to(Some(&input));
        let psi = [pat(1, 0x1000), pmt(0x1000, 0x100, &[(0x100, 0x1b)])].concat();
        hub.ingest(&input, gst::Buffer::from_mut_slice(psi));
        hub.ingest(&input, video(0, 1_000, true));
        hub.ingest(&input, video(1, 4_600, false));
        // Joins mid-GOP: attached while data flows.
        let (pipeline, sink, tap) = appsink_output(&hub);
        // A UDP output joining does not get the burst: it starts with the live buffer.
        let rx = udp_output(&hub);
        hub.ingest(&input, video(2, 8_200, false));
        let got: Vec<Vec<u8>> = (0..4).map(|_| pulled(&sink)).collect();
        // PAT and PMT, the keyframe and the frame after it, then the live buffer.
        assert_eq!(got[0].len(), 2 * PACKET_SIZE);
        let ccs: Vec<u8> = got[1..].iter().map(|d| d[3] & 0x0f).collect();
        assert_eq!(ccs, [0, 1, 2]);
        let c = tap.counters.snapshot();
        assert_eq!((c.packets, c.burst, c.drops), (5, 4, 0));
        assert_eq!(hub.gop_cache_stats().bursts, 1);
        let udp: Vec<u8> = received(&rx).iter().map(|d| d[3] & 0x0f).collect();
        assert_eq!(udp, [2]);
        {
            use gst::prelude::ElementExt;
            let _ = pipeline.set_state(gst::State::Null);
        }
        // Off: an output joining starts with the live data.
        hub.set_gop_cache_bytes(0);
        let late = udp_output(&hub);
        hub.ingest(&input, video(3, 11_800, true));
        hub.ingest(&input, video(4, 15_400, false));
        assert_eq!(received(&late).len(), 2);
    }

    /// A queue output into an appsink, PLAYING (its appsrc takes data at once).
    fn appsink_output(hub: &Hub) -> (gst::Pipeline, gst_app::AppSink, Arc<Tap>) {
        use gst::prelude::*;
        let pipeline = gst::parse::launch("appsrc name=src ! appsink name=sink sync=false")
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap();
        let appsrc = (pipeline.by_name("src").unwrap())
            .downcast::<gst_app::AppSrc>()
            .unwrap();
        let sink = (pipeline.by_name("sink").unwrap())
            .downcast::<gst_app::AppSink>()
            .unwrap();
        let tap = Arc::new(Tap::new("out".into(), appsrc, Arc::default()));
        hub.attach(tap.clone());
        pipeline.set_state(gst::State::Playing).unwrap();
        (pipeline, sink, tap)
    }

    /// The next buffer an appsink got (waits at most 5 s).
    fn pulled(sink: &gst_app::AppSink) -> Vec<u8> {
        let sample =
            (sink.try_pull_sample(gst::ClockTime::from_seconds(5))).expect("a buffer within 5 s");
        let data = sample.buffer().unwrap().map_readable().unwrap().to_vec();
        data
    }

    /// A queue output whose appsrc holds at most `max_bytes`, in a pipeline PAUSED (its sink
    /// prerolls on the first buffer and takes no more, so what is pushed stays queued).
    fn queue_output(hub: &Hub, max_bytes: u64) -> (gst::Pipeline, Arc<Tap>) {
        use gst::prelude::*;
        let pipeline = gst::parse::launch("appsrc name=src ! fakesink sync=false")
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap();
        let appsrc = (pipeline.by_name("src").unwrap())
            .downcast::<gst_app::AppSrc>()
            .unwrap();
        appsrc.set_max_bytes(max_bytes);
        let tap = Arc::new(Tap::new("out".into(), appsrc, Arc::default()));
        hub.attach(tap.clone());
        let _ = pipeline.set_state(gst::State::Paused);
        (pipeline, tap)
    }

    #[test]
    fn a_burst_larger_than_the_room_in_an_outputs_queue_is_skipped_whole_and_counted() {
        use crate::ts::tests::{pat, pmt};
        gst::init().unwrap();
        let hub = Hub::new(64 * 1024);
        let input = hub.feed();
        hub.cut_to(Some(&input));
        let psi = [pat(1, 0x1000), pmt(0x1000, 0x100, &[(0x100, 0x1b)])].concat();
        hub.ingest(&input, gst::Buffer::from_mut_slice(psi));
        hub.ingest(&input, video(0, 1_000, true));
        for cc in 1..10u8 {
            hub.ingest(&input, video(cc, 1_000 + u64::from(cc) * 3_600, false));
        }
        // The burst: PAT and PMT, then 10 video packets (12 packets, 2,256 bytes).
        let (small, tight) = queue_output(&hub, 1_000);
        let (big, roomy) = queue_output(&hub, 64 * 1024);
        hub.ingest(&input, video(10, 40_000, false));
        let c = tight.counters.snapshot();
        assert_eq!((c.burst, c.drops, c.packets), (0, 12, 1), "{c:?}");
        let c = roomy.counters.snapshot();
        assert_eq!((c.burst, c.drops, c.packets), (12, 0, 13), "{c:?}");
        use gst::prelude::ElementExt;
        for p in [small, big] {
            let _ = p.set_state(gst::State::Null);
        }
    }

    /// Feeds single video packets (PAT and PMT first, a keyframe every 25) to the hub on
    /// another thread, one every 100 µs, counting them in `fed`, until 30 after `stop` is set
    /// (at most 10,000).
    fn feed_on_a_thread(
        hub: &Arc<Hub>,
        fed: &Arc<AtomicU64>,
        stop: &Arc<AtomicBool>,
    ) -> std::thread::JoinHandle<()> {
        use crate::ts::tests::{pat, pmt};
        let input = hub.feed();
        hub.cut_to(Some(&input));
        let psi = [pat(1, 0x1000), pmt(0x1000, 0x100, &[(0x100, 0x1b)])].concat();
        hub.ingest(&input, gst::Buffer::from_mut_slice(psi));
        let (hub, fed, stop) = (hub.clone(), fed.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut left = 30;
            for i in 0..10_000u64 {
                hub.ingest(
                    &input,
                    video(i as u8 & 0x0f, 1_000 + i * 3_600, i % 25 == 0),
                );
                fed.fetch_add(1, Relaxed);
                std::thread::sleep(std::time::Duration::from_micros(100));
                if stop.load(Relaxed) {
                    left -= 1;
                    if left == 0 {
                        return;
                    }
                }
            }
        })
    }

    /// The video packets' counters after the PAT and PMT copies: consecutive from the first.
    fn assert_continuous(got: &[Vec<u8>]) {
        assert_eq!(got[0].len(), 2 * PACKET_SIZE, "PAT and PMT first");
        assert!(got[1][5] & 0x40 != 0, "then a keyframe");
        for w in got[1..].windows(2) {
            assert_eq!(w[1][3] & 0x0f, (w[0][3] + 1) & 0x0f, "a gap or a repeat");
        }
    }

    #[test]
    fn a_reader_joining_while_the_input_runs_gets_the_burst_then_every_live_packet_once() {
        gst::init().unwrap();
        let hub = Arc::new(Hub::new(1 << 20));
        let fed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let feeder = feed_on_a_thread(&hub, &fed, &stop);
        while fed.load(Relaxed) < 60 {
            std::thread::yield_now();
        }
        // A tap (an output that starts) ...
        let (pipeline, sink, tap) = appsink_output(&hub);
        // ... and a reader joining through `Hub::join` from this thread.
        let rx2 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx2.set_nonblocking(true).unwrap();
        let ep = crate::uri::UdpEndpoint {
            host: "127.0.0.1".into(),
            port: rx2.local_addr().unwrap().port(),
            iface: None,
            ttl: None,
            buffer_size: 0,
        };
        let sender = UdpSender::open(&ep).unwrap();
        hub.join(|burst| {
            for b in &burst {
                assert!(sender.send(&b.map_readable().unwrap()));
            }
            let tap = Tap::udp(
                "reader".into(),
                UdpSender::open(&ep).unwrap(),
                Arc::default(),
            );
            hub.attach(Arc::new(tap.joined()));
        });
        stop.store(true, Relaxed);
        feeder.join().unwrap();
        let last_cc = (fed.load(Relaxed) - 1) as u8 & 0x0f;
        let Out::Queue { appsrc, .. } = &tap.out else {
            unreachable!()
        };
        let _ = appsrc.end_of_stream();
        let mut tapped = Vec::new();
        // Until the end of stream (None), at most a buffer per packet fed.
        while let Some(sample) = (tapped.len() < 10_100)
            .then(|| sink.try_pull_sample(gst::ClockTime::from_seconds(5)))
            .flatten()
        {
            tapped.push(sample.buffer().unwrap().map_readable().unwrap().to_vec());
        }
        {
            use gst::prelude::ElementExt;
            let _ = pipeline.set_state(gst::State::Null);
        }
        for got in [tapped, received(&rx2)] {
            assert_continuous(&got);
            // Every packet from the keyframe before the join to the last one fed.
            assert_eq!(got[got.len() - 1][3] & 0x0f, last_cc);
        }
    }

    #[test]
    fn a_sole_input_back_after_a_pause_waits_for_its_first_pcr_but_loses_nothing() {
        let (hub, input, slate) = hub_with_two_feeds();
        let rx = udp_output(&hub);
        hub.set_sole(Some(&input));
        hub.cut_to(Some(&input));
        hub.ingest(&input, video(0, 1_000, true));
        hub.cover_with(&slate);
        hub.ingest(&slate, video(0, 90_000, true));
        let before = received(&rx);
        assert_eq!(before.len(), 2);
        let slate_pcr = pcr_base(&before[1]).unwrap();
        // The sender paused (its clock ran on); its last PCR is stale by then.
        std::thread::sleep(std::time::Duration::from_millis(150));
        let mut cont = crate::ts::tests::packet(0x100, 1, None, None);
        cont[1] &= !0x40;
        hub.ingest(&input, gst::Buffer::from_mut_slice(cont.to_vec()));
        assert!(
            received(&rx).is_empty(),
            "held until the run's clock is known"
        );
        hub.ingest(&input, video(2, 1_000 + 13_500, false));
        let back = received(&rx);
        assert_eq!(back.len(), 2, "both buffers go out, in order");
        assert_eq!(pcr_base(&back[0]), None);
        let pcr = pcr_base(&back[1]).unwrap();
        // Placed after the slate's last PCR (by the wall time that passed), never before it.
        let step = (pcr + PTS_WRAP - slate_pcr) % PTS_WRAP;
        assert!(step > 0 && step < PCR_JUMP_90K, "{step}");
        let i = input.counters.snapshot();
        assert_eq!((i.packets, i.off_air, i.held_back), (3, 0, 0));
    }
}
