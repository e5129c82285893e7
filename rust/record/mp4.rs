//! The `mp4` recording format: fragmented MP4 remuxed at the tap, for editors and browsers.
//!
//! The writer thread pushes the queue's TS buffers into a pipeline of its own,
//! `appsrc ! tsdemux ! h264parse/aacparse ! splitmuxsink (mp4mux, 1 s fragments)`;
//! a new file starts at the first video keyframe at or after the target duration from the
//! file's first (asked of `splitmuxsink` by the video's keyframe probe). Each file
//! is written as `NAME.mp4.part` (the `format-location-full` signal names it) and renamed when
//! `splitmuxsink` reports it closed. The fragments (a `moof` and an `mdat` each second) make a
//! file cut short by a crash readable up to its last whole fragment (the server's repair cuts
//! it there). The appsrc blocks when its 8 MiB are full: then the writer thread waits, its own
//! queue fills and the tap drops (counted), as with `ts`; the route never waits.
//!
//! Unlike `ts` segments, MP4 files are not slices of the output: they are remuxed. Their
//! record's keyframe times are the running times of the video keyframes the muxer was given
//! (a probe after the parser), from the file's start; `psi` is meaningless (true).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;

use super::writer::{place, Place, FLOOR_EVERY, PAUSE_WAIT};
use super::{lock, path, unix_now, Item, RecordSettings, Shared, CAT};
use crate::elements::make;
use crate::error::{Error, Result};
use crate::events::{Event, EventLog, Kind};
use crate::ts::{Programs, PACKET_SIZE};

const POLL: Duration = Duration::from_millis(100);
/// The appsrc's own bound; past it the writer thread waits.
const APPSRC_BYTES: u64 = 8 * 1024 * 1024;
/// How long a pause or a stop waits for the last file to be finished.
const FINISH_WAIT: Duration = Duration::from_secs(5);
/// The muxer giving nothing out for this long while the stream arrives is a stall (it holds a
/// GOP before a fragment: a source whose GOP is longer is taken for one).
const STALL: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Keyframe running times held for files not closed yet (an hour of 1 s GOPs).
const MAX_KEYFRAMES: usize = 3600;
/// How far (seconds) a keyframe's arrival may be from the wall time its running time gives
/// from the last anchor before it is the new anchor (`link_stream`).
const ANCHOR_SLACK: f64 = 0.5;

/// Video keyframes on their way to the muxer: each one's running time (ns) and the wall time
/// (Unix seconds) it passed, in order.
type Keys = Arc<Mutex<Vec<(u64, f64)>>>;

/// The wall time (Unix seconds) of the keyframe at running time `running` (the first of a
/// file: where `splitmuxsink` opened or closed one), if it was seen (within 10 ms).
fn wall_at(keys: &Keys, running: u64) -> Option<f64> {
    lock(keys)
        .iter()
        .filter(|&&(k, _)| k.abs_diff(running) < 10_000_000)
        .min_by_key(|&&(k, _)| k.abs_diff(running))
        .map(|&(_, unix)| unix)
}

/// The file being written, as `format-location-full` named it.
#[derive(Default)]
struct Naming {
    /// The file last named: where it goes, and the `.part` file created for it (held open
    /// until it is closed: the muxer's sink writes to it through `/proc/self/fd`).
    named: Option<(Place, File)>,
}

struct Running {
    pipeline: gst::Pipeline,
    appsrc: gst_app::AppSrc,
    naming: Arc<Mutex<Naming>>,
    /// Streams of the input the branch could not record (said once each, as errors).
    left_out: Arc<Mutex<Vec<String>>>,
    /// Buffers the muxer has given out, and the count last seen with the time it changed.
    muxed: Arc<AtomicU64>,
    /// Running times (ns) of the video keyframes given to the muxer, not yet in a closed file,
    /// each with the wall time (Unix seconds) it reached the muxer.
    keyframes: Keys,
    seen_muxed: u64,
    progress_at: Instant,
    /// Bytes pushed into the appsrc since the muxer last gave something out.
    pushed_since: u64,
}

/// Where the branch's audio may begin: at its first video keyframe. Until that keyframe
/// reaches the muxer, each audio queue's output is blocked (its queue holds the audio); then
/// the audio before it is dropped (counted in `audio_dropped`), so that both tracks of the
/// first file start together. Without video (the demuxer added its pads, none of them video)
/// the audio is let go at once.
#[derive(Default)]
struct Gate {
    /// The running time (ns) of the first video keyframe given to the muxer.
    key: Option<u64>,
    video: bool,
    no_more_pads: bool,
    /// The audio queues' blocking probes, removed once the audio may go.
    blocked: Vec<(gst::Pad, gst::PadProbeId)>,
}

impl Gate {
    fn open(&mut self) {
        for (pad, id) in self.blocked.drain(..) {
            pad.remove_probe(id);
        }
    }

    fn is_open(&self) -> bool {
        self.key.is_some() || (self.no_more_pads && !self.video)
    }
}

/// The program of the stream within one hub run, as its PAT and PMT describe it. A run may
/// change its program without a cut by the hub: an encoder restarted behind a UDP input, a TS
/// file of two encodes. A running demuxer then adds pads for the new streams, which the
/// muxer cannot take (a second `video` pad): the branch failed. So a change ends the file
/// there, as a cut does, and the new program goes into a branch and file of its own.
#[derive(Default)]
struct Program {
    tables: Programs,
    /// The last PAT packet: put in front of a PMT that changed on the same PID, so that the
    /// next branch's demuxer finds it at once.
    pat: Option<[u8; PACKET_SIZE]>,
}

impl Program {
    /// Where in `data` the program changes: the offset of the first packet of a PAT or PMT
    /// of other content than the program read before (its version is not looked at: two
    /// encoders number their tables alike). None when it does not, or no program was read
    /// whole before it (the run's first PAT and PMT).
    fn change_in(&mut self, data: &[u8]) -> Option<usize> {
        data.chunks_exact(PACKET_SIZE)
            .position(|p| {
                if p[0] != 0x47 {
                    return false;
                }
                let known = !self.tables.streams.is_empty();
                let changed = self.tables.observe(p);
                if crate::ts::pid(p) == 0 && p[1] & 0x40 != 0 {
                    self.pat = p.try_into().ok();
                }
                known && changed
            })
            .map(|i| i * PACKET_SIZE)
    }
}

/// A file splitmuxsink opened and has not closed yet.
struct OpenFile {
    rel: PathBuf,
    place: Place,
    file: File,
    start_unix: f64,
    start_running: u64,
    cuts_at_open: u64,
    drops_at_open: u64,
    /// The branch's video keyframe times (`Running::keyframes`): this file's are read from
    /// it when it closes, even after the branch is torn down (a file that ends in a failure).
    keyframes: Keys,
}

pub(super) struct Mp4Writer {
    route: String,
    settings: RecordSettings,
    shared: Arc<Shared>,
    log: Arc<EventLog>,
    running: Option<Running>,
    open: Option<OpenFile>,
    paused: bool,
    /// A pause, or the volume's free-space floor, ends the open file before the next video
    /// frame that arrives (so its last frame is whole), or where the data stopped at this
    /// time plus `PAUSE_WAIT`.
    ending: Option<Instant>,
    /// The hub's run (its count of cuts) of the last data that went into the branch: data of
    /// a later run (a switch, the slate on air) goes into a new branch and file.
    cuts_seen: u64,
    /// The program of the data of the hub's run `program_run` (a new run starts anew).
    program: Program,
    program_run: u64,
    retry_at: Option<Instant>,
    backoff: Duration,
    /// The last branch due did not start: the volume was below its free-space floor (said
    /// once; tried again after each backoff, counted in `floor_retries`).
    low_space: bool,
    /// When the free-space floor was last checked while the branch ran.
    floor_checked: Instant,
}

impl Mp4Writer {
    pub fn new(
        route: &str,
        settings: &RecordSettings,
        shared: Arc<Shared>,
        log: Arc<EventLog>,
    ) -> Mp4Writer {
        Mp4Writer {
            route: route.to_owned(),
            settings: settings.clone(),
            shared,
            log,
            running: None,
            open: None,
            paused: false,
            ending: None,
            cuts_seen: 0,
            program: Program::default(),
            program_run: 0,
            retry_at: None,
            backoff: FIRST_BACKOFF,
            low_space: false,
            floor_checked: Instant::now(),
        }
    }

    pub fn run(mut self, rx: Receiver<Item>) {
        loop {
            let item = match rx.recv_timeout(POLL) {
                Ok(item) => Some(item),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let paused = self.shared.paused.load(Relaxed);
            if paused != self.paused {
                self.paused = paused;
                if paused {
                    // The file ends before the next video frame: the demuxer, at the end of
                    // stream, gives out what it holds of a frame cut short.
                    if self.running.is_some() {
                        self.ending = Some(Instant::now());
                    }
                    lock(&self.shared.status).state = "paused";
                } else {
                    // Resumed before the file's end was found: it simply goes on.
                    self.ending = None;
                    lock(&self.shared.status).state = "recording";
                }
            }
            if self.ending.is_some_and(|t| t.elapsed() >= PAUSE_WAIT) {
                // No frame began within the wait: the file ends where the data stopped.
                self.ending = None;
                if self.paused {
                    lock(&self.shared.status).pauses_mid_frame += 1;
                }
                self.finish();
            }
            if let Some(item) = item {
                let size = item.buffer.size() as u64;
                self.shared.queued.fetch_sub(size, Relaxed);
                self.take(item.buffer, size, item.cuts);
            }
            self.poll_bus();
            self.watch();
            let settled = self.paused && self.ending.is_none();
            self.shared.settled.store(settled, Relaxed);
            if let Some(open) = &self.open {
                if let Ok(meta) = open.file.metadata() {
                    self.shared.segment_bytes.store(meta.len(), Relaxed);
                }
            }
        }
        self.finish();
        lock(&self.shared.status).state = "stopped";
    }

    /// Takes `buffer` of the hub's run `cuts` (its count of cuts when it handed it over). Where
    /// the program changes inside the run (`Program`), the file ends whole with the data before
    /// the change, and a new branch starts with the data from it (at its PSI; the new
    /// program's first keyframe opens its file).
    fn take(&mut self, buffer: gst::Buffer, size: u64, cuts: u64) {
        if cuts != self.program_run {
            self.program_run = cuts;
            self.program = Program::default();
        }
        let at = buffer
            .map_readable()
            .ok()
            .and_then(|m| self.program.change_in(&m));
        let Some(at) = at else {
            return self.take_run(buffer, size, cuts);
        };
        if at > 0 {
            if let Ok(head) = buffer.copy_region(gst::BufferCopyFlags::MEMORY, 0..at) {
                self.take_run(head, at as u64, cuts);
            }
        }
        gst::info!(
            CAT,
            "{}: the program changed inside the hub's run: a new file",
            self.route
        );
        lock(&self.shared.status).program_changes += 1;
        self.ending = None;
        self.finish();
        let Ok(map) = buffer.map_readable() else {
            return;
        };
        let mut rest = Vec::with_capacity(PACKET_SIZE + map.len() - at);
        if crate::ts::pid(&map[at..]) != 0 {
            rest.extend(self.program.pat.iter().flatten());
        }
        rest.extend_from_slice(&map[at..]);
        drop(map);
        // Read again from the change (no change any more: the tables are those just read).
        self.take(gst::Buffer::from_mut_slice(rest), size - at as u64, cuts);
    }

    /// Takes `buffer` of the hub's run `cuts`, in which the program does not change.
    fn take_run(&mut self, buffer: gst::Buffer, size: u64, cuts: u64) {
        if self.running.is_some() && cuts != self.cuts_seen {
            // The hub cut to a new run (a switch, the slate on air): its program may differ
            // (other PIDs, other streams or caps), which a running demuxer and muxer cannot
            // take (their pads are linked: the branch fails `not-negotiated`). The file ends
            // whole with the run before, and a new branch starts with this run, at its PSI
            // and keyframe.
            self.ending = None;
            self.finish();
        }
        if self.ending.is_some() && self.running.is_some() {
            let at = buffer
                .map_readable()
                .ok()
                .and_then(|m| video_frame_start(&m));
            let Some(at) = at else {
                return self.push(buffer, size, cuts);
            };
            // The file ends before this frame: what came before it goes in, then the end.
            if at > 0 {
                if let Ok(head) = buffer.copy_region(gst::BufferCopyFlags::MEMORY, 0..at) {
                    self.push(head, at as u64, cuts);
                }
            }
            self.ending = None;
            self.finish();
            let rest = buffer.size() - at;
            if let Ok(tail) = buffer.copy_region(gst::BufferCopyFlags::MEMORY, at..) {
                self.take_run(tail, rest as u64, cuts);
            }
            return;
        }
        self.ending = None;
        let packets = size / PACKET_SIZE as u64;
        if self.paused {
            self.shared.skipped.fetch_add(packets, Relaxed);
            return;
        }
        if self.running.is_some() && self.floor_checked.elapsed() >= FLOOR_EVERY {
            self.floor_checked = Instant::now();
            if super::below_floor(&self.settings.dir, &self.shared).is_some() {
                // The volume reached its floor while a file was written: the file ends before
                // the next video frame, whole, and the branch is built again only when there
                // is room (below).
                gst::info!(
                    CAT,
                    "{}: the recordings volume reached its floor",
                    self.route
                );
                lock(&self.shared.status).floor_ends += 1;
                self.ending = Some(Instant::now());
                return self.take_run(buffer, size, cuts);
            }
        }
        if self.running.is_none() {
            if self.retry_at.is_some_and(|t| Instant::now() < t) {
                if self.low_space {
                    self.shared.no_space_bytes.fetch_add(size, Relaxed);
                } else {
                    self.shared.drops.fetch_add(packets, Relaxed);
                }
                return;
            }
            if let Some(why) = super::below_floor(&self.settings.dir, &self.shared) {
                self.shared.no_space_bytes.fetch_add(size, Relaxed);
                return self.no_space(why);
            }
            if std::mem::take(&mut self.low_space) {
                lock(&self.shared.status).state = "recording";
            }
            match self.build() {
                Ok(r) => self.running = Some(r),
                Err(e) => {
                    self.shared.drops.fetch_add(packets, Relaxed);
                    return self.fail(e.to_string());
                }
            }
        }
        self.push(buffer, size, cuts);
    }

    /// Pushes `buffer` into the running branch. Waits while the appsrc holds its 8 MiB (a
    /// slow disk): this thread waits, not the route; but not past a stall.
    fn push(&mut self, buffer: gst::Buffer, size: u64, cuts: u64) {
        let packets = size / PACKET_SIZE as u64;
        self.cuts_seen = cuts;
        while self
            .running
            .as_ref()
            .is_some_and(|r| r.appsrc.current_level_bytes() >= APPSRC_BYTES)
        {
            if self.watch() {
                self.shared.drops.fetch_add(packets, Relaxed);
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let Some(r) = &mut self.running else { return };
        r.pushed_since += size;
        if r.appsrc.push_buffer(buffer).is_err() {
            self.shared.drops.fetch_add(packets, Relaxed);
        }
    }

    /// Watches the branch: says what it left out, and tears it down (an error, counted in
    /// `stalls`) when the muxer has given nothing out for `STALL` while the stream arrived.
    /// True when it did.
    fn watch(&mut self) -> bool {
        let Some(r) = &mut self.running else {
            return false;
        };
        let left: Vec<String> = std::mem::take(&mut *lock(&r.left_out));
        let muxed = r.muxed.load(Relaxed);
        if muxed != r.seen_muxed || r.pushed_since == 0 {
            r.seen_muxed = muxed;
            r.progress_at = Instant::now();
            r.pushed_since = 0;
        }
        let stalled = (r.progress_at.elapsed() >= STALL).then_some(r.pushed_since);
        for why in left {
            self.report(why);
        }
        let Some(pushed) = stalled else {
            return false;
        };
        lock(&self.shared.status).stalls += 1;
        self.teardown();
        self.fail(format!(
            "the mp4 branch stalled: nothing muxed for {}s while {pushed} bytes of the stream \
             arrived; torn down, tried again after the backoff",
            STALL.as_secs()
        ));
        true
    }

    /// An error that does not stop the recording: counted and said.
    fn report(&self, error: String) {
        {
            let mut status = lock(&self.shared.status);
            status.errors += 1;
            status.last_error = Some(error.clone());
        }
        let mut event = Event::new(Kind::RecordingError);
        event.route = Some(self.route.clone());
        event.error = Some(error);
        self.log.push(event);
    }

    fn build(&self) -> Result<Running> {
        let name = format!("{}-rec", self.route);
        let pipeline = gst::Pipeline::with_name(&name);
        let appsrc = gst_app::AppSrc::builder()
            .name(format!("{name}-src"))
            .caps(&crate::elements::ts_caps())
            .is_live(true)
            .stream_type(gst_app::AppStreamType::Stream)
            .max_bytes(APPSRC_BYTES)
            .block(false)
            .build();
        let demux = make("tsdemux", &format!("{name}-demux"))?;
        let mux = make("mp4mux", &format!("{name}-mp4mux"))?;
        mux.set_property("fragment-duration", 1000u32);
        let split = make("splitmuxsink", &format!("{name}-split"))?;
        split.set_property("muxer", &mux);
        // No `max-size-time`: the cuts are asked for by the video's keyframe probe
        // (`link_stream`), at the first keyframe at or after the target.
        let cuts = Arc::new(Cuts {
            target: self.settings.segment_ms.saturating_mul(1_000_000),
            split: split.downgrade(),
            first: Mutex::new(None),
        });
        pipeline.add_many([appsrc.upcast_ref(), &demux, &split])?;
        appsrc.link(&demux)?;

        let naming = Arc::new(Mutex::new(Naming::default()));
        let (dir, pattern, route) = (
            self.settings.dir.clone(),
            self.settings.pattern.clone(),
            self.route.clone(),
        );
        let named = naming.clone();
        let left_out = Arc::new(Mutex::new(Vec::new()));
        let said = left_out.clone();
        // The file is made here, relative to its directory and without following a link
        // (`path::SegmentDir`); the sink is handed it by its descriptor, never by its path.
        split.connect("format-location-full", false, move |_| {
            let made = path::expand(&pattern, &route, unix_now())
                .map_err(|e| e.to_string())
                .and_then(|rel| place(&dir, &rel, "mp4"))
                .and_then(|p| match p.dir.create_new(&p.part_name) {
                    Ok(file) => Ok((p, file)),
                    Err(e) => Err(format!("cannot create `{}`: {e}", p.part.display())),
                });
            match made {
                Ok((p, file)) => {
                    let shown = format!("/proc/self/fd/{}", file.as_raw_fd());
                    lock(&named).named = Some((p, file));
                    Some(shown.to_value())
                }
                Err(why) => {
                    lock(&said).push(why);
                    None
                }
            }
        });

        let weak = pipeline.downgrade();
        let split_weak = split.downgrade();
        let left = left_out.clone();
        let keyframes = Arc::new(Mutex::new(Vec::new()));
        let keys = keyframes.clone();
        let gate = Arc::new(Mutex::new(Gate::default()));
        let (gated, shared) = (gate.clone(), self.shared.clone());
        demux.connect_pad_added(move |_, pad| {
            let (Some(pipeline), Some(split)) = (weak.upgrade(), split_weak.upgrade()) else {
                return;
            };
            let streams = Streams {
                keyframes: &keys,
                cuts: &cuts,
                gate: &gated,
                shared: &shared,
            };
            if let Err(why) = branch(&pipeline, &split, pad, &streams) {
                gst::warning!(CAT, "{why}");
                lock(&left).push(why.to_string());
            }
        });
        demux.connect_no_more_pads(move |_| {
            let mut gate = lock(&gate);
            gate.no_more_pads = true;
            if gate.is_open() {
                gate.open();
            }
        });
        // Every buffer the muxer gives out: the branch's progress, watched for a stall.
        let muxed = Arc::new(AtomicU64::new(0));
        if let Some(src) = mux.static_pad("src") {
            let muxed = muxed.clone();
            src.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                muxed.fetch_add(1, Relaxed);
                gst::PadProbeReturn::Ok
            });
        }
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| Error::pipeline(format!("recording pipeline: {e}")))?;
        Ok(Running {
            pipeline,
            appsrc,
            naming,
            left_out,
            muxed,
            keyframes,
            seen_muxed: 0,
            progress_at: Instant::now(),
            pushed_since: 0,
        })
    }

    /// Handles what the pipeline reported: files opened and closed, errors.
    fn poll_bus(&mut self) {
        let Some(bus) = self.running.as_ref().and_then(|r| r.pipeline.bus()) else {
            return;
        };
        while let Some(msg) = bus.pop() {
            self.handle(&msg);
        }
    }

    fn handle(&mut self, msg: &gst::Message) {
        use gst::MessageView as M;
        match msg.view() {
            M::Element(e) => {
                let Some(s) = e.structure() else { return };
                let running = s
                    .get::<gst::ClockTime>("running-time")
                    .map_or(0, |t| t.nseconds());
                match s.name().as_str() {
                    "splitmuxsink-fragment-opened" => self.opened(running),
                    "splitmuxsink-fragment-closed" => self.closed(running),
                    _ => {}
                }
            }
            M::Error(e) => {
                let why = format!("{} ({})", e.error(), e.debug().unwrap_or_default());
                self.teardown();
                self.fail(why);
            }
            _ => {}
        }
    }

    fn opened(&mut self, running: u64) {
        let Some((place, file)) = self
            .running
            .as_ref()
            .and_then(|r| lock(&r.naming).named.take())
        else {
            return;
        };
        let rel = place.rel.clone();
        let keyframes: Keys = self
            .running
            .as_ref()
            .map_or_else(Arc::default, |r| r.keyframes.clone());
        // When its first keyframe reached the muxer: `splitmuxsink` says a file opened only
        // once it has gathered a GOP or more, later than that by a GOP or two.
        let start_unix = wall_at(&keyframes, running).unwrap_or_else(unix_now);
        {
            let mut status = lock(&self.shared.status);
            status.segment = Some(rel.to_string_lossy().into_owned());
            status.state = "recording";
        }
        let mut event = Event::new(Kind::SegmentOpened);
        event.route = Some(self.route.clone());
        event.segment = Some(format!(
            "{{\"path\":{},\"format\":\"mp4\",\"start\":{start_unix:.3}}}",
            super::writer::json_text(&rel.to_string_lossy())
        ));
        self.log.push(event);
        self.open = Some(OpenFile {
            rel,
            place,
            file,
            start_unix,
            start_running: running,
            cuts_at_open: self.cuts_seen,
            drops_at_open: self.shared.drops.load(Relaxed),
            keyframes,
        });
    }

    fn closed(&mut self, running: u64) {
        let Some(open) = self.open.take() else { return };
        let duration = running.saturating_sub(open.start_running) as f64 / 1e9;
        let error = open.place.commit().err().map(|e| {
            format!(
                "cannot rename `{}`: {e}; listed under its `.part` name",
                open.place.part.display()
            )
        });
        if let Some(error) = &error {
            let mut status = lock(&self.shared.status);
            status.errors += 1;
            status.last_error = Some(error.clone());
        }
        self.report_closed(open, duration, error);
    }

    /// Reports a file closed: renamed into place, or (`error`, counted by the caller) left as
    /// `.part`, which is then listed under that name (the catalog's open row for its final
    /// name goes).
    fn report_closed(&mut self, open: OpenFile, duration: f64, error: Option<String>) {
        let mut rel = open.rel.clone();
        if let Some(error) = &error {
            self.log
                .push(super::writer::unrenamed(&self.route, &open.rel, error));
            rel = rel.with_file_name(&open.place.part_name);
        }
        let bytes = open.file.metadata().map_or(0, |m| m.len());
        let now = unix_now();
        // Its keyframes, in order: those from its start to its end (those after it are the
        // next file's). Read from the file's own list, so that a file the branch failed in
        // (torn down before this) lists them too.
        let stop = if self.running.is_some() {
            open.start_running + (duration * 1e9) as u64
        } else {
            u64::MAX // the branch is gone: every keyframe it saw since the start is this file's
        };
        // It ends where the next file starts: when that file's first keyframe reached the
        // muxer, as its start was when its own did (so `end` - `start` is its media duration,
        // give or take the arrival's jitter). A file that ends at an end of stream (a pause, a
        // stop, a failure) ends its duration after its start, or now if that is sooner (a
        // sender faster than real time).
        let end = (self.running.is_some())
            .then(|| wall_at(&open.keyframes, stop))
            .flatten()
            .filter(|&e| e >= open.start_unix)
            .unwrap_or_else(|| now.min(open.start_unix + duration).max(open.start_unix));
        let keys: Vec<String> = {
            let mut held = lock(&open.keyframes);
            held.sort_unstable_by_key(|&(k, _)| k);
            let keys = held
                .iter()
                .filter(|&&(k, _)| k >= open.start_running && k < stop)
                .map(|&(k, _)| format!("{}", ((k - open.start_running) as f64 / 1e6).round() / 1e3))
                .collect();
            held.retain(|&(k, _)| k >= stop);
            keys
        };
        self.shared.bytes.fetch_add(bytes, Relaxed);
        self.shared.segment_bytes.store(0, Relaxed);
        {
            let mut status = lock(&self.shared.status);
            status.segments += 1;
            status.segment = None;
        }
        self.backoff = FIRST_BACKOFF;
        let switch = self.cuts_seen != open.cuts_at_open;
        let gap = self.shared.drops.load(Relaxed) != open.drops_at_open;
        let mut event = Event::new(Kind::SegmentClosed);
        event.route = Some(self.route.clone());
        event.error = error;
        event.segment = Some(format!(
            "{{\"path\":{},\"format\":\"mp4\",\"start\":{:.3},\"end\":{end:.3},\
             \"duration\":{duration:.3},\"bytes\":{bytes},\"psi\":true,\"switch\":{switch},\
             \"gap\":{gap},\"keyframes\":[{}]}}",
            super::writer::json_text(&rel.to_string_lossy()),
            open.start_unix,
            keys.join(","),
        ));
        gst::debug!(CAT, "{}: mp4 segment {} closed", self.route, rel.display());
        self.log.push(event);
    }

    /// Ends the pipeline's stream so the last file is finished, and stops it (a pause, a
    /// stop). Waits at most `FINISH_WAIT` for the end of stream.
    fn finish(&mut self) {
        let Some(r) = &self.running else { return };
        let _ = r.appsrc.end_of_stream();
        let bus = r.pipeline.bus();
        let deadline = Instant::now() + FINISH_WAIT;
        while let Some(bus) = &bus {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let Some(msg) = bus.timed_pop(gst::ClockTime::from_nseconds(left.as_nanos() as u64))
            else {
                break;
            };
            if matches!(msg.view(), gst::MessageView::Eos(_)) {
                break;
            }
            self.handle(&msg);
            if self.running.is_none() {
                return;
            }
        }
        self.teardown();
    }

    fn teardown(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = crate::pipeline::set_state_bounded(&r.pipeline, gst::State::Null, FINISH_WAIT);
            self.drop_unopened(&r);
        }
    }

    /// The file `format-location-full` made for the next segment that the branch never
    /// reported opened (it failed, or stopped, first): removed when empty (nothing to keep,
    /// no catalog row); one with bytes in it stays as `.part`, for the next start's repair.
    fn drop_unopened(&self, r: &Running) {
        let Some((place, file)) = lock(&r.naming).named.take() else {
            return;
        };
        if file.metadata().is_ok_and(|m| m.len() == 0) {
            drop(file);
            if let Err(e) = place.dir.remove(&place.part_name) {
                gst::warning!(
                    CAT,
                    "{}: cannot remove `{}`: {e}",
                    self.route,
                    place.part.display()
                );
            }
        } else {
            gst::warning!(
                CAT,
                "{}: `{}` left for repair",
                self.route,
                place.part.display()
            );
        }
    }

    /// No branch starts: the volume is below its free-space floor. Said once (an error, as
    /// `ts` says it), when it begins; tried again after each backoff (retention runs
    /// meanwhile), each retry counted in `floor_retries`.
    fn no_space(&mut self, error: String) {
        if std::mem::replace(&mut self.low_space, true) {
            gst::debug!(CAT, "{}: {error}", self.route);
            lock(&self.shared.status).floor_retries += 1;
            self.retry_at = Some(Instant::now() + self.backoff);
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            return;
        }
        self.fail(error);
    }

    fn fail(&mut self, error: String) {
        gst::warning!(CAT, "{}: {error}", self.route);
        {
            let mut status = lock(&self.shared.status);
            status.errors += 1;
            status.last_error = Some(error.clone());
            status.state = "failing";
            status.segment = None;
        }
        let mut event = Event::new(Kind::RecordingError);
        event.route = Some(self.route.clone());
        event.error = Some(error.clone());
        self.log.push(event);
        // What the failed file holds stays as `.part`, listed under that name (retention
        // deletes it in turn; the server's repair cuts it to its last whole fragment at its
        // next start). An empty one (a stall before the first fragment) goes, and its catalog
        // row with it.
        if let Some(open) = self.open.take() {
            if open.file.metadata().is_ok_and(|m| m.len() > 0) {
                let duration = (unix_now() - open.start_unix).max(0.0);
                let why = format!(
                    "`{}` was not finished ({error}); listed under its `.part` name",
                    open.rel.display()
                );
                self.report_closed(open, duration, Some(why));
            } else {
                let _ = open.place.dir.remove(&open.place.part_name);
                let mut event = Event::new(Kind::RecordingError);
                event.route = Some(self.route.clone());
                event.error = Some(format!("`{}` is empty: removed", open.rel.display()));
                event.segment = Some(format!(
                    "{{\"path\":{}}}",
                    super::writer::json_text(&open.rel.to_string_lossy())
                ));
                self.log.push(event);
            }
        }
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }
}

/// Links a pad the demuxer added to the muxer, downstream first: parser, queue and the
/// muxer's pad are linked and playing before the demuxer's pad is linked, so no buffer ever
/// reaches an unlinked pad. A stream the muxer cannot take (a codec without a parser here, or
/// one the muxer refuses) goes to a `fakesink` and is named in the error returned: the muxer
/// is never given a pad that no data will reach (it would wait for it forever).
fn branch(
    pipeline: &gst::Pipeline,
    split: &gst::Element,
    pad: &gst::Pad,
    streams: &Streams<'_>,
) -> Result<()> {
    let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
    let (kind, version) = caps.structure(0).map_or((String::new(), 0), |s| {
        (
            s.name().to_string(),
            s.get::<i32>("mpegversion").unwrap_or(0),
        )
    });
    let (parser, request) = match (kind.as_str(), version) {
        ("video/x-h264", _) => ("h264parse", "video"),
        ("video/x-h265", _) => ("h265parse", "video"),
        ("audio/mpeg", 2 | 4) => ("aacparse", "audio_%u"),
        ("audio/mpeg", 1) => ("mpegaudioparse", "audio_%u"),
        ("audio/x-ac3" | "audio/ac3", _) => ("ac3parse", "audio_%u"),
        _ => ("", ""),
    };
    let recorded = (!parser.is_empty())
        .then(|| link_stream(pipeline, split, pad, parser, request, streams))
        .transpose()?
        .unwrap_or(false);
    if recorded {
        return Ok(());
    }
    let sink = make("fakesink", &format!("{}-left-out", pad.name()))?;
    sink.set_property("sync", false);
    pipeline.add(&sink)?;
    let _ = sink.sync_state_with_parent();
    let _ = pad.link(&sink.static_pad("sink").expect("a sink pad"));
    Err(Error::pipeline(format!(
        "stream `{}` ({caps}) is not recorded: the mp4 muxer cannot take it",
        pad.name()
    )))
}

/// `pad ! parser ! queue ! split.request`, downstream first; false when the muxer refused the
/// stream (nothing of it is left in the pipeline).
fn link_stream(
    pipeline: &gst::Pipeline,
    split: &gst::Element,
    pad: &gst::Pad,
    parser: &str,
    request: &str,
    streams: &Streams<'_>,
) -> Result<bool> {
    let parse = make(parser, &format!("{}-parse", pad.name()))?;
    let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
    if !parse
        .static_pad("sink")
        .is_some_and(|p| p.query_accept_caps(&caps))
    {
        return Ok(false);
    }
    // The demuxer feeds every stream from one thread: a recording that joins mid-GOP has its
    // video held back by the parser until the next keyframe (no SPS/PPS before it), while the
    // audio goes on. A queue full after 1 s (its default) would block the demuxer there, and
    // the keyframe would never come: each stream may queue up to a stall's worth instead,
    // bounded in bytes like the appsrc.
    let queue = make("queue", &format!("{}-queue", pad.name()))?;
    queue.set_property("max-size-buffers", 0u32);
    queue.set_property("max-size-time", STALL.as_nanos() as u64);
    queue.set_property("max-size-bytes", APPSRC_BYTES as u32);
    pipeline.add_many([&parse, &queue])?;
    let linked = parse.link(&queue).is_ok()
        && match (queue.static_pad("src"), split.request_pad_simple(request)) {
            (Some(src), Some(sink)) => {
                let ok = src.link(&sink).is_ok();
                if !ok {
                    split.release_request_pad(&sink);
                }
                ok
            }
            _ => false,
        };
    if !linked {
        let _ = pipeline.remove_many([&parse, &queue]);
        return Ok(false);
    }
    if request == "video" {
        lock(streams.gate).video = true;
        // The running time of each keyframe on its way to the muxer: the file's keyframe times,
        // and where the files are cut. `splitmuxsink`'s own `max-size-time` makes files of *at
        // most* the target (a GOP that would take the file past it, by a frame or by its
        // audio, goes to the next file: 2 s files for a 3 s target and 1 s GOPs); so the cut
        // is asked for here, at the first keyframe at or after the target from the file's
        // first one, before that keyframe reaches the muxer.
        if let Some(src) = queue.static_pad("src") {
            let keyframes = streams.keyframes.clone();
            let gate = streams.gate.clone();
            let cuts = streams.cuts.clone();
            // A keyframe's running time and wall time, that the wall times of those after it
            // follow (`ANCHOR_SLACK`).
            let anchor: Mutex<Option<(u64, f64)>> = Mutex::new(None);
            src.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
                let Some(buffer) = info.buffer() else {
                    return gst::PadProbeReturn::Ok;
                };
                if buffer.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                    return gst::PadProbeReturn::Ok;
                }
                let running = running_time(pad, buffer.pts());
                if let Some(t) = running {
                    let t = t.nseconds();
                    let mut gate = lock(&gate);
                    if gate.key.is_none() {
                        gate.key = Some(t);
                        gate.open();
                    }
                    drop(gate);
                    // `splitmuxsink` starts a new file with the first GOP that begins at or
                    // after the time given: this keyframe's, by its decoding time or its
                    // presentation time, whichever it goes by.
                    let dts = running_time(pad, buffer.dts());
                    cuts.key(t, dts.map_or(t, |d| d.nseconds().min(t)));
                    // Its wall time: as far after the anchor's as its running time is, unless the
                    // arrival strays from that by more than `ANCHOR_SLACK` (a sender faster or
                    // slower than real time, a stall): then when it arrived, the new anchor.
                    // So a file's `end` - `start` is its media duration, not the jitter of
                    // the arrival of its first keyframe and of the next file's.
                    let now = unix_now();
                    let mut anchor = lock(&anchor);
                    let followed = anchor
                        .filter(|&(r, _)| t >= r)
                        .map(|(r, u)| u + (t - r) as f64 / 1e9)
                        .filter(|wall| (wall - now).abs() <= ANCHOR_SLACK);
                    let wall = followed.unwrap_or_else(|| {
                        *anchor = Some((t, now));
                        now
                    });
                    drop(anchor);
                    let mut keys = lock(&keyframes);
                    if keys.len() < MAX_KEYFRAMES {
                        keys.push((t, wall));
                    }
                }
                gst::PadProbeReturn::Ok
            });
        }
    }
    if request != "video" {
        gate_audio(&queue, streams);
        // Without video, the audio is cut by its own frames' times (each one a keyframe).
        if let Some(src) = queue.static_pad("src") {
            let (cuts, gate) = (streams.cuts.clone(), streams.gate.clone());
            src.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
                {
                    let gate = lock(&gate);
                    if gate.video || !gate.no_more_pads {
                        return gst::PadProbeReturn::Ok;
                    }
                }
                let running = info.buffer().and_then(|b| running_time(pad, b.pts()));
                if let Some(t) = running {
                    cuts.key(t.nseconds(), t.nseconds());
                }
                gst::PadProbeReturn::Ok
            });
        }
    }
    for e in [&queue, &parse] {
        let _ = e.sync_state_with_parent();
    }
    pad.link(&parse.static_pad("sink").expect("a sink pad"))
        .map_err(|e| Error::pipeline(format!("cannot link stream `{}`: {e:?}", pad.name())))?;
    Ok(true)
}

/// The running time of `t` in the time segment `pad` is in, if both are known.
fn running_time(pad: &gst::Pad, t: Option<gst::ClockTime>) -> Option<gst::ClockTime> {
    let event = pad.sticky_event::<gst::event::Segment>(0)?;
    let segment = event.segment().downcast_ref::<gst::ClockTime>()?.clone();
    segment.to_running_time(t?)
}

/// Where the files of a branch are cut: at the first keyframe at or after the target from the
/// file's first keyframe (`splitmuxsink`'s `max-size-time` would make files of at most the
/// target).
struct Cuts {
    /// The target duration of a file (ns).
    target: u64,
    split: gst::glib::WeakRef<gst::Element>,
    /// The running time (ns) of the open file's first keyframe.
    first: Mutex<Option<u64>>,
}

impl Cuts {
    /// A keyframe at running time `t` (ns) is on its way to the muxer: when it is due, the
    /// muxer is asked to start a new file with the GOP that begins at or after `at` (its own
    /// running time, or its decoding time if earlier), which it has not got yet.
    fn key(&self, t: u64, at: u64) {
        let mut first = lock(&self.first);
        match *first {
            Some(f) if t.saturating_sub(f) < self.target => {}
            Some(_) => {
                *first = Some(t);
                if let Some(split) = self.split.upgrade() {
                    split.emit_by_name::<()>("split-at-running-time", &[&at]);
                }
            }
            None => *first = Some(t),
        }
    }
}

/// What the streams of one branch share: the video keyframe times and the audio's `Gate`.
struct Streams<'a> {
    keyframes: &'a Keys,
    cuts: &'a Arc<Cuts>,
    gate: &'a Arc<Mutex<Gate>>,
    shared: &'a Arc<Shared>,
}

/// Holds an audio stream at its queue's output until the gate opens, then drops (and counts)
/// the buffers that end at or before the first video keyframe, at the muxer's pad (a buffer
/// that straddles it is kept: the audio starts within one frame of the video).
fn gate_audio(queue: &gst::Element, streams: &Streams<'_>) {
    let Some(src) = queue.static_pad("src") else {
        return;
    };
    let mut gate = lock(streams.gate);
    if !gate.is_open() {
        let block = gst::PadProbeType::BLOCK | gst::PadProbeType::BUFFER;
        if let Some(id) = src.add_probe(block, |_, _| gst::PadProbeReturn::Ok) {
            gate.blocked.push((src.clone(), id));
        }
    }
    drop(gate);
    let Some(sink) = src.peer() else {
        return;
    };
    let (gate, shared) = (streams.gate.clone(), streams.shared.clone());
    // Once a buffer passes, the probe goes (what follows is after the keyframe too).
    sink.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let Some(buffer) = info.buffer() else {
            return gst::PadProbeReturn::Ok;
        };
        let Some(key) = lock(&gate).key else {
            // No video: nothing to wait for.
            return gst::PadProbeReturn::Remove;
        };
        let end = buffer.pts().and_then(|pts| {
            running_time(
                pad,
                Some(pts + buffer.duration().unwrap_or(gst::ClockTime::ZERO)),
            )
        });
        match end {
            Some(end) if end.nseconds() <= key => {
                shared.audio_dropped.fetch_add(1, Relaxed);
                // Taken and let go here: `Drop` gave GStreamer-CRITICALs (an unref of NULL) and a crash.
                gst::PadProbeReturn::Handled
            }
            _ => gst::PadProbeReturn::Remove,
        }
    });
}

/// Where the first TS packet in `data` that starts a video PES (a PES stream id 0xE0-0xEF,
/// ISO/IEC 13818-1) begins: the start of the next video frame.
fn video_frame_start(data: &[u8]) -> Option<usize> {
    data.chunks_exact(PACKET_SIZE)
        .position(|p| {
            if p[0] != 0x47 || p[1] & 0x40 == 0 || p[3] & 0x10 == 0 {
                return false;
            }
            let off = if p[3] & 0x20 != 0 {
                5 + usize::from(p[4])
            } else {
                4
            };
            p.get(off..off + 4)
                .is_some_and(|h| h[..3] == [0, 0, 1] && h[3] & 0xF0 == 0xE0)
        })
        .map(|i| i * PACKET_SIZE)
}
