//! The recorder's writer thread: drains the queue, lets the cutter say where segments begin,
//! writes each as `NAME.ts.part` and renames it to `NAME.ts` once flushed and synced, and
//! reports segments and errors to the event log.
//!
//! A write that fails (a full disk, a removed directory) closes the segment with what reached
//! the disk (cut to whole packets), reports the error, and counts what follows as drops until
//! the next cut after a backoff (1 s, doubling to 30 s) opens a new segment.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cutter::{Cutter, Step};
use super::{lock, path, unix_now, Item, RecordSettings, Shared, CAT};
use crate::events::{Event, EventLog, Kind};
use crate::ts::{pid, PACKET_SIZE, PTS_WRAP};

/// How often the writer looks at its controls (pause) when no data arrives.
const POLL: Duration = Duration::from_millis(100);
/// Bytes written to the `.part` file at a time.
const WRITE_BUFFER: usize = 256 * 1024;
/// What is buffered reaches the file at least this often: what a crash may lose at most.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Arrival times further apart than this inside a segment are a gap (the input paused).
const GAP_SECS: f64 = 1.0;
/// How long a pause waits for the next frame's start to end the open segment cleanly.
pub(super) const PAUSE_WAIT: Duration = Duration::from_secs(1);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Keyframe times kept per segment (an hour of 1 s GOPs).
const MAX_KEYFRAMES: usize = 3600;
/// While a segment is written, the free-space floor is checked (a `statvfs`) at most this
/// often.
pub(super) const FLOOR_EVERY: Duration = Duration::from_secs(1);

/// The segment being written.
struct Open {
    /// Relative to the recordings directory, with its extension.
    rel: PathBuf,
    place: Place,
    file: BufWriter<File>,
    start_unix: f64,
    last_unix: f64,
    /// Its first keyframe's PTS.
    start_pts: Option<u64>,
    /// Bytes written to it.
    bytes: u64,
    psi: bool,
    /// Packets of PSI copied at its start (not the stream's own).
    inserted: u64,
    gap: bool,
    /// Its video timestamps jumped (a sender restarted): its duration is its wall-clock span.
    jumped: bool,
    cuts_at_open: u64,
    /// The hub's cuts when its last data was taken: a cut after that (the input lost once
    /// the data ended, while a stop waits) is not inside it.
    cuts_seen: u64,
    drops_at_open: u64,
    /// Keyframe times from the segment's start, in seconds.
    keyframes: Vec<f64>,
    flushed: Instant,
}

pub(super) struct Writer {
    cutter: Cutter,
    out: Files,
    paused: bool,
    /// A pause waits for a clean end of the open segment until this (see `pause_scan`).
    pausing: Option<Instant>,
    /// When the last item came, and whether the idle flush since then is done (`idle`).
    last_item: Instant,
    idle_flushed: bool,
}

/// The writer's files: what the cutter's steps act on.
struct Files {
    route: String,
    settings: RecordSettings,
    shared: Arc<Shared>,
    log: Arc<EventLog>,
    /// The hub's run (its count of cuts) of the buffer being written.
    cuts: u64,
    open: Option<Open>,
    /// After a failed write: no segment opens before this.
    retry_at: Option<Instant>,
    backoff: Duration,
    /// A step failed: the cutter is to cut at its next chance.
    failed: bool,
    /// The last segment due did not open: the volume was below its free-space floor.
    low_space: bool,
    /// When the floor was last checked while writing.
    floor_checked: Instant,
    /// The volume reached its floor while a segment was written: the cutter is to end it at
    /// its next keyframe (where no new one opens while the volume stays below the floor).
    floor_reached: bool,
}

impl Writer {
    pub fn new(
        route: &str,
        settings: &RecordSettings,
        shared: Arc<Shared>,
        log: Arc<EventLog>,
    ) -> Writer {
        Writer {
            cutter: Cutter::new(settings.segment_ms),
            out: Files {
                route: route.to_owned(),
                settings: settings.clone(),
                shared,
                log,
                cuts: 0,
                open: None,
                retry_at: None,
                backoff: FIRST_BACKOFF,
                failed: false,
                low_space: false,
                floor_checked: Instant::now(),
                floor_reached: false,
            },
            paused: false,
            pausing: None,
            last_item: Instant::now(),
            idle_flushed: false,
        }
    }

    /// Until every intake is gone and the queue is empty.
    pub fn run(mut self, rx: Receiver<Item>) {
        loop {
            let item = match rx.recv_timeout(POLL) {
                Ok(item) => Some(item),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            self.follow_controls();
            if let Some(item) = item {
                self.out
                    .shared
                    .queued
                    .fetch_sub(item.buffer.size() as u64, Relaxed);
                self.last_item = Instant::now();
                self.idle_flushed = false;
                self.take(item);
            } else {
                self.idle();
            }
            let settled = self.paused && self.pausing.is_none();
            self.out.shared.settled.store(settled, Relaxed);
        }
        self.close_segment();
        lock(&self.out.shared.status).state = "stopped";
    }

    /// Writes what the cutter holds and closes the open segment (a pause, a stop).
    fn close_segment(&mut self) {
        let now = unix_now();
        let out = &mut self.out;
        self.cutter.flush(&mut |s| out.apply(s, now));
        let span = self.cutter.span();
        let last = self.out.open.as_ref().map_or(now, |o| o.last_unix);
        self.out.close(span, last);
        self.after_steps();
    }

    /// Nothing came for `FLUSH_EVERY` (a sender stopped): what the cutter holds (from the
    /// last PAT on) goes to the open segment and the segment's buffer to its file, once per
    /// idle spell, so that a crash loses nothing already received. The next keyframe due then
    /// finds no PAT held and its segment starts with copies of the PSI (`Step::Psi`).
    fn idle(&mut self) {
        if self.idle_flushed || self.last_item.elapsed() < FLUSH_EVERY {
            return;
        }
        self.idle_flushed = true;
        if self.paused || self.pausing.is_some() || self.out.open.is_none() {
            return;
        }
        let now = unix_now();
        let out = &mut self.out;
        self.cutter.flush(&mut |s| out.apply(s, now));
        self.out.flush_open();
        self.after_steps();
    }

    fn after_steps(&mut self) {
        if std::mem::take(&mut self.out.failed) {
            self.cutter.cut_soon(false);
        }
        if std::mem::take(&mut self.out.floor_reached) && self.out.open.is_some() {
            // Ends at the next keyframe, whole: the cut opens no segment below the floor.
            self.cutter.cut_soon(true);
        }
        if self.out.open.is_none() {
            self.cutter.cut_soon(false);
        }
    }

    fn follow_controls(&mut self) {
        if self.pausing.is_some_and(|t| t.elapsed() >= PAUSE_WAIT) {
            // No frame began within the wait: the segment ends where the data stopped.
            self.pausing = None;
            lock(&self.out.shared.status).pauses_mid_frame += 1;
            self.close_segment();
        }
        let paused = self.out.shared.paused.load(Relaxed);
        if paused == self.paused {
            return;
        }
        self.paused = paused;
        if paused {
            let now = unix_now();
            let flowing = self
                .out
                .open
                .as_ref()
                .is_some_and(|o| now - o.last_unix <= GAP_SECS);
            if flowing {
                // What arrived before the pause is written whole (what the cutter holds
                // too); the segment goes on to the next frame's start in what follows.
                self.pausing = Some(Instant::now());
                let out = &mut self.out;
                self.cutter.flush(&mut |s| out.apply(s, now));
            } else {
                // None open, or the stream stopped before the pause: it ends where it is.
                self.close_segment();
            }
            lock(&self.out.shared.status).state = "paused";
        } else if self.pausing.take().is_some() {
            // Resumed before the segment's end was found: it simply goes on.
        } else {
            self.cutter.cut_soon(false);
            lock(&self.out.shared.status).state = "recording";
        }
    }

    /// While a pause waits for a clean end: writes `data` to the open segment up to the first
    /// packet that starts a PES on the video PID (a PAT, without video), where the segment
    /// closes, so its last frame is whole; what follows is skipped (paused).
    fn pause_scan(&mut self, data: &[u8], unix: f64) {
        let video = self.cutter.video_pid();
        let mut end = None;
        for (i, p) in data.chunks_exact(PACKET_SIZE).enumerate() {
            let starts = p[1] & 0x40 != 0;
            let boundary = match video {
                Some(v) => starts && pid(p) == usize::from(v),
                None => starts && pid(p) == 0,
            };
            if boundary {
                end = Some(i * PACKET_SIZE);
                break;
            }
        }
        let Some(at) = end else {
            self.out.write(data);
            return;
        };
        self.out.write(&data[..at]);
        self.pausing = None;
        let last = self.out.open.as_ref().map_or(unix, |o| o.last_unix);
        self.out.close(self.cutter.span(), last);
        self.after_steps();
        let rest = (data.len() - at) / PACKET_SIZE;
        self.out.shared.skipped.fetch_add(rest as u64, Relaxed);
    }

    fn take(&mut self, item: Item) {
        let packets = (item.buffer.size() / PACKET_SIZE) as u64;
        let Ok(map) = item.buffer.map_readable() else {
            self.out.shared.drops.fetch_add(packets, Relaxed);
            return;
        };
        if self.pausing.is_some() {
            let cuts = item.cuts;
            if self.out.open.as_ref().is_some_and(|o| o.cuts_seen != cuts) {
                // The hub cut to a new run (the input lost, the slate on air): the segment's
                // run ended before it, and the new run's first packets are not its to hold.
                self.pausing = None;
                self.close_segment();
                self.out.shared.skipped.fetch_add(packets, Relaxed);
                return;
            }
            if let Some(open) = &mut self.out.open {
                open.last_unix = item.unix;
            }
            return self.pause_scan(&map, item.unix);
        }
        if self.paused {
            self.out.shared.skipped.fetch_add(packets, Relaxed);
            return;
        }
        if let Some(open) = &mut self.out.open {
            if item.unix - open.last_unix > GAP_SECS {
                open.gap = true;
            }
            open.last_unix = item.unix;
            open.cuts_seen = item.cuts;
        }
        self.out.cuts = item.cuts;
        let out = &mut self.out;
        self.cutter
            .push(&map, item.unix, &mut |s| out.apply(s, item.unix));
        let (off, without) = (self.cutter.cuts_off_keyframe, self.cutter.cuts_without_psi);
        let mut status = lock(&self.out.shared.status);
        status.cuts_off_keyframe = off;
        status.cuts_without_psi = without;
        status.psi_inserted = self.cutter.psi_inserted;
        drop(status);
        self.after_steps();
    }
}

impl Files {
    fn apply(&mut self, step: Step<'_>, unix: f64) {
        match step {
            Step::Open { pts, psi, span } => {
                self.close(span, unix);
                if self.retry_at.is_some_and(|t| Instant::now() < t) {
                    // Still backing off: the cutter thinks a segment is open; it is not.
                    return;
                }
                self.retry_at = None;
                self.open_segment(pts, psi, unix);
            }
            Step::Jump => {
                if let Some(open) = &mut self.open {
                    open.jumped = true;
                }
            }
            Step::Keyframe(pts) => {
                if let Some(open) = &mut self.open {
                    if open.keyframes.len() < MAX_KEYFRAMES {
                        let t = match (open.start_pts, pts, open.jumped) {
                            (Some(a), Some(b), false) => {
                                (b.wrapping_sub(a) % PTS_WRAP) as f64 / 90_000.0
                            }
                            _ => unix - open.start_unix,
                        };
                        open.keyframes.push((t * 1000.0).round() / 1000.0);
                    }
                }
            }
            Step::Bytes(bytes) => self.write(bytes),
            Step::Psi(bytes) => {
                if let Some(open) = &mut self.open {
                    open.inserted += (bytes.len() / PACKET_SIZE) as u64;
                }
                self.write(bytes);
            }
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        let packets = (bytes.len() / PACKET_SIZE) as u64;
        let Some(open) = &mut self.open else {
            if self.low_space {
                self.shared
                    .no_space_bytes
                    .fetch_add(bytes.len() as u64, Relaxed);
            } else if self.retry_at.is_some() {
                self.shared.drops.fetch_add(packets, Relaxed);
            } else {
                self.shared.skipped.fetch_add(packets, Relaxed);
            }
            return;
        };
        let mut written = open.file.write_all(bytes);
        if written.is_ok() && open.flushed.elapsed() >= FLUSH_EVERY {
            open.flushed = Instant::now();
            written = open.file.flush();
        }
        match written {
            Ok(()) => {
                open.bytes += bytes.len() as u64;
                self.shared.bytes.fetch_add(bytes.len() as u64, Relaxed);
                self.shared.segment_bytes.store(open.bytes, Relaxed);
                self.check_floor();
            }
            Err(e) => {
                self.shared.drops.fetch_add(packets, Relaxed);
                let why = format!("cannot write `{}`: {e}", open.rel.display());
                self.fail(why);
            }
        }
    }

    /// Flushes the open segment's buffer to its file.
    fn flush_open(&mut self) {
        let Some(open) = &mut self.open else {
            return;
        };
        open.flushed = Instant::now();
        if let Err(e) = open.file.flush() {
            let why = format!("cannot write `{}`: {e}", open.rel.display());
            self.fail(why);
        }
    }

    /// While a segment is written (at most once every `FLOOR_EVERY`): the volume reached its
    /// free-space floor. Counted once per segment (`floor_ends`); the segment ends at its next
    /// keyframe, where the cut reports the floor and opens no new segment until retention
    /// makes room.
    fn check_floor(&mut self) {
        if self.floor_reached || self.floor_checked.elapsed() < FLOOR_EVERY {
            return;
        }
        self.floor_checked = Instant::now();
        if super::below_floor(&self.settings.dir, &self.shared).is_some() {
            gst::info!(
                CAT,
                "{}: the recordings volume reached its floor",
                self.route
            );
            self.floor_reached = true;
            lock(&self.shared.status).floor_ends += 1;
        }
    }

    /// A write, open or close failed: closes what is open with what reached the disk and
    /// backs off before the next segment.
    fn fail(&mut self, error: String) {
        gst::warning!(CAT, "{}: {error}", self.route);
        {
            let mut status = lock(&self.shared.status);
            status.errors += 1;
            status.last_error = Some(error.clone());
            status.state = "failing";
        }
        let mut event = Event::new(Kind::RecordingError);
        event.route = Some(self.route.clone());
        event.error = Some(error.clone());
        self.log.push(event);
        if let Some(open) = self.open.take() {
            self.finish(open, None, unix_now(), Some(error));
        }
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.failed = true;
    }

    fn report_no_space(&mut self, error: String) {
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
        event.error = Some(error);
        self.log.push(event);
    }

    fn open_segment(&mut self, pts: Option<u64>, psi: bool, unix: f64) {
        if let Some(why) = super::below_floor(&self.settings.dir, &self.shared) {
            // Said once, when it begins; tried again at each cut (retention runs meanwhile).
            if std::mem::replace(&mut self.low_space, true) {
                lock(&self.shared.status).floor_retries += 1;
            } else {
                self.report_no_space(why);
            }
            return;
        }
        if std::mem::take(&mut self.low_space) {
            lock(&self.shared.status).state = "recording";
        }
        let rel = match path::expand(&self.settings.pattern, &self.route, unix) {
            Ok(rel) => rel,
            Err(e) => return self.fail(e.to_string()),
        };
        let place = match place(&self.settings.dir, &rel, "ts") {
            Ok(place) => place,
            Err(e) => return self.fail(e),
        };
        let file = match place.dir.create_new(&place.part_name) {
            Ok(f) => f,
            Err(e) => return self.fail(format!("cannot create `{}`: {e}", place.part.display())),
        };
        let rel = place.rel.clone();
        gst::debug!(CAT, "{}: segment {} opened", self.route, rel.display());
        {
            let mut status = lock(&self.shared.status);
            status.segment = Some(rel.to_string_lossy().into_owned());
            status.state = "recording";
        }
        self.shared.segment_bytes.store(0, Relaxed);
        let mut event = Event::new(Kind::SegmentOpened);
        event.route = Some(self.route.clone());
        event.segment = Some(format!(
            "{{\"path\":{},\"format\":\"ts\",\"start\":{unix:.3}}}",
            json_text(&rel.to_string_lossy())
        ));
        self.log.push(event);
        self.open = Some(Open {
            rel,
            place,
            file: BufWriter::with_capacity(WRITE_BUFFER, file),
            start_unix: unix,
            last_unix: unix,
            start_pts: pts,
            bytes: 0,
            psi,
            inserted: 0,
            gap: false,
            jumped: false,
            cuts_at_open: self.cuts,
            cuts_seen: self.cuts,
            drops_at_open: self.shared.drops.load(Relaxed),
            keyframes: Vec::new(),
            flushed: Instant::now(),
        });
    }

    /// Closes the open segment, if any; `span` is its duration by its own timestamps (90 kHz
    /// ticks; None: by the wall clock).
    fn close(&mut self, span: Option<u64>, unix: f64) {
        let Some(mut open) = self.open.take() else {
            return;
        };
        let synced = open
            .file
            .flush()
            .and_then(|()| open.file.get_ref().sync_data());
        if let Err(e) = synced {
            let why = format!("cannot write `{}`: {e}", open.rel.display());
            self.open = Some(open);
            return self.fail(why);
        }
        self.finish(open, span, unix, None);
        self.backoff = FIRST_BACKOFF;
    }

    /// Renames a closed (or failed) segment into place and reports it.
    fn finish(&mut self, open: Open, span: Option<u64>, unix: f64, error: Option<String>) {
        let Open {
            rel,
            place,
            file,
            start_unix,
            start_pts,
            bytes,
            psi,
            inserted,
            gap,
            jumped,
            cuts_at_open,
            cuts_seen,
            drops_at_open,
            keyframes,
            last_unix,
            flushed: _,
        } = open;
        // A failed segment keeps what reached the disk, cut to whole packets.
        let (file, _) = file.into_parts();
        let mut size = bytes;
        if error.is_some() {
            if let Ok(meta) = file.metadata() {
                size = meta.len() - meta.len() % PACKET_SIZE as u64;
                let _ = file.set_len(size);
            }
        }
        drop(file);
        // At a cut the segment ends where the next begins; after a failed write with its
        // last data.
        let end = if error.is_some() { last_unix } else { unix };
        // By its own timestamps; by the wall clock when it has none or they jumped.
        let duration = match (start_pts, span, jumped) {
            (Some(_), Some(span), false) => span as f64 / 90_000.0,
            _ => (end - start_unix).max(0.0),
        };
        let part = &place.part;
        if size == 0 && error.is_some() {
            // Nothing reached the disk (a full one): no segment to keep or to list.
            let _ = place.dir.remove(&place.part_name);
            lock(&self.shared.status).segment = None;
            let mut event = Event::new(Kind::RecordingError);
            event.route = Some(self.route.clone());
            event.error = Some(format!("`{}` is empty: removed", rel.display()));
            event.segment = Some(format!(
                "{{\"path\":{}}}",
                json_text(&rel.to_string_lossy())
            ));
            self.log.push(event);
            return;
        }
        let (rel, error) = match place.commit() {
            Ok(()) => (rel, error),
            Err(e) => {
                let error = format!(
                    "cannot rename `{}`: {e}; listed under its `.part` name",
                    part.display()
                );
                {
                    let mut status = lock(&self.shared.status);
                    status.errors += 1;
                    status.last_error = Some(error.clone());
                }
                self.log.push(unrenamed(&self.route, &rel, &error));
                (rel.with_file_name(&place.part_name), Some(error))
            }
        };
        let switch = jumped || cuts_seen != cuts_at_open;
        let gap = gap || self.shared.drops.load(Relaxed) != drops_at_open;
        {
            let mut status = lock(&self.shared.status);
            status.segments += 1;
            status.segment = None;
        }
        self.shared.segment_bytes.store(0, Relaxed);
        let keys: Vec<String> = keyframes.iter().map(|k| format!("{k}")).collect();
        let mut event = Event::new(Kind::SegmentClosed);
        event.route = Some(self.route.clone());
        event.error = error;
        event.segment = Some(format!(
            "{{\"path\":{},\"format\":\"ts\",\"start\":{start_unix:.3},\"end\":{:.3},\
             \"duration\":{duration:.3},\"bytes\":{size},\"psi\":{psi},\"inserted\":{inserted},\
             \"switch\":{switch},\"gap\":{gap},\"keyframes\":[{}]}}",
            json_text(&rel.to_string_lossy()),
            end,
            keys.join(",")
        ));
        gst::debug!(CAT, "{}: segment {} closed", self.route, rel.display());
        self.log.push(event);
    }
}

/// The `recording_error` for a segment that could not be renamed into place (or, for `mp4`,
/// finished): the catalog's open row for it goes; the segment is then reported closed under
/// its `.part` name, with the error, so that it is listed and retention deletes it in turn.
pub(super) fn unrenamed(route: &str, rel: &Path, error: &str) -> Event {
    let mut event = Event::new(Kind::RecordingError);
    event.route = Some(route.to_owned());
    event.error = Some(error.to_owned());
    event.segment = Some(format!(
        "{{\"path\":{}}}",
        json_text(&rel.to_string_lossy())
    ));
    event
}

/// Where a segment goes: its directory, held open (see `path::SegmentDir`), and its names.
pub(super) struct Place {
    pub dir: path::SegmentDir,
    /// Relative to the recordings directory, with its extension.
    pub rel: PathBuf,
    /// Its file name, and that of its `.part`, in `dir`.
    pub name: String,
    pub part_name: String,
    /// The `.part` file's full path, to show.
    pub part: PathBuf,
}

impl Place {
    /// Renames the `.part` file into place.
    pub fn commit(&self) -> std::io::Result<()> {
        self.dir.rename(&self.part_name, &self.name)
    }
}

/// `rel.EXT` under `root`, or `rel-1.EXT`, … when taken: its directory made and opened
/// without following a symbolic link.
pub(super) fn place(root: &Path, rel: &Path, ext: &str) -> Result<Place, String> {
    let parent = rel.parent().unwrap_or(Path::new(""));
    let dir = path::SegmentDir::open(root, parent)
        .map_err(|e| format!("cannot open `{}`: {e}", root.join(parent).display()))?;
    let stem = rel
        .file_name()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    for n in 0..100 {
        let name = match n {
            0 => format!("{stem}.{ext}"),
            n => format!("{stem}-{n}.{ext}"),
        };
        let part_name = format!("{name}.part");
        if !dir.exists(&name) && !dir.exists(&part_name) {
            let rel = rel.with_file_name(&name);
            let part = root.join(parent).join(&part_name);
            return Ok(Place {
                dir,
                rel,
                name,
                part_name,
                part,
            });
        }
    }
    Err(format!(
        "no free name for `{}` under `{}`",
        rel.display(),
        root.display()
    ))
}

/// `text` as a JSON string.
pub(super) fn json_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
