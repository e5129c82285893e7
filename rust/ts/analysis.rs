//! ETSI TR 101 290 analysis of one input's transport stream, as it arrives: before the hub's
//! switch and splicer, so a failover (castway's own cut on the outputs) never shows here.
//!
//! Priority 1: TS_sync_loss, Sync_byte_error, PAT_error (the 1.3.a reading: PAT *sections*
//! every 0.5 s, nothing else on PID 0, never scrambled), Continuity_count_error, PMT_error
//! (1.5.a: a PMT section every 0.5 s on each PMT PID of the PAT, never scrambled) and PID_error
//! (a video, audio or PCR PID the PMT names that does not occur for 5 s). Priority 2, those that
//! need no payload decoding: Transport_error, CRC_error (PAT, CAT, PMT, NIT, SDT/BAT, EIT, TOT),
//! PCR_repetition_error and PCR_discontinuity_indicator_error, PTS_error (700 ms). And, from
//! priority 3, Unreferenced_PID (3.4.a: a PID no PMT or CAT names, 0.5 s after the PMTs are
//! known; the CAT's CA descriptors name a scrambled stream's EMM PIDs).
//! Besides the checks it keeps what the stream carries: its programs, each PID with its stream
//! type and bitrate, and for video the codec, size and frame rate its SPS declares.
//!
//! Time is the hub's clock in 90 kHz ticks (`now`, the arrival time of a buffer), passed in by
//! the caller, so the unit tests run on a fake clock. The checks judge what *arrives*:
//!
//! - A time limit (PAT, PMT, PID, PTS, PCR) has lapsed only when data arrived after it without
//!   the awaited table, PID or timestamp: for PAT, PMT, PID and PCR errors data of the input,
//!   for a PTS error packets of that PID. A silent input therefore starts no condition (it is lost, the
//!   switch's business, not a TR 101 290 cascade); its conditions stay as they were.
//! - After a silence of more than 1 s, and after TS sync is regained, every time limit counts
//!   from the return of the data. A new connection (`reset`) starts over and clears every
//!   condition.
//! - A lapse is dated from its deadline (the PAT was due 0.5 s after the last one) and clears
//!   when the awaited thing arrives. Errors of one instant (a continuity break, a CRC, a PCR
//!   step) keep their condition active until 1 s passes without another.
//! - PCR steps are judged on the PCR values, not on arrival: a network delivers in bursts of
//!   far more than 40 ms. A step over 100 ms counts as a repetition error only if the PCRs also
//!   arrived about that far apart (a jump of the clock is a discontinuity, not a gap).
//! - PCRs that do not come at all (a PCR PID that stops carrying them, or never does) are a
//!   lapse: data of the input arriving more than 40 ms + the 250 ms delivery allowance after
//!   the last PCR. Its clock starts over when data comes back after a pause longer than that
//!   allowance (a pause of the delivery, during which no PCR could arrive, is not the stream's
//!   fault), so a sender's stall followed by a burst shows nothing; the PCR that comes clears
//!   the lapse (the gap it closes is not counted again).
//!
//! Per packet this reads the 4-byte header (and the adaptation field's flags and PCR when
//! there is one), looks the PID up in a table, checks its continuity counter and counts it.
//! PSI PIDs are reassembled and CRC-checked; the first packet of a video or audio PES is read
//! for its timestamps (and video for its SPS). Everything else happens when a deadline is due,
//! a few times per second.

use std::collections::VecDeque;

use serde::Serialize;

use super::psi::Codec;
use super::section::{crc32, Sections};
use super::sps::{params_in, VideoParams};
use super::{pcr_base, pes_timestamp_offsets, pid as pid_of, read_ts, PACKET_SIZE, PTS_WRAP};

/// 90 kHz ticks per millisecond.
const MS: u64 = 90;
/// A PAT section at least this often (TR 101 290 1.3.a).
pub const PAT_LIMIT: u64 = 500 * MS;
/// A PMT section on each PMT PID at least this often (1.5.a).
pub const PMT_LIMIT: u64 = 500 * MS;
/// A referenced video, audio or PCR PID at least this often (1.6 leaves the period to the
/// user; 5 s as TSDuck and most analysers default to).
pub const PID_LIMIT: u64 = 5_000 * MS;
/// A PTS on each video and audio PID at least this often (2.5).
pub const PTS_LIMIT: u64 = 700 * MS;
/// A PID no PMT names for this long is unreferenced (3.4.a).
pub const UNREFERENCED_AFTER: u64 = 500 * MS;
/// PCRs at least this often (2.3a) ...
const PCR_REPETITION: u64 = 40 * MS;
/// ... and steps of 0 to this much without a discontinuity_indicator (2.3b).
const PCR_DISCONTINUITY: u64 = 100 * MS;
/// How far network delivery may move a PCR's arrival (ffmpeg -re bursts up to ~250 ms).
const PCR_ARRIVAL_JITTER: u64 = 250 * MS;
/// No PCR arriving for this long while data does is a lapse of 2.3a.
const PCR_DUE: u64 = PCR_REPETITION + PCR_ARRIVAL_JITTER;
/// An error of one instant keeps its condition active this long.
pub const HOLD: u64 = 1_000 * MS;
/// No data for this long is a silence: time limits count from the data's return.
pub const SILENCE: u64 = 1_000 * MS;
/// Per-PID bitrates are measured over this window.
const RATE_WINDOW: u64 = 1_000 * MS;
/// Consecutive good sync bytes that (re)acquire sync; two bad ones in a row lose it (the
/// hysteresis TR 101 290 suggests for 1.1).
const SYNC_ACQUIRE: u32 = 5;
/// Condition changes kept for `changes_after` (a consumer polling once a second misses none
/// unless more happen in that second) ...
const KEPT_CHANGES: usize = 128;
/// ... and the last of them the stats show as `history`.
const HISTORY: usize = 32;
/// PIDs tracked per input (the PID table is one byte per PID).
const MAX_PIDS: usize = 254;
const NO_SLOT: u8 = u8::MAX;
const NULL_PID: u16 = 0x1fff;

/// The checks, in TR 101 290's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    TsSyncLoss,
    SyncByteError,
    PatError,
    ContinuityCountError,
    PmtError,
    PidError,
    TransportError,
    CrcError,
    PcrRepetitionError,
    PcrDiscontinuityIndicatorError,
    PtsError,
    UnreferencedPid,
}

impl Check {
    pub const ALL: [Check; 12] = [
        Check::TsSyncLoss,
        Check::SyncByteError,
        Check::PatError,
        Check::ContinuityCountError,
        Check::PmtError,
        Check::PidError,
        Check::TransportError,
        Check::CrcError,
        Check::PcrRepetitionError,
        Check::PcrDiscontinuityIndicatorError,
        Check::PtsError,
        Check::UnreferencedPid,
    ];

    /// TR 101 290's name, lower case: the key in the stats and the metric's label.
    pub fn name(self) -> &'static str {
        match self {
            Check::TsSyncLoss => "ts_sync_loss",
            Check::SyncByteError => "sync_byte_error",
            Check::PatError => "pat_error",
            Check::ContinuityCountError => "continuity_count_error",
            Check::PmtError => "pmt_error",
            Check::PidError => "pid_error",
            Check::TransportError => "transport_error",
            Check::CrcError => "crc_error",
            Check::PcrRepetitionError => "pcr_repetition_error",
            Check::PcrDiscontinuityIndicatorError => "pcr_discontinuity_indicator_error",
            Check::PtsError => "pts_error",
            Check::UnreferencedPid => "unreferenced_pid",
        }
    }

    pub fn priority(self) -> u8 {
        match self {
            Check::TsSyncLoss
            | Check::SyncByteError
            | Check::PatError
            | Check::ContinuityCountError
            | Check::PmtError
            | Check::PidError => 1,
            Check::UnreferencedPid => 3,
            _ => 2,
        }
    }
}

/// How often each check failed since the input's analysis began. An error of one instant
/// counts each occurrence (each continuity break, each bad CRC); a lapse counts once however
/// long it lasts (the PAT missing for 3 s is one PAT error).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ErrorCounts {
    pub ts_sync_loss: u64,
    pub sync_byte_error: u64,
    pub pat_error: u64,
    pub continuity_count_error: u64,
    pub pmt_error: u64,
    pub pid_error: u64,
    pub transport_error: u64,
    pub crc_error: u64,
    pub pcr_repetition_error: u64,
    pub pcr_discontinuity_indicator_error: u64,
    pub pts_error: u64,
    pub unreferenced_pid: u64,
}

impl ErrorCounts {
    fn from_array(c: &[u64; Check::ALL.len()]) -> ErrorCounts {
        let n = |k: Check| c[k as usize];
        ErrorCounts {
            ts_sync_loss: n(Check::TsSyncLoss),
            sync_byte_error: n(Check::SyncByteError),
            pat_error: n(Check::PatError),
            continuity_count_error: n(Check::ContinuityCountError),
            pmt_error: n(Check::PmtError),
            pid_error: n(Check::PidError),
            transport_error: n(Check::TransportError),
            crc_error: n(Check::CrcError),
            pcr_repetition_error: n(Check::PcrRepetitionError),
            pcr_discontinuity_indicator_error: n(Check::PcrDiscontinuityIndicatorError),
            pts_error: n(Check::PtsError),
            unreferenced_pid: n(Check::UnreferencedPid),
        }
    }
}

/// A condition in force: a check failing now, for one PID or (pid None) the whole stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActiveCondition {
    pub check: &'static str,
    pub priority: u8,
    pub pid: Option<u16>,
    /// Unix time it started.
    pub since: f64,
}

/// A condition starting or clearing: what an event stream reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConditionChange {
    /// Counts up from 1 over the input's life (across reconnections).
    pub seq: u64,
    /// Unix time of the change (a lapse starts at its deadline).
    pub at: f64,
    pub check: &'static str,
    pub priority: u8,
    pub pid: Option<u16>,
    /// `started` or `cleared`.
    pub change: &'static str,
}

/// One elementary stream of a program, as its PMT lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamInfo {
    pub pid: u16,
    pub stream_type: u8,
    /// `video`, `audio` or `data`.
    pub kind: &'static str,
    pub codec: Option<&'static str>,
    /// ISO 639 language, if the PMT gives one.
    pub language: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProgramInfo {
    pub number: u16,
    pub pmt_pid: u16,
    /// None until the PMT arrived, or when it names no PCR PID.
    pub pcr_pid: Option<u16>,
    pub streams: Vec<StreamInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PidInfo {
    pub pid: u16,
    /// `pat`, `cat`, `pmt`, `si`, `video`, `audio`, `data`, `pcr`, `ecm`, `emm`, `null`, or
    /// `unreferenced` (no table names it).
    pub kind: &'static str,
    pub stream_type: Option<u8>,
    pub codec: Option<&'static str>,
    pub program: Option<u16>,
    pub packets: u64,
    pub bitrate_bps: u64,
    pub cc_errors: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VideoInfo {
    pub pid: u16,
    pub codec: &'static str,
    /// From the SPS (H.264, H.265), once one arrived.
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Frames per second: from the SPS's timing when it has one, else from the PES timestamps.
    pub frame_rate: Option<f64>,
    pub profile: Option<&'static str>,
    pub level: Option<String>,
    pub interlaced: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AudioInfo {
    pub pid: u16,
    pub codec: Option<&'static str>,
    pub language: Option<String>,
}

/// What the analysis of one input shows (`analysis` in an input's stats).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AnalysisStats {
    /// In TS sync now (false before the first packets and while sync is lost).
    pub sync: bool,
    pub errors: ErrorCounts,
    /// The conditions in force, oldest first.
    pub active: Vec<ActiveCondition>,
    pub programs: Vec<ProgramInfo>,
    pub pids: Vec<PidInfo>,
    pub video: Vec<VideoInfo>,
    pub audio: Vec<AudioInfo>,
    /// The last condition changes, oldest first.
    pub history: Vec<ConditionChange>,
    /// Condition changes the event log never got: more than the 128 kept happened between two
    /// looks of the route's control thread (once a second). The route fills it in; the
    /// analysis alone says 0.
    pub changes_missed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Unreferenced,
    Pat,
    Cat,
    Si,
    Pmt,
    Video,
    Audio,
    Data,
    Pcr,
    Ecm,
    Emm,
    Null,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Unreferenced => "unreferenced",
            Kind::Pat => "pat",
            Kind::Cat => "cat",
            Kind::Si => "si",
            Kind::Pmt => "pmt",
            Kind::Video => "video",
            Kind::Audio => "audio",
            Kind::Data => "data",
            Kind::Pcr => "pcr",
            Kind::Ecm => "ecm",
            Kind::Emm => "emm",
            Kind::Null => "null",
        }
    }

    /// What a PID is by its number alone.
    fn of_pid(pid: u16) -> Kind {
        match pid {
            0 => Kind::Pat,
            1 => Kind::Cat,
            // 0x1ffb: ATSC's PSIP base PID.
            2..=0x1f | 0x1ffb => Kind::Si,
            NULL_PID => Kind::Null,
            _ => Kind::Unreferenced,
        }
    }
}

/// Whether the sections of this PID are CRC-checked: PAT, CAT, NIT, SDT/BAT, EIT, TOT (and
/// each PMT PID, by its kind).
fn crc_checked(pid: u16) -> bool {
    matches!(pid, 0x00 | 0x01 | 0x10 | 0x11 | 0x12 | 0x14)
}

/// What a PMT's stream type (and, for private data, its descriptors) says a stream is.
fn classify(stream_type: u8, descriptors: &[u8]) -> (Kind, Option<&'static str>) {
    use Kind::{Audio, Data, Video};
    let (kind, codec) = match stream_type {
        0x01 => (Video, "mpeg1video"),
        0x02 => (Video, "mpeg2video"),
        0x10 => (Video, "mpeg4"),
        0x1b | 0x20 => (Video, "h264"),
        0x24 => (Video, "hevc"),
        0x33 => (Video, "vvc"),
        0x42 => (Video, "cavs"),
        0xd1 => (Video, "dirac"),
        0xea => (Video, "vc1"),
        0x03 | 0x04 => (Audio, "mpeg_audio"),
        0x0f => (Audio, "aac"),
        0x11 => (Audio, "aac_latm"),
        0x81 => (Audio, "ac3"),
        0x87 => (Audio, "eac3"),
        0x86 => (Data, "scte35"),
        0x15 => (Data, "id3"),
        0x06 => {
            let found = descriptors_of(descriptors).find_map(|(tag, body)| match tag {
                0x6a => Some((Audio, "ac3")),
                0x7a => Some((Audio, "eac3")),
                0x7b => Some((Audio, "dts")),
                0x7c => Some((Audio, "aac")),
                0x56 => Some((Data, "teletext")),
                0x59 => Some((Data, "dvb_subtitle")),
                0x05 => match body.get(..4)? {
                    b"Opus" => Some((Audio, "opus")),
                    b"AC-3" => Some((Audio, "ac3")),
                    b"EAC3" => Some((Audio, "eac3")),
                    b"KLVA" => Some((Data, "klv")),
                    _ => None,
                },
                _ => None,
            });
            return found.map_or((Data, None), |(k, c)| (k, Some(c)));
        }
        _ => return (Data, None),
    };
    (kind, Some(codec))
}

/// The (tag, body) of each descriptor in a descriptor loop.
fn descriptors_of(mut d: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (&tag, rest) = d.split_first()?;
        let (&len, rest) = rest.split_first()?;
        let body = rest.get(..usize::from(len))?;
        d = &rest[usize::from(len)..];
        Some((tag, body))
    })
}

fn language(descriptors: &[u8]) -> Option<String> {
    descriptors_of(descriptors)
        .find(|&(tag, body)| tag == 0x0a && body.len() >= 3)
        .map(|(_, body)| String::from_utf8_lossy(&body[..3]).into_owned())
        .filter(|l| l.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// The PIDs the CA descriptors of a loop name: ECM PIDs in a PMT, EMM PIDs in the CAT.
fn ca_pids(descriptors: &[u8]) -> impl Iterator<Item = u16> + '_ {
    descriptors_of(descriptors)
        .filter(|&(tag, body)| tag == 0x09 && body.len() >= 4)
        .map(|(_, body)| u16::from_be_bytes([body[2] & 0x1f, body[3]]))
}

/// One stream of a program, as the analysis keeps it.
#[derive(Debug, Clone, PartialEq)]
struct Stream {
    info: StreamInfo,
    kind: Kind,
}

#[derive(Debug)]
struct Program {
    number: u16,
    pmt_pid: u16,
    /// When the PAT first listed it (the PMT is due from then).
    listed_at: u64,
    pmt_seen: Option<u64>,
    /// The last PMT section, to tell a change; empty until one arrived.
    pmt: Vec<u8>,
    pcr_pid: Option<u16>,
    streams: Vec<Stream>,
    ecm_pids: Vec<u16>,
}

/// Flags of a PID's lapses in force (mirrors `Analysis::active`, for a cheap per-packet test).
const MISSING_PID: u8 = 1;
const MISSING_PTS: u8 = 2;
const UNREFERENCED: u8 = 4;
const MISSING_PCR: u8 = 8;

/// Frame durations kept per video PID to tell its frame rate from its timestamps.
const STEPS: usize = 8;

#[derive(Debug)]
struct PidSlot {
    pid: u16,
    kind: Kind,
    stream_type: Option<u8>,
    codec: Option<&'static str>,
    program: Option<u16>,
    /// A program's PCR PID: its PCRs are checked.
    pcr: bool,
    packets: u64,
    packets_at_rate: u64,
    bitrate_bps: u64,
    cc_errors: u64,
    last_cc: Option<u8>,
    /// The last packet was a duplicate (allowed once).
    duplicate: bool,
    /// Arrival of its latest packet.
    seen: Option<u64>,
    /// Arrival of the first packet after it was absent for a silence.
    run_start: u64,
    /// When a PMT first named it (or named it the PCR PID).
    listed_at: u64,
    last_pts_at: Option<u64>,
    /// The last PCR (90 kHz) and its arrival.
    last_pcr: Option<(u64, u64)>,
    missing: u8,
    sections: Option<Box<Sections>>,
    video: Option<VideoParams>,
    last_dts: Option<u64>,
    steps: [u32; STEPS],
    step_count: usize,
}

impl PidSlot {
    fn new(pid: u16, now: u64) -> PidSlot {
        PidSlot {
            pid,
            kind: Kind::of_pid(pid),
            stream_type: None,
            codec: None,
            program: None,
            pcr: false,
            packets: 0,
            packets_at_rate: 0,
            bitrate_bps: 0,
            cc_errors: 0,
            last_cc: None,
            duplicate: false,
            seen: None,
            run_start: now,
            listed_at: now,
            last_pts_at: None,
            last_pcr: None,
            missing: 0,
            sections: crc_checked(pid).then(Box::default),
            video: None,
            last_dts: None,
            steps: [0; STEPS],
            step_count: 0,
        }
    }

    /// Whether a PID error applies: a video, audio or PCR PID a PMT names.
    fn watched(&self) -> bool {
        matches!(self.kind, Kind::Video | Kind::Audio | Kind::Pcr) || self.pcr
    }

    /// Checks a packet's continuity counter (ISO/IEC 13818-1 2.4.3.3): with a payload it counts
    /// up by one, or repeats once (a duplicate); without, it stays; a discontinuity_indicator
    /// starts the count over.
    fn continuity(&mut self, cc: u8, has_payload: bool, discontinuity: bool) -> bool {
        let ok = match self.last_cc {
            None => true,
            Some(_) if discontinuity => true,
            Some(last) if has_payload => {
                if cc == (last + 1) & 0x0f {
                    self.duplicate = false;
                    true
                } else if cc == last && !self.duplicate {
                    self.duplicate = true;
                    true
                } else {
                    false
                }
            }
            Some(last) => cc == last,
        };
        if !ok || discontinuity {
            self.duplicate = false;
        }
        if has_payload || self.last_cc.is_none() || discontinuity {
            self.last_cc = Some(cc);
        }
        ok
    }

    /// The frame rate its PES timestamps show: the median of the last frame durations.
    fn measured_rate(&self) -> Option<f64> {
        if self.step_count < 3 {
            return None;
        }
        let mut steps: Vec<u32> = self.steps[..self.step_count.min(STEPS)].to_vec();
        steps.sort_unstable();
        let step = steps[steps.len() / 2];
        (step > 0).then(|| (90_000.0 / f64::from(step) * 1000.0).round() / 1000.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SyncState {
    /// Counting good sync bytes towards acquisition (after a start or reset).
    Acquiring(u32),
    InSync,
    /// Counting good sync bytes towards reacquisition.
    Lost(u32),
}

#[derive(Debug)]
struct Condition {
    check: Check,
    pid: Option<u16>,
    since: u64,
    /// A lapse in force (cleared by what was missing arriving).
    missing: bool,
    /// An error of one instant holds it until then.
    held_until: u64,
}

/// The analysis of one input. Owned by the input's hub feed; fed on its streaming thread.
pub struct Analysis {
    /// Unix time of tick 0 of the clock `now` is read on.
    unix_epoch: f64,
    /// PID → index into `pids` (`NO_SLOT`: not tracked); made at the first packet.
    index: Option<Box<[u8; 8192]>>,
    pids: Vec<PidSlot>,
    /// Packets of PIDs beyond `MAX_PIDS`, not analysed.
    untracked: u64,
    programs: Vec<Program>,
    /// The last PAT section, to tell a change; empty until one arrived.
    pat: Vec<u8>,
    /// The last CAT section, likewise, and the EMM PIDs it names.
    cat: Vec<u8>,
    emm_pids: Vec<u16>,
    pat_seen: Option<u64>,
    /// When every program of the PAT had its PMT (unreferenced PIDs are judged from then).
    psi_complete_at: Option<u64>,
    sync: SyncState,
    /// Arrival of the latest packet.
    last_any: Option<u64>,
    /// When data last came back after a silence, a reset or a loss of sync.
    resumed: u64,
    /// When data last came back after a pause longer than `PCR_ARRIVAL_JITTER` (PCRs are due
    /// from then at the latest).
    flowing_since: u64,
    counts: [u64; Check::ALL.len()],
    active: Vec<Condition>,
    history: VecDeque<ConditionChange>,
    seq: u64,
    /// When `tick` must next look at the deadlines.
    next_eval: u64,
    /// When per-PID bitrates were last measured.
    rate_at: Option<u64>,
}

impl std::fmt::Debug for Analysis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analysis")
            .field("pids", &self.pids.len())
            .field("sync", &self.sync)
            .field("counts", &self.counts)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

impl Default for Analysis {
    fn default() -> Self {
        Analysis::new(0.0)
    }
}

impl Analysis {
    /// `unix_epoch`: the Unix time of tick 0 of the clock the `now`s are read on.
    pub fn new(unix_epoch: f64) -> Analysis {
        Analysis {
            unix_epoch,
            index: None,
            pids: Vec::new(),
            untracked: 0,
            programs: Vec::new(),
            pat: Vec::new(),
            cat: Vec::new(),
            emm_pids: Vec::new(),
            pat_seen: None,
            psi_complete_at: None,
            sync: SyncState::Acquiring(0),
            last_any: None,
            resumed: 0,
            flowing_since: 0,
            counts: [0; Check::ALL.len()],
            active: Vec::new(),
            history: VecDeque::with_capacity(KEPT_CHANGES),
            seq: 0,
            next_eval: 0,
            rate_at: None,
        }
    }

    /// A new connection: the stream starts over. Every condition clears (dated at the last
    /// data of the old connection); counts and history stay.
    pub fn reset(&mut self) {
        let at = self.last_any.unwrap_or(0);
        for c in std::mem::take(&mut self.active) {
            self.record(c.check, c.pid, at, false);
        }
        if let Some(index) = &mut self.index {
            index.fill(NO_SLOT);
        }
        self.pids.clear();
        self.programs.clear();
        self.pat.clear();
        self.cat.clear();
        self.emm_pids.clear();
        self.pat_seen = None;
        self.psi_complete_at = None;
        self.sync = SyncState::Acquiring(0);
        self.last_any = None;
        self.next_eval = 0;
        self.rate_at = None;
    }

    /// The condition changes numbered above `seq`, oldest first (of the last 128).
    pub fn changes_after(&self, seq: u64) -> Vec<ConditionChange> {
        self.history
            .iter()
            .filter(|c| c.seq > seq)
            .cloned()
            .collect()
    }

    // --- sync -------------------------------------------------------------------------------

    /// A byte that should have been a sync byte was not (reported by the aligner).
    pub fn sync_byte_error(&mut self, now: u64) {
        if self.sync == SyncState::InSync {
            self.occur(Check::SyncByteError, None, now);
        }
    }

    /// Sync is lost: a second bad sync byte in a row, or no sync at all (the aligner searches).
    pub fn sync_lost(&mut self, now: u64) {
        if !matches!(self.sync, SyncState::Lost(_)) {
            self.lapse(Check::TsSyncLoss, None, now);
        }
        self.sync = SyncState::Lost(0);
    }

    fn sync_good(&mut self, now: u64) {
        let (n, lost) = match self.sync {
            SyncState::InSync => return,
            SyncState::Acquiring(n) => (n + 1, false),
            SyncState::Lost(n) => (n + 1, true),
        };
        if n < SYNC_ACQUIRE {
            self.sync = if lost {
                SyncState::Lost(n)
            } else {
                SyncState::Acquiring(n)
            };
            return;
        }
        self.sync = SyncState::InSync;
        self.resumed = now;
        if lost {
            self.recover(Check::TsSyncLoss, None, now);
        }
    }

    // --- per packet ---------------------------------------------------------------------------

    /// One whole, aligned packet that arrived at `now`.
    pub fn packet(&mut self, p: &[u8], now: u64) {
        debug_assert_eq!(p.len(), PACKET_SIZE);
        if self
            .last_any
            .is_none_or(|t| now.saturating_sub(t) > SILENCE)
        {
            self.resumed = now;
            self.next_eval = self.next_eval.min(now + UNREFERENCED_AFTER);
        }
        if self
            .last_any
            .is_none_or(|t| now.saturating_sub(t) > PCR_ARRIVAL_JITTER)
        {
            self.flowing_since = now;
        }
        self.last_any = Some(now);
        self.sync_good(now);
        if p[1] & 0x80 != 0 {
            self.occur(Check::TransportError, None, now);
        }
        let pid = pid_of(p) as u16;
        let Some(i) = self.slot(pid, now) else {
            self.untracked += 1;
            return;
        };
        let in_sync = self.sync == SyncState::InSync;
        let resumed = self.resumed;
        let s = &mut self.pids[i];
        s.packets += 1;
        if s.seen.is_none_or(|t| now.saturating_sub(t) > SILENCE) {
            s.run_start = now;
            self.next_eval = self.next_eval.min(now + UNREFERENCED_AFTER);
        }
        let previous = s.seen.replace(now);
        if pid == NULL_PID {
            return;
        }
        let afc = (p[3] >> 4) & 3;
        if afc == 0 {
            return; // reserved: no payload, no adaptation field
        }
        let (has_af, has_payload) = (afc & 2 != 0, afc & 1 != 0);
        let discontinuity = has_af && p[4] > 0 && p[5] & 0x80 != 0;
        let cc_ok = s.continuity(p[3] & 0x0f, has_payload, discontinuity);
        if !cc_ok {
            s.cc_errors += 1;
            if let Some(sections) = &mut s.sections {
                sections.reset();
            }
        }
        // A referenced PID that comes back after its limit: its lapse, from its deadline.
        if s.watched() {
            let due = previous
                .unwrap_or(s.listed_at)
                .max(s.listed_at)
                .max(resumed)
                + PID_LIMIT;
            if s.missing & MISSING_PID != 0 || (in_sync && now > due) {
                s.missing &= !MISSING_PID;
                self.lapse_and_recover(Check::PidError, Some(pid), due, now, in_sync);
            }
        }
        if !cc_ok {
            self.occur(Check::ContinuityCountError, Some(pid), now);
        }
        let s = &mut self.pids[i];
        let kind = s.kind;
        // Scrambled at TS level, a PES header cannot be read: its PTS is not judged.
        let scrambled = p[3] & 0xc0 != 0;
        if matches!(kind, Kind::Video | Kind::Audio) && !scrambled {
            // PTS_error: packets of the PID keep coming without a PTS.
            let due = s.last_pts_at.unwrap_or(0).max(s.run_start).max(resumed) + PTS_LIMIT;
            if in_sync && s.missing & MISSING_PTS == 0 && now > due {
                s.missing |= MISSING_PTS;
                self.lapse(Check::PtsError, Some(pid), due);
            }
        } else if kind == Kind::Unreferenced && in_sync && s.missing & UNREFERENCED == 0 {
            if let Some(complete) = self.psi_complete_at {
                let due = s.run_start.max(resumed).max(complete) + UNREFERENCED_AFTER;
                if now > due {
                    s.missing |= UNREFERENCED;
                    self.lapse(Check::UnreferencedPid, Some(pid), due);
                }
            }
        }
        if has_af && p[4] >= 7 && p[5] & 0x10 != 0 && self.pids[i].pcr {
            if let Some(pcr) = pcr_base(p) {
                self.pcr(i, pcr, discontinuity, now);
            }
        }
        let pusi = p[1] & 0x40 != 0;
        match kind {
            Kind::Video | Kind::Audio if pusi && has_payload && !scrambled => {
                self.pes_start(i, p, now)
            }
            Kind::Pat | Kind::Pmt if scrambled => {
                let check = if kind == Kind::Pat {
                    Check::PatError
                } else {
                    Check::PmtError
                };
                self.occur(check, (kind == Kind::Pmt).then_some(pid), now);
            }
            _ => {}
        }
        if let Some(mut sections) = self.pids[i].sections.take() {
            if !scrambled {
                sections.push(p, |s| self.section(pid, s, now));
            }
            if let Some(slot) = self.pids.get_mut(i).filter(|s| s.pid == pid) {
                slot.sections = Some(sections);
            }
        }
    }

    /// The slot of `pid`, made at its first packet (None: the table is full).
    fn slot(&mut self, pid: u16, now: u64) -> Option<usize> {
        let index = self.index.get_or_insert_with(|| Box::new([NO_SLOT; 8192]));
        match index[usize::from(pid)] {
            NO_SLOT if self.pids.len() < MAX_PIDS => {
                index[usize::from(pid)] = self.pids.len() as u8;
                self.pids.push(PidSlot::new(pid, now));
                Some(self.pids.len() - 1)
            }
            NO_SLOT => None,
            i => Some(usize::from(i)),
        }
    }

    /// The first packet of a video or audio PES: its PTS (PTS_error), and for video its
    /// timestamps (the frame rate) and SPS.
    fn pes_start(&mut self, i: usize, p: &[u8], now: u64) {
        let (pts, dts) = pes_timestamp_offsets(p);
        let s = &mut self.pids[i];
        let pid = s.pid;
        if let Some(at) = pts {
            s.last_pts_at = Some(now);
            if s.missing & MISSING_PTS != 0 {
                s.missing &= !MISSING_PTS;
                self.recover(Check::PtsError, Some(pid), now);
            }
            let s = &mut self.pids[i];
            if s.kind == Kind::Video {
                let ts = read_ts(&p[dts.unwrap_or(at)..]);
                if let Some(last) = s.last_dts.replace(ts) {
                    let step = (ts + PTS_WRAP - last) % PTS_WRAP;
                    // A frame of 1 to 120 fps; anything else is a jump, not a frame.
                    if (750..=90_000).contains(&step) {
                        s.steps[s.step_count % STEPS] = step as u32;
                        s.step_count += 1;
                    }
                }
            }
        }
        let s = &mut self.pids[i];
        let codec = match s.codec {
            Some("h264") => Codec::H264,
            Some("hevc") => Codec::Hevc,
            _ => return,
        };
        if let Some(v) = params_in(p, codec) {
            s.video = Some(v);
        }
    }

    fn pcr(&mut self, i: usize, pcr: u64, discontinuity: bool, now: u64) {
        let s = &mut self.pids[i];
        let pid = s.pid;
        let previous = s.last_pcr.replace((pcr, now));
        // PCRs that had stopped come again: their lapse clears, and the gap it covered is
        // not counted a second time below.
        let lapsed = s.missing & MISSING_PCR != 0;
        if lapsed {
            s.missing &= !MISSING_PCR;
            self.recover(Check::PcrRepetitionError, Some(pid), now);
        }
        self.next_eval = self.next_eval.min(now + PCR_DUE + 1);
        let Some((last, at)) = previous else {
            return;
        };
        if discontinuity || at < self.resumed {
            return;
        }
        let step = (pcr + PTS_WRAP - last) % PTS_WRAP;
        let backwards = step >= PTS_WRAP / 2;
        if backwards || step > PCR_DISCONTINUITY {
            self.occur(Check::PcrDiscontinuityIndicatorError, Some(pid), now);
        }
        let apart = now.saturating_sub(at) + PCR_ARRIVAL_JITTER;
        if !lapsed
            && !backwards
            && step > PCR_REPETITION
            && (step <= PCR_DISCONTINUITY || apart >= step)
        {
            self.occur(Check::PcrRepetitionError, Some(pid), now);
        }
    }

    // --- PSI ----------------------------------------------------------------------------------

    fn section(&mut self, pid: u16, s: &[u8], now: u64) {
        let table_id = s[0];
        let long = s[1] & 0x80 != 0;
        // Long sections carry a CRC_32, and so does the TOT (table 0x73) though it is short.
        if (long || table_id == 0x73) && s.len() >= 4 && crc32(s) != 0 {
            self.occur(Check::CrcError, Some(pid), now);
            return;
        }
        if pid == 0 {
            if table_id != 0x00 || !long || s.len() < 12 {
                self.occur(Check::PatError, None, now);
                return;
            }
            self.pat_section(s, now);
        } else if pid == 1 {
            if table_id == 0x01 && long && s.len() >= 12 {
                self.cat_section(s, now);
            }
        } else if table_id == 0x02 && long && s.len() >= 16 {
            self.pmt_section(pid, s, now);
        }
    }

    fn pat_section(&mut self, s: &[u8], now: u64) {
        let due = self.pat_seen.unwrap_or(0).max(self.resumed) + PAT_LIMIT;
        let in_sync = self.sync == SyncState::InSync;
        self.lapse_and_recover(Check::PatError, None, due, now, in_sync);
        self.pat_seen = Some(now);
        if self.pat == s {
            return;
        }
        self.pat = s.to_vec();
        let listed: Vec<(u16, u16)> = s[8..s.len() - 4]
            .chunks_exact(4)
            .map(|e| {
                (
                    u16::from_be_bytes([e[0], e[1]]),
                    u16::from_be_bytes([e[2] & 0x1f, e[3]]),
                )
            })
            .filter(|&(number, _)| number != 0)
            .collect();
        let old = std::mem::take(&mut self.programs);
        for p in &old {
            let kept = listed.contains(&(p.number, p.pmt_pid));
            let shared = listed.iter().any(|&(_, pmt)| pmt == p.pmt_pid);
            if !kept && !shared {
                self.recover(Check::PmtError, Some(p.pmt_pid), now);
            }
        }
        let mut old = old;
        self.programs = listed
            .into_iter()
            .map(|(number, pmt_pid)| {
                match old
                    .iter()
                    .position(|p| p.number == number && p.pmt_pid == pmt_pid)
                {
                    Some(i) => old.swap_remove(i),
                    None => Program {
                        number,
                        pmt_pid,
                        listed_at: now,
                        pmt_seen: None,
                        pmt: Vec::new(),
                        pcr_pid: None,
                        streams: Vec::new(),
                        ecm_pids: Vec::new(),
                    },
                }
            })
            .collect();
        self.layout_changed(now);
    }

    /// The CAT: its CA descriptors name the EMM PIDs of a scrambled stream.
    fn cat_section(&mut self, s: &[u8], now: u64) {
        if self.cat == s {
            return;
        }
        self.cat = s.to_vec();
        self.emm_pids = ca_pids(&s[8..s.len() - 4]).collect();
        self.layout_changed(now);
    }

    fn pmt_section(&mut self, pid: u16, s: &[u8], now: u64) {
        let number = u16::from_be_bytes([s[3], s[4]]);
        let Some(k) = self
            .programs
            .iter()
            .position(|p| p.pmt_pid == pid && p.number == number)
        else {
            return;
        };
        let in_sync = self.sync == SyncState::InSync;
        let prog = &mut self.programs[k];
        let due = prog
            .pmt_seen
            .unwrap_or(0)
            .max(prog.listed_at)
            .max(self.resumed)
            + PMT_LIMIT;
        prog.pmt_seen = Some(now);
        let changed = prog.pmt != s;
        self.lapse_and_recover(Check::PmtError, Some(pid), due, now, in_sync);
        if !changed {
            return;
        }
        let prog = &mut self.programs[k];
        prog.pmt = s.to_vec();
        let pcr_pid = u16::from_be_bytes([s[8] & 0x1f, s[9]]);
        prog.pcr_pid = (pcr_pid != NULL_PID).then_some(pcr_pid);
        let info_len = usize::from(u16::from_be_bytes([s[10] & 0x0f, s[11]]));
        let end = s.len() - 4;
        let program_info = s.get(12..(12 + info_len).min(end)).unwrap_or_default();
        prog.ecm_pids = ca_pids(program_info).collect();
        prog.streams.clear();
        let mut i = 12 + info_len;
        while i + 5 <= end {
            let stream_type = s[i];
            let es_pid = u16::from_be_bytes([s[i + 1] & 0x1f, s[i + 2]]);
            let es_len = usize::from(u16::from_be_bytes([s[i + 3] & 0x0f, s[i + 4]]));
            let descriptors = &s[(i + 5).min(end)..(i + 5 + es_len).min(end)];
            let (kind, codec) = classify(stream_type, descriptors);
            prog.ecm_pids.extend(ca_pids(descriptors));
            prog.streams.push(Stream {
                info: StreamInfo {
                    pid: es_pid,
                    stream_type,
                    kind: kind.name(),
                    codec,
                    language: language(descriptors),
                },
                kind,
            });
            i += 5 + es_len;
        }
        self.layout_changed(now);
    }

    /// The PAT, the CAT or a PMT changed: every PID's kind again, slots for the PIDs now named, and
    /// the conditions of PIDs no longer named (or named now) settled.
    fn layout_changed(&mut self, now: u64) {
        let complete = !self.programs.is_empty() && self.programs.iter().all(|p| !p.pmt.is_empty());
        self.psi_complete_at = match (complete, self.psi_complete_at) {
            (true, Some(t)) => Some(t),
            (true, None) => Some(now),
            (false, _) => None,
        };
        let mut named: Vec<u16> = Vec::new();
        for p in &self.programs {
            named.push(p.pmt_pid);
            named.extend(p.streams.iter().map(|s| s.info.pid));
            named.extend(p.pcr_pid);
            named.extend(p.ecm_pids.iter().copied());
        }
        named.extend(self.emm_pids.iter().copied());
        for pid in named {
            if let Some(i) = self.slot(pid, now) {
                // A PID named before it was ever seen is due from now.
                if self.pids[i].seen.is_none() && self.pids[i].kind == Kind::Unreferenced {
                    self.pids[i].listed_at = now;
                }
            }
        }
        for i in 0..self.pids.len() {
            let pid = self.pids[i].pid;
            let mut kind = Kind::of_pid(pid);
            let (mut stream_type, mut codec, mut program, mut pcr) = (None, None, None, false);
            for p in &self.programs {
                if p.pmt_pid == pid {
                    kind = Kind::Pmt;
                    program = Some(p.number);
                }
                if let Some(s) = p.streams.iter().find(|s| s.info.pid == pid) {
                    (kind, stream_type, codec) = (s.kind, Some(s.info.stream_type), s.info.codec);
                    program = Some(p.number);
                }
                if p.pcr_pid == Some(pid) {
                    pcr = true;
                    program = program.or(Some(p.number));
                    if kind == Kind::Unreferenced {
                        kind = Kind::Pcr;
                    }
                }
                if kind == Kind::Unreferenced && p.ecm_pids.contains(&pid) {
                    kind = Kind::Ecm;
                }
            }
            if kind == Kind::Unreferenced && self.emm_pids.contains(&pid) {
                kind = Kind::Emm;
            }
            let s = &mut self.pids[i];
            let was_watched = s.watched();
            let was_unreferenced = s.kind == Kind::Unreferenced;
            if was_unreferenced && kind != Kind::Unreferenced {
                s.listed_at = now;
            }
            if pcr != s.pcr {
                // Its PCRs are judged from now (or no longer).
                s.last_pcr = None;
                s.listed_at = now;
            }
            if kind == Kind::Unreferenced && !was_unreferenced {
                s.run_start = now; // unreferenced from now on
            }
            (s.kind, s.stream_type, s.codec, s.program, s.pcr) =
                (kind, stream_type, codec, program, pcr);
            if matches!(kind, Kind::Pmt) && s.sections.is_none() {
                s.sections = Some(Box::default());
            }
            if !matches!(kind, Kind::Video | Kind::Audio) {
                s.video = None;
            }
            let (missing, watched) = (s.missing, s.watched());
            if was_watched && !watched && missing & MISSING_PID != 0 {
                self.pids[i].missing &= !MISSING_PID;
                self.recover(Check::PidError, Some(pid), now);
            }
            if !matches!(kind, Kind::Video | Kind::Audio) && missing & MISSING_PTS != 0 {
                self.pids[i].missing &= !MISSING_PTS;
                self.recover(Check::PtsError, Some(pid), now);
            }
            if kind != Kind::Unreferenced && missing & UNREFERENCED != 0 {
                self.pids[i].missing &= !UNREFERENCED;
                self.recover(Check::UnreferencedPid, Some(pid), now);
            }
            if !pcr && missing & MISSING_PCR != 0 {
                self.pids[i].missing &= !MISSING_PCR;
                self.recover(Check::PcrRepetitionError, Some(pid), now);
            }
        }
        self.next_eval = 0;
    }

    // --- conditions ---------------------------------------------------------------------------

    fn find(&self, check: Check, pid: Option<u16>) -> Option<usize> {
        self.active
            .iter()
            .position(|c| c.check == check && c.pid == pid)
    }

    fn start(&mut self, check: Check, pid: Option<u16>, at: u64) -> usize {
        match self.find(check, pid) {
            Some(i) => i,
            None => {
                self.active.push(Condition {
                    check,
                    pid,
                    since: at,
                    missing: false,
                    held_until: 0,
                });
                self.record(check, pid, at, true);
                self.active.len() - 1
            }
        }
    }

    /// An error of one instant: counted, and its condition held for `HOLD`.
    fn occur(&mut self, check: Check, pid: Option<u16>, now: u64) {
        self.counts[check as usize] += 1;
        let i = self.start(check, pid, now);
        let c = &mut self.active[i];
        c.held_until = c.held_until.max(now + HOLD);
        self.next_eval = self.next_eval.min(now + HOLD);
    }

    /// A time limit lapsed at `at` (counted once until it recovers).
    fn lapse(&mut self, check: Check, pid: Option<u16>, at: u64) {
        if self
            .find(check, pid)
            .is_some_and(|i| self.active[i].missing)
        {
            return;
        }
        self.counts[check as usize] += 1;
        let i = self.start(check, pid, at);
        self.active[i].missing = true;
    }

    /// What was missing arrived (or no longer matters) at `at`.
    fn recover(&mut self, check: Check, pid: Option<u16>, at: u64) {
        let Some(i) = self.find(check, pid) else {
            return;
        };
        let c = &mut self.active[i];
        if !c.missing {
            return;
        }
        c.missing = false;
        if c.held_until <= at {
            self.active.remove(i);
            self.record(check, pid, at, false);
        }
    }

    /// What was awaited by `due` arrived at `now`: if late (and the stream in sync), its
    /// lapse ran from `due` until now.
    fn lapse_and_recover(
        &mut self,
        check: Check,
        pid: Option<u16>,
        due: u64,
        now: u64,
        in_sync: bool,
    ) {
        if in_sync && now > due {
            self.lapse(check, pid, due);
        }
        self.recover(check, pid, now);
    }

    fn record(&mut self, check: Check, pid: Option<u16>, at: u64, started: bool) {
        self.seq += 1;
        let change = ConditionChange {
            seq: self.seq,
            at: self.unix(at),
            check: check.name(),
            priority: check.priority(),
            pid,
            change: if started { "started" } else { "cleared" },
        };
        if self.history.len() == KEPT_CHANGES {
            self.history.pop_front();
        }
        self.history.push_back(change);
    }

    fn unix(&self, ticks: u64) -> f64 {
        self.unix_epoch + ticks as f64 / 90_000.0
    }

    // --- time ---------------------------------------------------------------------------------

    /// After each buffer (and from the control thread now and then): the deadlines due by
    /// `now`. Cheap when none is.
    pub fn tick(&mut self, now: u64) {
        if now >= self.next_eval {
            self.evaluate(now);
        }
    }

    fn evaluate(&mut self, now: u64) {
        let mut next = u64::MAX;
        // Errors of one instant whose hold ran out.
        let mut i = 0;
        while i < self.active.len() {
            let c = &self.active[i];
            if !c.missing && c.held_until <= now {
                let (check, pid, at) = (c.check, c.pid, c.held_until);
                self.active.remove(i);
                self.record(check, pid, at, false);
                continue;
            }
            if !c.missing {
                next = next.min(c.held_until);
            }
            i += 1;
        }
        // Bitrates per PID.
        match self.rate_at {
            Some(t) if now >= t + RATE_WINDOW => {
                let span = now - t;
                for s in &mut self.pids {
                    let bits = (s.packets - s.packets_at_rate) * (PACKET_SIZE as u64) * 8;
                    s.bitrate_bps = bits * 90_000 / span;
                    s.packets_at_rate = s.packets;
                }
                self.rate_at = Some(now);
            }
            Some(_) => {}
            None => {
                if self.last_any.is_some() {
                    self.rate_at = Some(now);
                }
            }
        }
        if let Some(t) = self.rate_at {
            next = next.min(t + RATE_WINDOW);
        }
        // Lapses proven by data of the input arriving after their deadline.
        if let (SyncState::InSync, Some(proof)) = (self.sync, self.last_any) {
            let resumed = self.resumed;
            let flowing = self.flowing_since.max(resumed);
            let due = self.pat_seen.unwrap_or(0).max(resumed) + PAT_LIMIT;
            self.due(Check::PatError, None, due, proof, &mut next);
            for k in 0..self.programs.len() {
                let p = &self.programs[k];
                let due = p.pmt_seen.unwrap_or(0).max(p.listed_at).max(resumed) + PMT_LIMIT;
                let pid = p.pmt_pid;
                self.due(Check::PmtError, Some(pid), due, proof, &mut next);
            }
            for k in 0..self.pids.len() {
                let s = &self.pids[k];
                let pid = s.pid;
                if s.watched() && s.missing & MISSING_PID == 0 {
                    let due = s.seen.unwrap_or(0).max(s.listed_at).max(resumed) + PID_LIMIT;
                    if proof > due {
                        self.pids[k].missing |= MISSING_PID;
                        self.lapse(Check::PidError, Some(pid), due);
                    } else {
                        next = next.min(due + 1);
                    }
                }
                let s = &self.pids[k];
                if s.pcr && s.missing & MISSING_PCR == 0 {
                    // PCRs that do not come while the input's data does.
                    let last = s.last_pcr.map_or(0, |(_, at)| at);
                    let due = last.max(s.listed_at).max(flowing) + PCR_DUE;
                    if proof > due {
                        self.pids[k].missing |= MISSING_PCR;
                        self.lapse(Check::PcrRepetitionError, Some(pid), due);
                    } else {
                        next = next.min(due + 1);
                    }
                }
                let s = &self.pids[k];
                if s.missing & UNREFERENCED != 0 {
                    // An unreferenced PID that stopped: cleared once it stayed away a silence.
                    let gone = s.seen.unwrap_or(0) + SILENCE;
                    if proof > gone {
                        self.pids[k].missing &= !UNREFERENCED;
                        self.recover(Check::UnreferencedPid, Some(pid), gone);
                    } else {
                        next = next.min(gone + 1);
                    }
                }
            }
        }
        self.next_eval = next;
    }

    /// A lapse of the input's data if `proof` (its latest data) is past `due`; else `next`
    /// is brought forward to it.
    fn due(&mut self, check: Check, pid: Option<u16>, due: u64, proof: u64, next: &mut u64) {
        if self
            .find(check, pid)
            .is_some_and(|i| self.active[i].missing)
        {
            return;
        }
        if proof > due {
            self.lapse(check, pid, due);
        } else {
            *next = (*next).min(due + 1);
        }
    }

    // --- stats --------------------------------------------------------------------------------

    pub fn stats(&self) -> AnalysisStats {
        let programs: Vec<ProgramInfo> = self
            .programs
            .iter()
            .map(|p| ProgramInfo {
                number: p.number,
                pmt_pid: p.pmt_pid,
                pcr_pid: p.pcr_pid,
                streams: p.streams.iter().map(|s| s.info.clone()).collect(),
            })
            .collect();
        let mut pids: Vec<PidInfo> = self
            .pids
            .iter()
            .map(|s| PidInfo {
                pid: s.pid,
                kind: s.kind.name(),
                stream_type: s.stream_type,
                codec: s.codec,
                program: s.program,
                packets: s.packets,
                bitrate_bps: s.bitrate_bps,
                cc_errors: s.cc_errors,
            })
            .collect();
        pids.sort_by_key(|p| p.pid);
        let slot = |pid: u16| {
            let i = self.index.as_ref()?[usize::from(pid)];
            self.pids.get(usize::from(i))
        };
        let streams = || self.programs.iter().flat_map(|p| p.streams.iter());
        let video = streams()
            .filter(|s| s.kind == Kind::Video)
            .map(|s| {
                let slot = slot(s.info.pid);
                let params = slot.and_then(|x| x.video.as_ref());
                VideoInfo {
                    pid: s.info.pid,
                    codec: s.info.codec.unwrap_or("unknown"),
                    width: params.map(|v| v.width),
                    height: params.map(|v| v.height),
                    frame_rate: params
                        .and_then(|v| v.frame_rate)
                        .or_else(|| slot.and_then(PidSlot::measured_rate)),
                    profile: params.and_then(|v| v.profile),
                    level: params.and_then(|v| v.level.clone()),
                    interlaced: params.map(|v| v.interlaced),
                }
            })
            .collect();
        let audio = streams()
            .filter(|s| s.kind == Kind::Audio)
            .map(|s| AudioInfo {
                pid: s.info.pid,
                codec: s.info.codec,
                language: s.info.language.clone(),
            })
            .collect();
        AnalysisStats {
            sync: self.sync == SyncState::InSync,
            errors: ErrorCounts::from_array(&self.counts),
            active: self
                .active
                .iter()
                .map(|c| ActiveCondition {
                    check: c.check.name(),
                    priority: c.check.priority(),
                    pid: c.pid,
                    since: self.unix(c.since),
                })
                .collect(),
            programs,
            pids,
            video,
            audio,
            history: self
                .history
                .iter()
                .skip(self.history.len().saturating_sub(HISTORY))
                .cloned()
                .collect(),
            changes_missed: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ts::tests::{put_pcr, put_pes_header};
    use crate::ts::{write_pcr_base, SYNC_BYTE};

    type Packet = [u8; PACKET_SIZE];

    const PMT_PID: u16 = 0x1000;
    const VIDEO: u16 = 0x100;
    const AUDIO: u16 = 0x101;
    /// The SPS x264 wrote for a 640x360, 25 fps clip.
    const SPS: [u8; 25] = [
        0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xbf, 0xe5, 0xc0, 0x44, 0x00, 0x00, 0x03, 0x00, 0x04,
        0x00, 0x00, 0x03, 0x00, 0xc8, 0x3c, 0x58, 0xba, 0x80, 0x00,
    ];

    fn long_section(table_id: u8, extension: u16, body: &[u8]) -> Vec<u8> {
        let len = 5 + body.len() + 4;
        let mut s = vec![table_id, 0xb0 | (len >> 8) as u8, len as u8];
        s.extend_from_slice(&extension.to_be_bytes());
        s.extend_from_slice(&[0xc1, 0, 0]);
        s.extend_from_slice(body);
        let crc = crc32(&s);
        s.extend_from_slice(&crc.to_be_bytes());
        s
    }

    fn pat(programs: &[(u16, u16)]) -> Vec<u8> {
        let body: Vec<u8> = programs
            .iter()
            .flat_map(|&(n, pid)| [n.to_be_bytes(), (0xe000 | pid).to_be_bytes()].concat())
            .collect();
        long_section(0x00, 1, &body)
    }

    fn pmt(number: u16, pcr: u16, streams: &[(u8, u16, &[u8])]) -> Vec<u8> {
        let mut body = (0xe000 | pcr).to_be_bytes().to_vec();
        body.extend_from_slice(&[0xf0, 0]);
        for &(st, pid, desc) in streams {
            body.push(st);
            body.extend_from_slice(&(0xe000 | pid).to_be_bytes());
            body.extend_from_slice(&(0xf000 | desc.len() as u16).to_be_bytes());
            body.extend_from_slice(desc);
        }
        long_section(0x02, number, &body)
    }

    /// A muxer of synthetic packets with counting continuity counters.
    struct Mux {
        cc: Vec<u8>,
        /// Whether keyframes carry an SPS.
        sps: bool,
    }

    impl Mux {
        fn new() -> Mux {
            Mux {
                cc: vec![0; 8192],
                sps: true,
            }
        }

        /// Leaves the packets of `pid` out as a sender that never made them would: the
        /// packets after them count on without a gap. Use in `run` as `keep`.
        fn leave_out(pid: u16, ms: std::ops::Range<u64>) -> impl FnMut(u64, &mut Packet) -> bool {
            let mut left_out = 0u8;
            move |t, p| {
                if pid_of_packet(p) != pid {
                    return true;
                }
                if ms.contains(&t) {
                    left_out = left_out.wrapping_add(1);
                    return false;
                }
                p[3] = (p[3] & 0xf0) | (p[3].wrapping_sub(left_out) & 0x0f);
                true
            }
        }

        fn header(&mut self, pid: u16, pusi: bool) -> Packet {
            let mut p = [0xffu8; PACKET_SIZE];
            let cc = &mut self.cc[usize::from(pid)];
            p[..4].copy_from_slice(&[
                SYNC_BYTE,
                if pusi { 0x40 } else { 0 } | (pid >> 8) as u8,
                pid as u8,
                0x10 | *cc,
            ]);
            *cc = (*cc + 1) & 0x0f;
            p
        }

        fn psi(&mut self, pid: u16, section: &[u8]) -> Packet {
            let mut p = self.header(pid, true);
            p[4] = 0;
            p[5..5 + section.len()].copy_from_slice(section);
            p
        }

        /// A packet of an elementary stream: a PES start with `pts` (and `es`) if given, a
        /// PCR in an adaptation field if given.
        fn es(&mut self, pid: u16, pcr: Option<u64>, pts: Option<u64>, es: &[u8]) -> Packet {
            let mut p = self.header(pid, pts.is_some());
            let off = pcr.map_or(4, |pcr| put_pcr(&mut p, pcr));
            if let Some(pts) = pts {
                let data = put_pes_header(&mut p, off, pts);
                p[data..data + es.len()].copy_from_slice(es);
            }
            p
        }
    }

    /// The clean stream at millisecond `ms`: a PAT and PMT every 100 ms, a video packet every
    /// ms (a PES with a PTS every 40 ms, an SPS every second, a PCR every 20 ms) and an audio
    /// packet every 5 ms (a PES every 20 ms).
    fn packets_at(mux: &mut Mux, ms: u64) -> Vec<Packet> {
        let t = ms * MS;
        let mut out = Vec::new();
        if ms.is_multiple_of(100) {
            out.push(mux.psi(0, &pat(&[(1, PMT_PID)])));
            let lang = [0x0a, 4, b'e', b'n', b'g', 0];
            let streams: [(u8, u16, &[u8]); 2] = [(0x1b, VIDEO, &[]), (0x0f, AUDIO, &lang)];
            out.push(mux.psi(PMT_PID, &pmt(1, VIDEO, &streams)));
        }
        let pcr = ms.is_multiple_of(20).then_some(t);
        let pts = ms.is_multiple_of(40).then_some(t + 9_000);
        let mut es = vec![0, 0, 0, 1, 0x09, 0xf0];
        if ms.is_multiple_of(1000) && mux.sps {
            es.extend_from_slice(&[0, 0, 0, 1, 0x67]);
            es.extend_from_slice(&SPS);
        }
        out.push(mux.es(VIDEO, pcr, pts, &es));
        if ms.is_multiple_of(5) {
            out.push(mux.es(
                AUDIO,
                None,
                ms.is_multiple_of(20).then_some(t + 9_000),
                &[0xff, 0xf1],
            ));
        }
        out
    }

    /// Feeds milliseconds `from..to` of the clean stream, arriving as they are stamped, through
    /// `keep` (which may change a packet, or drop it by returning false); ticks each ms.
    fn run(
        a: &mut Analysis,
        mux: &mut Mux,
        ms: std::ops::Range<u64>,
        mut keep: impl FnMut(u64, &mut Packet) -> bool,
    ) {
        for ms in ms {
            for mut p in packets_at(mux, ms) {
                if keep(ms, &mut p) {
                    a.packet(&p, ms * MS);
                }
            }
            a.tick(ms * MS);
        }
    }

    fn clean(a: &mut Analysis, mux: &mut Mux, ms: std::ops::Range<u64>) {
        run(a, mux, ms, |_, _| true);
    }

    fn pid_of_packet(p: &Packet) -> u16 {
        pid_of(p) as u16
    }

    fn active(a: &Analysis) -> Vec<(&'static str, Option<u16>)> {
        a.stats().active.iter().map(|c| (c.check, c.pid)).collect()
    }

    fn changes(a: &Analysis) -> Vec<(f64, &'static str, Option<u16>, &'static str)> {
        a.stats()
            .history
            .iter()
            .map(|c| (c.at, c.check, c.pid, c.change))
            .collect()
    }

    #[test]
    fn a_clean_stream_shows_no_error_and_what_it_carries() {
        let (mut a, mut mux) = (Analysis::new(1000.0), Mux::new());
        clean(&mut a, &mut mux, 0..10_000);
        let s = a.stats();
        assert!(s.sync);
        assert_eq!(s.errors, ErrorCounts::default());
        assert!(s.active.is_empty() && s.history.is_empty(), "{s:?}");
        assert_eq!(s.programs.len(), 1);
        let p = &s.programs[0];
        assert_eq!((p.number, p.pmt_pid, p.pcr_pid), (1, PMT_PID, Some(VIDEO)));
        let kinds: Vec<_> = s.pids.iter().map(|p| (p.pid, p.kind)).collect();
        assert_eq!(
            kinds,
            [
                (0, "pat"),
                (VIDEO, "video"),
                (AUDIO, "audio"),
                (PMT_PID, "pmt")
            ]
        );
        let video = s.pids.iter().find(|p| p.pid == VIDEO).unwrap();
        // 1000 packets a second.
        assert!(
            (1_495_000..=1_510_000).contains(&video.bitrate_bps),
            "{video:?}"
        );
        let v = &s.video[0];
        assert_eq!((v.pid, v.codec), (VIDEO, "h264"));
        assert_eq!((v.width, v.height), (Some(640), Some(360)));
        assert_eq!(v.frame_rate, Some(25.0));
        assert_eq!(v.profile, Some("Constrained Baseline"));
        let au = &s.audio[0];
        assert_eq!(
            (au.pid, au.codec, au.language.as_deref()),
            (AUDIO, Some("aac"), Some("eng"))
        );
    }

    #[test]
    fn the_frame_rate_comes_from_the_timestamps_without_timing_in_the_sps() {
        let (mut a, mut mux) = (Analysis::default(), Mux::new());
        mux.sps = false;
        clean(&mut a, &mut mux, 0..2_000);
        let v = &a.stats().video[0];
        assert_eq!((v.width, v.frame_rate), (None, Some(25.0)));
    }

    #[test]
    fn each_dropped_packet_is_one_continuity_count_error() {
        let (mut a, mut mux) = (Analysis::default(), Mux::new());
        let drops = [1_003, 2_500, 4_001, 4_700, 6_050];
        let mut n = 0;
        run(&mut a, &mut mux, 0..8_000, |ms, p| {
            // The first video packet of those milliseconds.
            let drop = drops.contains(&ms) && pid_of_packet(p) == VIDEO;
            n += usize::from(drop);
            !drop
        });
        assert_eq!(n, drops.len());
        let s = a.stats();
        assert_eq!(s.errors.continuity_count_error, drops.len() as u64);
        assert_eq!(
            s.errors,
            ErrorCounts {
                continuity_count_error: 5,
                ..Default::default()
            }
        );
        assert_eq!(s.pids.iter().find(|p| p.pid == VIDEO).unwrap().cc_errors, 5);
        // Each held for a second: 4001 and 4700 make one condition.
        let cc: Vec<_> = changes(&a)
            .into_iter()
            .map(|(at, _, pid, change)| ((at * 1000.0).round() as u64, pid, change))
            .collect();
        let v = Some(VIDEO);
        assert_eq!(
            cc,
            [
                (1_004, v, "started"),
                (2_004, v, "cleared"),
                (2_501, v, "started"),
                (3_501, v, "cleared"),
                (4_002, v, "started"),
                (5_701, v, "cleared"),
                (6_051, v, "started"),
                (7_051, v, "cleared"),
            ]
        );
    }

    #[test]
    fn a_duplicate_packet_is_allowed_once() {
        let mut a = Analysis::default();
        let mut mux = Mux::new();
        let p = mux.es(VIDEO, None, None, &[]);
        let q = mux.es(VIDEO, None, None, &[]);
        for (i, packet) in [p, q, q, q].iter().enumerate() {
            a.packet(packet, i as u64);
        }
        assert_eq!(a.stats().errors.continuity_count_error, 1);
    }

    #[test]
    fn a_pat_left_out_for_a_second_is_one_pat_error_from_its_deadline_to_its_return() {
        let (mut a, mut mux) = (Analysis::new(0.0), Mux::new());
        // PATs at 1900, then none until 3000 (those of 2000..=2900 are left out).
        run(&mut a, &mut mux, 0..5_000, Mux::leave_out(0, 2_000..3_000));
        let s = a.stats();
        assert_eq!(
            s.errors,
            ErrorCounts {
                pat_error: 1,
                ..Default::default()
            }
        );
        assert_eq!(
            changes(&a),
            [
                (2.4, "pat_error", None, "started"),
                (3.0, "pat_error", None, "cleared")
            ]
        );
    }

    #[test]
    fn a_missing_pat_is_seen_while_the_other_pids_flow() {
        let (mut a, mut mux) = (Analysis::default(), Mux::new());
        run(&mut a, &mut mux, 0..3_000, Mux::leave_out(0, 1_000..3_000));
        assert_eq!(active(&a), [("pat_error", None)]);
        assert_eq!(a.stats().active[0].since, 1.4);
        assert_eq!(a.stats().errors.continuity_count_error, 0);
    }

    #[test]
    fn a_missing_pmt_is_a_pmt_error() {
        let (mut a, mut mux) = (Analysis::default(), Mux::new());
        run(
            &mut a,
            &mut mux,
            0..3_000,
            Mux::leave_out(PMT_PID, 1_000..3_000),
        );
        assert_eq!(active(&a), [("pmt_error", Some(PMT_PID))]);
        assert_eq!(a.stats().errors.pmt_error, 1);
    }

    #[test]
    fn a_silent_input_starts_no_condition_and_its_limits_count_from_its_return() {
        let (mut a, mut mux) = (Analysis::default(), Mux::new());
        clean(&mut a, &mut mux, 0..2_000);
        // Nothing arrives for 10 s; the control thread ticks meanwhile.
        for ms in (2_000..12_000).step_by(1_000) {
            a.tick(ms * MS);
        }
        assert!(active(&a).is_empty());
        // The stream comes back mid-way between PATs (its clock ran on meanwhile).
        clean(&mut a, &mut mux, 12_050..14_000);
        let s = a.stats();
        assert_eq!(s.errors, ErrorCounts::default(), "{:?}", s.history);
        assert!(s.active.is_empty());
        // Its bitrates fell to 0 while it was silent and are back now.
        assert!(s.pids.iter().all(|p| p.bitrate_bps > 0), "{:?}", s.pids);
    }

    #[test]
    fn a_silent_input_shows_zero_bitrates() {
        let (mut a, mut mux) = (Analysis::default(), Mux::new());
        clean(&mut a, &mut mux, 0..2_000);
        // The first window after the last packet still holds its tail; the next none.
        a.tick(3_100 * MS);
        a.tick(4_200 * MS);
        assert!(a.stats().pids.iter().all(|p| p.bitrate_bps == 0));
    }

    #[test]
    fn a_pid_missing_for_five_seconds_while_the_others_flow_is_a_pid_error() {
        let (mut a, mut mux) = (Analysis::default(), Mux::new());
        run(
            &mut a,
            &mut mux,
            0..10_000,
            Mux::leave_out(AUDIO, 1_000..7_000),
        );
        let s = a.stats();
        // The audio's last packet before the gap came at 995 ms.
        assert_eq!(
            (s.errors.pid_error, s.errors.pts_error),
            (1, 0),
            "{:?}",
            s.history
        );
        assert_eq!(
            changes(&a),
            [
                (5.995, "pid_error", Some(AUDIO), "started"),
                (7.0, "pid_error", Some(AUDIO), "cleared")
            ]
        );
    }

    #[test]
    fn a_pid_that_never_comes_is_a_pid_error_five_seconds_after_the_pmt_named_it() {
        let (mut a, mut mux) = (Analysis::default(), Mux::new());
        run(&mut a, &mut mux, 0..6_000, |_, p| pid_of_packet(p) != AUDIO);
        assert_eq!(active(&a), [("pid_error", Some(AUDIO))]);
        // Limits count from when the stream is in sync: its 5th packet, at 2 ms.
        assert_eq!(a.stats().active[0].since, 5.002);
        let audio = a.stats().pids.into_iter().find(|p| p.pid == AUDIO).unwrap();
        assert_eq!((audio.kind, audio.packets), ("audio", 0));
    }

    #[test]
    fn a_pid_the_pmt_does_not_name_is_unreferenced_not_a_priority_1_error() {
        let (mut a, mut mux) = (Analysis::default(), Mux::new());
        let mut other = Mux::new();
        for ms in 0..3_000u64 {
            for p in packets_at(&mut mux, ms) {
                a.packet(&p, ms * MS);
            }
            if ms >= 1_000 && ms % 10 == 0 {
                a.packet(&other.es(0x200, None, None, &[]), ms * MS);
            }
            a.tick(ms * MS);
        }
        let s = a.stats();
        assert_eq!(
            s.errors,
            ErrorCounts {
                unreferenced_pid: 1,
                ..Default::default()
            }
        );
        assert_eq!(active(&a), [("unreferenced_pid", Some(0x200))]);
        assert_eq!(s.active[0].priority, 3);
        let pid = s.pids.iter().find(|p| p.pid == 0x200).unwrap();
        assert_eq!(pid.kind, "unreferenced");
        // It stops: cleared once it stayed away a second.
        clean(&mut a, &mut mux, 3_000..5_000);
        assert!(active(&a).is_empty());
    }

    #[test]
    fn the_emm_pids_the_cat_names_are_referenced() {
        let (mut a, mut mux) = (Analysis::default(), Mux::new());
        let (emm, stray) = (0x1f00, 0x1f01);
        // A CA descriptor: CA system 0x0b00, EMM PID 0x1f00.
        let cat = long_section(0x01, 0xffff, &[0x09, 4, 0x0b, 0x00, 0xe0 | 0x1f, 0x00]);
        let mut other = Mux::new();
        for ms in 0..3_000u64 {
            for p in packets_at(&mut mux, ms) {
                a.packet(&p, ms * MS);
            }
            if ms.is_multiple_of(100) {
                a.packet(&other.psi(1, &cat), ms * MS);
            }
            if ms.is_multiple_of(10) {
                a.packet(&other.es(emm, None, None, &[]), ms * MS);
                a.packet(&other.es(stray, None, None, &[]), ms * MS);
            }
            a.tick(ms * MS);
        }
        // The PID the CAT does not name is unreferenced, the EMM PID is not.
        assert_eq!(active(&a), [("unreferenced_pid", Some(stray))]);
        let s = a.stats();
        assert_eq!(
            s.errors,
            ErrorCounts {
                unreferenced_pid: 1,
                ..Default::default()
            }
        );
        let kind = |pid: u16| s.pids.iter().find(|p| p.pid == pid).unwrap().kind;
        assert_eq!(
            (kind(1), kind(emm), kind(stray)),
            ("cat", "emm", "unreferenced")
        );
    }

    #[test]
    fn pcr_gaps_and_jumps_are_told_apart() {
        let (mut a, mut mux) = (Analysis::default(), Mux::new());
        let strip = |p: &mut Packet| {
            if pid_of_packet(p) == VIDEO && p[3] & 0x20 != 0 {
                p[5] = 0; // the PCR flag off: the PCR is gone
            }
        };
        run(&mut a, &mut mux, 0..4_000, |ms, p| {
            // No PCR at 1020 and 1040: a 60 ms gap. At 2000 the clock jumps 10 s (arriving on
            // time: a jump, not a gap). At 3000 it jumps back with the indicator: allowed.
            if ms == 1_020 || ms == 1_040 {
                strip(p);
            }
            if let Some(pcr) = pcr_base(p) {
                let shift = match ms {
                    2_000..3_000 => 900_000,
                    _ => 0,
                };
                write_pcr_base(p, pcr + shift);
                if ms == 3_000 {
                    p[5] |= 0x80;
                }
            }
            true
        });
        let s = a.stats();
        assert_eq!(
            (
                s.errors.pcr_repetition_error,
                s.errors.pcr_discontinuity_indicator_error
            ),
            (1, 1),
            "{:?}",
            s.history
        );
        assert_eq!(s.errors.continuity_count_error, 0);
    }

    #[test]
    fn pcrs_that_stop_for_a_while_are_a_repetition_and_a_discontinuity_error() {
        let (mut a, mut mux) = (Analysis::default(), Mux::new());
        run(&mut a, &mut mux, 0..3_000, |ms, p| {
            if (1_001..1_500).contains(&ms) && pid_of_packet(p) == VIDEO {
                p[5] = 0;
            }
            true
        });
        let e = a.stats().errors;
        assert_eq!(
            (e.pcr_repetition_error, e.pcr_discontinuity_indicator_error),
            (1, 1)
        );
    }

    /// Takes the PCR out of the packets of `pid` (the adaptation field stays, its PCR flag
    /// off).
    fn strip_pcr(p: &mut Packet) {
        if p[3] & 0x20 != 0 && p[4] > 0 {
            p[5] &= !0x10;
        }
    }

    #[test]
    fn pcrs_that_stop_while_the_video_flows_are_one_repetition_error_until_they_come_back() {
        let (mut a, mut mux) = (Analysis::default(), Mux::new());
        // The last PCR at 1000 ms; none from 1001 to 2999 while everything else flows.
        let stop = |ms: u64, p: &mut Packet| {
            if (1_001..3_000).contains(&ms) {
                strip_pcr(p);
            }
            true
        };
        run(&mut a, &mut mux, 0..1_290, stop);
        assert!(
            active(&a).is_empty(),
            "within 40 ms + the delivery allowance"
        );
        run(&mut a, &mut mux, 1_290..2_000, stop);
        assert_eq!(active(&a), [("pcr_repetition_error", Some(VIDEO))]);
        assert_eq!(a.stats().errors.pcr_repetition_error, 1);
        // A lapse: counted once however long it lasts.
        run(&mut a, &mut mux, 2_000..3_000, stop);
        assert_eq!(a.stats().errors.pcr_repetition_error, 1);
        // The PCR at 3000 ms clears it (a 2 s step, also a discontinuity by its value).
        clean(&mut a, &mut mux, 3_000..3_100);
        let e = a.stats().errors;
        assert_eq!(
            (e.pcr_repetition_error, e.pcr_discontinuity_indicator_error),
            (1, 1)
        );
        let pcr: Vec<_> = changes(&a)
            .into_iter()
            .filter(|c| c.1 == "pcr_repetition_error")
            .collect();
        assert_eq!(
            pcr,
            [
                (1.29, "pcr_repetition_error", Some(VIDEO), "started"),
                (3.0, "pcr_repetition_error", Some(VIDEO), "cleared")
            ]
        );
    }

    #[test]
    fn a_pcr_pid_that_never_carries_pcrs_is_a_repetition_error() {
        let (mut a, mut mux) = (Analysis::default(), Mux::new());
        run(&mut a, &mut mux, 0..2_000, |_, p| {
            strip_pcr(p);
            true
        });
        assert_eq!(active(&a), [("pcr_repetition_error", Some(VIDEO))]);
        let s = a.stats();
        assert_eq!(
            s.errors,
            ErrorCounts {
                pcr_repetition_error: 1,
                ..Default::default()
            }
        );
        // Due from when the stream is in sync (its 5th packet, at 1 ms).
        assert_eq!(s.active[0].since, 0.291);
    }

    #[test]
    fn a_silent_input_and_a_stalled_sender_start_no_pcr_error() {
        let (mut a, mut mux) = (Analysis::default(), Mux::new());
        clean(&mut a, &mut mux, 0..2_001);
        // The sender stalls for 400 ms, then sends what it owes in a burst, starting with
        // packets without a PCR: no PCR could arrive while nothing did.
        for ms in 2_001..3_000 {
            let arrival = ms.max(2_400) * MS;
            for p in packets_at(&mut mux, ms) {
                a.packet(&p, arrival);
            }
            a.tick(arrival);
        }
        // Then nothing for 10 s; the control thread ticks meanwhile.
        for ms in (3_000..13_000).step_by(100) {
            a.tick(ms * MS);
        }
        let s = a.stats();
        assert_eq!(s.errors, ErrorCounts::default(), "{:?}", s.history);
        assert!(s.active.is_empty());
    }

    #[test]
    fn video_without_ptss_for_a_second_is_one_pts_error() {
        let (mut a, mut mux) = (Analysis::default(), Mux::new());
        run(&mut a, &mut mux, 0..4_000, |ms, p| {
            if (1_001..2_000).contains(&ms) && pid_of_packet(p) == VIDEO && p[1] & 0x40 != 0 {
                p[1] &= !0x40; // no PES start: no PTS
            }
            true
        });
        assert_eq!(
            changes(&a),
            [
                (1.7, "pts_error", Some(VIDEO), "started"),
                (2.0, "pts_error", Some(VIDEO), "cleared")
            ]
        );
        assert_eq!(a.stats().errors.pts_error, 1);
    }

    #[test]
    fn a_bad_crc_is_a_crc_error_and_the_table_is_not_taken() {
        let (mut a, mut mux) = (Analysis::default(), Mux::new());
        run(&mut a, &mut mux, 0..2_000, |ms, p| {
            if ms == 1_000 && pid_of_packet(p) == PMT_PID {
                p[5 + 12] ^= 0xff; // the stream type of the video
            }
            true
        });
        let s = a.stats();
        assert_eq!(
            s.errors,
            ErrorCounts {
                crc_error: 1,
                ..Default::default()
            }
        );
        assert_eq!(s.video[0].codec, "h264");
    }

    #[test]
    fn another_table_on_the_pat_pid_and_a_scrambled_pat_are_pat_errors() {
        let (mut a, mut mux) = (Analysis::default(), Mux::new());
        run(&mut a, &mut mux, 0..3_000, |ms, p| {
            if pid_of_packet(p) == 0 && ms == 1_000 {
                *p = Mux::new().psi(0, &long_section(0x42, 1, &[1, 2, 3]));
                p[3] = (p[3] & 0xf0) | 0x0a; // keep the counter: the 11th PAT packet
            }
            if pid_of_packet(p) == 0 && ms == 2_000 {
                p[3] |= 0x80;
            }
            true
        });
        assert_eq!(
            a.stats().errors,
            ErrorCounts {
                pat_error: 2,
                ..Default::default()
            }
        );
    }

    #[test]
    fn scrambled_video_and_audio_are_not_pts_errors() {
        let (mut a, mut mux) = (Analysis::default(), Mux::new());
        run(&mut a, &mut mux, 0..4_000, |ms, p| {
            if ms >= 1_000 && matches!(pid_of_packet(p), VIDEO | AUDIO) {
                p[3] |= 0x80; // scrambled with the even key: the PES headers are unreadable
            }
            true
        });
        assert_eq!(a.stats().errors, ErrorCounts::default());
    }

    #[test]
    fn the_stats_show_the_last_32_changes_and_a_poller_gets_the_last_128() {
        let mut a = Analysis::default();
        // 50 errors of one instant, 2 s apart: 100 changes.
        for i in 0..50u64 {
            a.occur(Check::CrcError, None, i * 2 * HOLD);
            a.tick(i * 2 * HOLD + HOLD);
        }
        let history = a.stats().history;
        assert_eq!(history.len(), 32);
        assert_eq!(history.last().unwrap().seq, 100);
        assert_eq!(a.changes_after(0).len(), 100);
        assert_eq!(a.changes_after(90).len(), 10);
    }

    #[test]
    fn transport_errors_are_counted() {
        let (mut a, mut mux) = (Analysis::default(), Mux::new());
        run(&mut a, &mut mux, 0..1_000, |ms, p| {
            if ms == 500 && pid_of_packet(p) == AUDIO {
                p[1] |= 0x80;
            }
            true
        });
        assert_eq!(a.stats().errors.transport_error, 1);
    }

    #[test]
    fn sync_is_lost_after_two_bad_sync_bytes_and_regained_after_five_good_ones() {
        let (mut a, mut mux) = (Analysis::default(), Mux::new());
        clean(&mut a, &mut mux, 0..1_000);
        a.sync_byte_error(1_000 * MS);
        a.sync_byte_error(1_000 * MS);
        a.sync_lost(1_000 * MS);
        assert!(!a.stats().sync);
        // Lost: further bad bytes are not counted again.
        a.sync_byte_error(1_000 * MS);
        a.sync_lost(1_000 * MS);
        assert_eq!(
            active(&a),
            [("sync_byte_error", None), ("ts_sync_loss", None)]
        );
        // Four good packets (PAT, PMT, video, audio) are not enough; the fifth is.
        clean(&mut a, &mut mux, 1_000..1_001);
        assert!(!a.stats().sync);
        clean(&mut a, &mut mux, 1_001..1_002);
        assert!(a.stats().sync);
        clean(&mut a, &mut mux, 1_002..3_000);
        let s = a.stats();
        assert!(s.sync);
        assert_eq!(
            s.errors,
            ErrorCounts {
                ts_sync_loss: 1,
                sync_byte_error: 2,
                ..Default::default()
            }
        );
        assert!(s.active.is_empty());
    }

    #[test]
    fn a_reset_clears_every_condition_and_keeps_the_counts() {
        let (mut a, mut mux) = (Analysis::default(), Mux::new());
        run(&mut a, &mut mux, 0..2_000, Mux::leave_out(0, 1_000..2_000));
        assert_eq!(active(&a), [("pat_error", None)]);
        a.reset();
        assert!(active(&a).is_empty());
        assert_eq!(a.stats().errors.pat_error, 1);
        let cleared: Vec<_> = a
            .changes_after(1)
            .into_iter()
            .map(|c| (c.check, c.change))
            .collect();
        assert_eq!(cleared, [("pat_error", "cleared")]);
        // The new connection starts over: its first packets are not late.
        let mut mux = Mux::new();
        clean(&mut a, &mut mux, 5_000..6_000);
        assert_eq!(a.stats().errors.pat_error, 1);
        assert!(active(&a).is_empty());
    }
}
