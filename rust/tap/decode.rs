//! A decode branch off the hub: pictures of a route's output or of one input, for snapshots and
//! frames in a notebook.
//!
//! ```text
//! hub tap ─► appsrc ! tsdemux ─(video pad)─► <parser> ! decodebin ─(rate)─► videoscale
//!            ! videoconvert ! capsfilter [! jpegenc | pngenc] ! appsink(max-buffers=1, drop)
//! ```
//!
//! The rate is a probe in front of the scaler that lets a picture through when its PTS is
//! due (`Pacer`), so pictures beyond the rate cost no conversion or scaling. (`videorate
//! drop-only=true` was the first choice: it let the first ~15 pictures through at the full
//! rate while its timeline caught up with tsdemux's.)
//!
//! The branch is a [`Tap`] like an output's: the hub offers it the same buffers (a reference
//! count) and drops for it, counted, while its queue is full, so a slow decoder never slows the
//! route. Nothing reaches the decoder before the first keyframe (a probe on the parser's
//! output drops delta units until then), so the first picture is a whole one. The appsink keeps
//! only the newest picture: a consumer that falls behind gets the latest, and what it never
//! took is counted as skipped. A branch of the route's output joins the hub as any output
//! does: the hub sends it PAT, PMT and the latest GOP first (instant start, `hub/gop.rs`), so
//! its first picture needs no wait for a keyframe; a branch of one input starts on that
//! input's live packets, at its next keyframe.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gst::prelude::*;

use crate::elements::{add_chain, make};
use crate::error::{Error, Result};
use crate::hub::Tap;
use crate::limits;
use crate::pipeline::set_state_bounded;
use crate::stats::Counters;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "castway-decode",
        gst::DebugColorFlags::empty(),
        Some("castway decode branches"),
    )
});

/// The most a decode branch queues before the hub drops for it (about 2 s at 8 Mbit/s).
pub const QUEUE_BYTES: u64 = 2 * 1024 * 1024;
/// How long starting or stopping a branch's pipeline may take.
const STATE_CHANGE_TIMEOUT: Duration = Duration::from_secs(3);
/// The highest frame rate a branch may be asked for.
pub const MAX_FPS: f64 = 240.0;
/// The caps of the wall-clock time a picture reached the appsink (a reference timestamp).
const UNIX_TIME_CAPS: &str = "timestamp/x-unix";

/// What a branch hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PictureFormat {
    /// Raw pixels, 3 bytes each (red, green, blue), rows without padding.
    Rgb,
    /// Raw pixels, 3 bytes each (blue, green, red).
    Bgr,
    /// Raw pixels, 1 byte each (luma).
    Gray,
    Jpeg,
    Png,
}

impl PictureFormat {
    pub fn parse(name: &str) -> Result<PictureFormat> {
        Ok(match name {
            "rgb" => PictureFormat::Rgb,
            "bgr" => PictureFormat::Bgr,
            "gray" => PictureFormat::Gray,
            "jpeg" | "jpg" => PictureFormat::Jpeg,
            "png" => PictureFormat::Png,
            other => {
                return Err(Error::InvalidConfig(format!(
                    "picture format must be rgb, bgr, gray, jpeg or png, not `{other}`"
                )))
            }
        })
    }

    /// `name` as one of `allowed`; the error names `argument` and the values it takes.
    pub fn parse_among(argument: &str, name: &str, allowed: &[PictureFormat]) -> Result<Self> {
        match PictureFormat::parse(name) {
            Ok(f) if allowed.contains(&f) => Ok(f),
            _ => {
                let names: Vec<&str> = allowed.iter().map(|f| f.as_str()).collect();
                let (last, rest) = names.split_last().unwrap_or((&"", &[]));
                let list = if rest.is_empty() {
                    last.to_string()
                } else {
                    format!("{} or {last}", rest.join(", "))
                };
                Err(Error::InvalidConfig(format!(
                    "{argument} must be {list}, not `{name}`"
                )))
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PictureFormat::Rgb => "rgb",
            PictureFormat::Bgr => "bgr",
            PictureFormat::Gray => "gray",
            PictureFormat::Jpeg => "jpeg",
            PictureFormat::Png => "png",
        }
    }

    /// Bytes per pixel of a raw format (None: encoded).
    fn pixel_bytes(self) -> Option<usize> {
        match self {
            PictureFormat::Rgb | PictureFormat::Bgr => Some(3),
            PictureFormat::Gray => Some(1),
            PictureFormat::Jpeg | PictureFormat::Png => None,
        }
    }

    /// The raw format the encoder (or the consumer) takes.
    fn raw(self) -> &'static str {
        match self {
            PictureFormat::Rgb | PictureFormat::Png => "RGB",
            PictureFormat::Bgr => "BGR",
            PictureFormat::Gray => "GRAY8",
            PictureFormat::Jpeg => "I420",
        }
    }
}

/// The formats of pictures as pixels (`Route.frames`, numpy arrays).
pub const RAW_FORMATS: &[PictureFormat] =
    &[PictureFormat::Rgb, PictureFormat::Bgr, PictureFormat::Gray];
/// The formats of pictures as images (`Route.snapshot`, what Jupyter shows).
pub const IMAGE_FORMATS: &[PictureFormat] = &[PictureFormat::Jpeg, PictureFormat::Png];

/// What a branch is asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeSettings {
    pub format: PictureFormat,
    /// Scaled to this size (None: as decoded).
    pub size: Option<(u32, u32)>,
    /// At most this many pictures a second (None: every one decoded).
    pub fps: Option<f64>,
}

impl DecodeSettings {
    /// Checks the numbers: a size within castway's picture limits, a positive frame rate.
    pub fn check(&self) -> Result<()> {
        if let Some((w, h)) = self.size {
            if limits::parse_picture_size(&format!("{w}x{h}")).is_none() {
                return Err(Error::InvalidConfig(format!(
                    "size {w}x{h}: {}",
                    limits::picture_size_rule()
                )));
            }
        }
        if let Some(fps) = self.fps {
            if !(fps.is_finite() && fps > 0.0 && fps <= MAX_FPS) {
                return Err(Error::InvalidConfig(format!(
                    "fps must be above 0 and at most {MAX_FPS}, not {fps}"
                )));
            }
        }
        Ok(())
    }
}

/// One decoded picture.
#[derive(Debug, Clone)]
pub struct Picture {
    /// Raw pixels (rows without padding) or the encoded image.
    pub data: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub format: PictureFormat,
    /// Its presentation time in the branch's timeline, in seconds (None: unknown).
    pub pts: Option<f64>,
    /// When it was ready, in seconds since the Unix epoch.
    pub at: f64,
}

/// What a branch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DecodeStats {
    /// Bytes the hub handed the branch.
    pub bytes: u64,
    /// TS packets the hub dropped for it because its queue was full (a decoder slower than
    /// the stream).
    pub dropped_packets: u64,
    /// Pictures ready for the consumer ...
    pub pictures: u64,
    /// ... taken by it ...
    pub taken: u64,
    /// ... and replaced by a newer one before it asked (the newest wins).
    pub skipped: u64,
}

/// A built decode branch: its pipeline and the tap the hub feeds.
pub struct Decoder {
    pipeline: gst::Pipeline,
    appsink: gst_app::AppSink,
    pub tap: Arc<Tap>,
    format: PictureFormat,
    /// Pictures that reached the appsink.
    arrived: Arc<AtomicU64>,
    taken: AtomicU64,
    /// The first error the pipeline reported.
    error: Arc<Mutex<Option<String>>>,
}

fn wall_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The parser for an elementary stream of `caps` from tsdemux.
fn parser_for(caps: &gst::CapsRef) -> Option<&'static str> {
    let s = caps.structure(0)?;
    Some(match s.name().as_str() {
        "video/x-h264" => "h264parse",
        "video/x-h265" => "h265parse",
        "video/mpeg" => "mpegvideoparse",
        _ => return None,
    })
}

impl Decoder {
    /// Builds (does not start) a branch named `name` (unique in the process).
    pub fn build(name: &str, settings: &DecodeSettings) -> Result<Decoder> {
        settings.check()?;
        let pipeline = gst::Pipeline::with_name(name);
        let appsrc = gst_app::AppSrc::builder()
            .name(format!("{name}-hub"))
            .caps(&crate::elements::ts_caps())
            .is_live(true)
            .format(gst::Format::Time)
            .stream_type(gst_app::AppStreamType::Stream)
            .max_bytes(QUEUE_BYTES)
            .block(false)
            .build();
        let demux = make("tsdemux", &format!("{name}-demux"))?;
        pipeline.add_many([appsrc.upcast_ref::<gst::Element>(), &demux])?;
        appsrc.link(&demux)?;

        let decode = make("decodebin", &format!("{name}-decodebin"))?;
        // Scaled first, in the decoder's own format, then converted at the smaller size (720p
        // to 640x360 RGB: 6.7% of a core against 7.2% the other way round, one run of
        // benches/notebook.py on a busy machine).
        let scale = make("videoscale", &format!("{name}-scale"))?;
        let convert = make("videoconvert", &format!("{name}-convert"))?;
        let mut tail = vec![scale.clone(), convert];
        let mut caps = gst::Caps::builder("video/x-raw").field("format", settings.format.raw());
        if let Some((w, h)) = settings.size {
            caps = caps
                .field("width", w as i32)
                .field("height", h as i32)
                .field("pixel-aspect-ratio", gst::Fraction::new(1, 1));
        }
        if let Some(fps) = settings.fps {
            let pacer = Mutex::new(Pacer::new(fps));
            let pad = scale.static_pad("sink").expect("videoscale has a sink pad");
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                let pts = info.buffer().and_then(|b| b.pts()).map(|t| t.nseconds());
                if pacer
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .due(pts)
                {
                    gst::PadProbeReturn::Ok
                } else {
                    discard(info)
                }
            });
        }
        let filter = make("capsfilter", &format!("{name}-caps"))?;
        filter.set_property("caps", caps.build());
        tail.push(filter);
        match settings.format {
            PictureFormat::Jpeg => tail.push(make("jpegenc", &format!("{name}-jpegenc"))?),
            PictureFormat::Png => {
                let enc = make("pngenc", &format!("{name}-pngenc"))?;
                // One still picture, not a stream of them.
                enc.set_property("snapshot", false);
                tail.push(enc)
            }
            _ => {}
        }
        let appsink = gst_app::AppSink::builder()
            .name(format!("{name}-sink"))
            .max_buffers(1)
            .drop(true)
            .sync(false)
            .build();
        tail.push(appsink.clone().upcast());
        pipeline.add(&decode)?;
        add_chain(&pipeline, &tail)?;

        let arrived = Arc::new(AtomicU64::new(0));
        let count = arrived.clone();
        let unix_caps = gst::Caps::new_empty_simple(UNIX_TIME_CAPS);
        if let Some(pad) = appsink.static_pad("sink") {
            // Per picture, not per packet: stamps when it was ready, and counts it.
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                count.fetch_add(1, Relaxed);
                if let Some(buffer) = info.buffer_mut() {
                    let ns = (wall_now() * 1e9) as u64;
                    gst::ReferenceTimestampMeta::add(
                        buffer.make_mut(),
                        &unix_caps,
                        gst::ClockTime::from_nseconds(ns),
                        gst::ClockTime::NONE,
                    );
                }
                gst::PadProbeReturn::Ok
            });
        }

        // tsdemux's first video stream goes to its parser, then to decodebin; other streams
        // stay unlinked (tsdemux goes on while one of its pads is linked).
        let error = Arc::new(Mutex::new(None::<String>));
        let video = Arc::new(VideoLink {
            pipeline: pipeline.downgrade(),
            decode: decode.downgrade(),
            parser: Mutex::new(None),
            waiting: Mutex::new(None),
            error: error.clone(),
        });
        let on_removed = video.clone();
        demux.connect_pad_added(move |_, pad| video.added(pad));
        demux.connect_pad_removed(move |_, _| on_removed.removed());
        let first_sink = scale.static_pad("sink").expect("videoscale has a sink pad");
        decode.connect_pad_added(move |_, pad| {
            let is_video = pad
                .current_caps()
                .unwrap_or_else(|| pad.query_caps(None))
                .structure(0)
                .is_some_and(|s| s.name().starts_with("video/"));
            if is_video && !first_sink.is_linked() {
                let _ = pad.link(&first_sink);
            }
        });
        decode.connect("deep-element-added", false, |values| {
            // A decoder shows no broken pictures (concealed losses after a hub drop).
            if let Some(element) = values.get(2).and_then(|v| v.get::<gst::Element>().ok()) {
                if element.find_property("output-corrupt").is_some() {
                    element.set_property("output-corrupt", false);
                }
            }
            None
        });

        let bus = pipeline.bus().expect("a pipeline has a bus");
        let bus_error = error.clone();
        bus.set_sync_handler(move |_, msg| {
            if let gst::MessageView::Error(e) = msg.view() {
                let mut slot = bus_error.lock().unwrap_or_else(PoisonError::into_inner);
                if slot.is_none() {
                    *slot = Some(e.error().to_string());
                }
            }
            gst::BusSyncReply::Drop
        });

        let tap = Arc::new(Tap::new(
            format!("#{name}"),
            appsrc,
            Arc::new(Counters::default()),
        ));
        Ok(Decoder {
            pipeline,
            appsink,
            tap,
            format: settings.format,
            arrived,
            taken: AtomicU64::new(0),
            error,
        })
    }

    /// Starts the pipeline. Attach [`Decoder::tap`] to the hub right after.
    pub fn start(&self) -> Result<()> {
        match set_state_bounded(&self.pipeline, gst::State::Playing, STATE_CHANGE_TIMEOUT) {
            Some(Ok(_)) => Ok(()),
            _ => Err(self
                .failed()
                .unwrap_or_else(|| Error::pipeline("the decode branch failed to start"))),
        }
    }

    fn failed(&self) -> Option<Error> {
        let e = self.error.lock().unwrap_or_else(PoisonError::into_inner);
        e.as_ref()
            .map(|why| Error::pipeline(format!("decode branch: {why}")))
    }

    /// The newest picture, waiting up to `timeout` for one (None: none came).
    pub fn pull(&self, timeout: Duration) -> Result<Option<Picture>> {
        if let Some(e) = self.failed() {
            return Err(e);
        }
        let Some(sample) = self
            .appsink
            .try_pull_sample(gst::ClockTime::from_nseconds(timeout.as_nanos() as u64))
        else {
            return match self.failed() {
                Some(e) => Err(e),
                None => Ok(None),
            };
        };
        self.taken.fetch_add(1, Relaxed);
        self.picture(&sample).map(Some)
    }

    fn picture(&self, sample: &gst::Sample) -> Result<Picture> {
        let buffer = sample
            .buffer()
            .ok_or_else(|| Error::pipeline("a decoded sample without a buffer"))?;
        let s = sample
            .caps()
            .and_then(|c| c.structure(0))
            .ok_or_else(|| Error::pipeline("a decoded sample without caps"))?;
        let width = s.get::<i32>("width").unwrap_or(0).max(0) as u32;
        let height = s.get::<i32>("height").unwrap_or(0).max(0) as u32;
        let map = buffer
            .map_readable()
            .map_err(|_| Error::pipeline("cannot read a decoded picture"))?;
        let data = match self.format.pixel_bytes() {
            Some(bpp) => unpad(&map, width as usize, height as usize, bpp)?,
            None => map.to_vec(),
        };
        let unix_caps = gst::Caps::new_empty_simple(UNIX_TIME_CAPS);
        let at = buffer
            .iter_meta::<gst::ReferenceTimestampMeta>()
            .find(|m| m.reference().is_subset(&unix_caps))
            .map_or_else(wall_now, |m| m.timestamp().nseconds() as f64 / 1e9);
        Ok(Picture {
            data,
            width,
            height,
            format: self.format,
            pts: buffer.pts().map(|t| t.nseconds() as f64 / 1e9),
            at,
        })
    }

    pub fn stats(&self) -> DecodeStats {
        let c = self.tap.counters.snapshot();
        let pictures = self.arrived.load(Relaxed);
        let taken = self.taken.load(Relaxed);
        DecodeStats {
            bytes: c.bytes,
            dropped_packets: c.drops,
            pictures,
            taken,
            // The one waiting in the appsink is not skipped yet.
            skipped: pictures.saturating_sub(taken + 1),
        }
    }

    /// Stops the pipeline (bounded in time). Detach the tap first.
    pub fn stop(&self) {
        if let Some(bus) = self.pipeline.bus() {
            bus.unset_sync_handler();
        }
        if set_state_bounded(&self.pipeline, gst::State::Null, STATE_CHANGE_TIMEOUT).is_none() {
            gst::warning!(CAT, "{}: did not stop in time", self.pipeline.name());
        }
    }
}

/// Links tsdemux's video stream to its parser and the parser to decodebin. A program change
/// (a switch to an input with other PIDs) brings a new video pad: it takes the old one's place
/// at the parser once that one is gone (tsdemux adds the new stream before it removes the old),
/// and the parser hands on nothing of it before its first keyframe. The EOS tsdemux sends on
/// the old pad is dropped at the parser.
/// Lock order: `parser` → `waiting`.
struct VideoLink {
    pipeline: gst::glib::WeakRef<gst::Pipeline>,
    decode: gst::glib::WeakRef<gst::Element>,
    /// The parser feeding decodebin, once the first video stream came.
    parser: Mutex<Option<gst::Element>>,
    /// A video pad that came while the parser was still fed.
    waiting: Mutex<Option<gst::glib::WeakRef<gst::Pad>>>,
    error: Arc<Mutex<Option<String>>>,
}

impl VideoLink {
    fn fail(&self, why: String) {
        let mut e = self.error.lock().unwrap_or_else(PoisonError::into_inner);
        e.get_or_insert(why);
    }

    fn added(&self, pad: &gst::Pad) {
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let Some(factory) = parser_for(&caps) else {
            if caps
                .structure(0)
                .is_some_and(|s| s.name().starts_with("video/"))
            {
                self.fail(format!("no decoder for the video stream ({caps})"));
            }
            return;
        };
        let mut parser = self.parser.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = &*parser {
            let same = p.factory().is_some_and(|f| f.name() == factory);
            let Some(sink) = p.static_pad("sink").filter(|_| same) else {
                self.fail(format!("the video codec changed ({caps})"));
                return;
            };
            if sink.is_linked() {
                *self.waiting.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some(pad.downgrade());
            } else if !relink(p, pad, &sink) {
                self.fail(format!("cannot link the new video stream ({caps})"));
            }
            return;
        }
        let (Some(pipeline), Some(decode)) = (self.pipeline.upgrade(), self.decode.upgrade())
        else {
            return;
        };
        let Ok(p) = make(factory, &format!("{}-{factory}", pipeline.name())) else {
            self.fail(format!("GStreamer element `{factory}` is missing"));
            return;
        };
        from_keyframe(&p);
        if let Some(sink) = p.static_pad("sink") {
            // tsdemux ends a stream of the program it leaves with EOS; the branch goes on with
            // the new program's stream, so an EOS must not reach the appsink.
            sink.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, |_, info| {
                match info.event() {
                    Some(e) if e.type_() == gst::EventType::Eos => discard(info),
                    _ => gst::PadProbeReturn::Ok,
                }
            });
        }
        let linked = pipeline.add(&p).is_ok()
            && p.link(&decode).is_ok()
            && p.sync_state_with_parent().is_ok()
            && p.static_pad("sink")
                .is_some_and(|sink| pad.link(&sink).is_ok());
        if !linked {
            self.fail(format!("cannot link the video stream ({caps})"));
        }
        *parser = Some(p);
    }

    /// A stream of tsdemux went away: a video pad that waited takes the parser if it is free.
    fn removed(&self) {
        let parser = self.parser.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(p) = parser.as_ref() else {
            return;
        };
        let Some(sink) = p.static_pad("sink").filter(|sink| !sink.is_linked()) else {
            return;
        };
        let waiting = self
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(pad) = waiting.and_then(|w| w.upgrade()) {
            if !pad.is_linked() && !relink(p, &pad, &sink) {
                self.fail("cannot link the new video stream".into());
            }
        }
    }
}

/// Drops what the parser hands on until a keyframe: the first picture, and the first after the
/// parser changes streams, is a whole one (slices of the new stream decoded with the old one's
/// parameter sets are garbage, and a decoder gives up after a few).
fn from_keyframe(parser: &gst::Element) {
    if let Some(src) = parser.static_pad("src") {
        src.add_probe(gst::PadProbeType::BUFFER, |_, info| match info.buffer() {
            Some(b) if b.flags().contains(gst::BufferFlags::DELTA_UNIT) => discard(info),
            Some(_) => gst::PadProbeReturn::Remove,
            None => gst::PadProbeReturn::Ok,
        });
    }
}

/// Links a new video stream of tsdemux to the parser, which waits for its first keyframe.
fn relink(parser: &gst::Element, pad: &gst::Pad, sink: &gst::Pad) -> bool {
    from_keyframe(parser);
    pad.link(sink).is_ok()
}

/// Drops the buffer (or event) of a probe. (`PadProbeReturn::Drop` made GStreamer 1.22 unref a
/// null buffer after the binding had released it: a CRITICAL per picture.)
fn discard(info: &mut gst::PadProbeInfo) -> gst::PadProbeReturn {
    info.data = None;
    info.flow_res = Ok(gst::FlowSuccess::Ok);
    gst::PadProbeReturn::Handled
}

/// Lets pictures through at a rate, by their PTS: one when it is due, the next a period later
/// (a picture at most 1 ms early counts as due); after a gap of more than a period, or when the
/// PTS go back (tsdemux starts a new timeline at a program change), the count starts again from
/// that picture. Never repeats a picture.
struct Pacer {
    period_ns: u64,
    next_ns: Option<u64>,
    last_ns: Option<u64>,
}

impl Pacer {
    fn new(fps: f64) -> Pacer {
        Pacer {
            period_ns: (1e9 / fps) as u64,
            next_ns: None,
            last_ns: None,
        }
    }

    fn due(&mut self, pts_ns: Option<u64>) -> bool {
        let Some(pts) = pts_ns else { return true };
        let back = self.last_ns.replace(pts).is_some_and(|last| pts < last);
        match self.next_ns {
            _ if back => {
                self.next_ns = Some(pts + self.period_ns);
                true
            }
            Some(next) if pts + 1_000_000 < next => false,
            Some(next) if pts < next + self.period_ns => {
                self.next_ns = Some(next + self.period_ns);
                true
            }
            _ => {
                self.next_ns = Some(pts + self.period_ns);
                true
            }
        }
    }
}

/// Raw pixels without the row padding GStreamer adds (rows of a multiple of 4 bytes).
fn unpad(data: &[u8], width: usize, height: usize, bpp: usize) -> Result<Vec<u8>> {
    let row = width * bpp;
    if data.len() == row * height {
        return Ok(data.to_vec());
    }
    let stride = (row + 3) & !3;
    if height == 0 || data.len() < stride * (height - 1) + row {
        return Err(Error::pipeline(format!(
            "a decoded picture of {} bytes is not {width}x{height}",
            data.len()
        )));
    }
    let mut out = Vec::with_capacity(row * height);
    for y in 0..height {
        out.extend_from_slice(&data[y * stride..y * stride + row]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pacer_lets_one_picture_through_per_period() {
        let mut pacer = Pacer::new(5.0);
        // 25 fps for 2 s: every fifth picture.
        let passed: Vec<u64> = (0..50u64)
            .map(|i| 1_000_000_000 + i * 40_000_000)
            .filter(|&t| pacer.due(Some(t)))
            .collect();
        assert_eq!(passed.len(), 10, "{passed:?}");
        assert!(passed.windows(2).all(|w| w[1] - w[0] == 200_000_000));
        // A gap: the count starts again from the picture after it.
        assert!(pacer.due(Some(9_000_000_000)));
        assert!(!pacer.due(Some(9_040_000_000)));
        assert!(pacer.due(None));
        // A new timeline, from the start: the same.
        assert!(pacer.due(Some(100_000_000)));
        assert!(!pacer.due(Some(140_000_000)));
        assert!(pacer.due(Some(300_000_000)));
    }

    #[test]
    fn padded_rows_are_unpadded() {
        // 2x2 RGB: rows of 6 bytes padded to 8.
        let data = [1, 2, 3, 4, 5, 6, 0, 0, 7, 8, 9, 10, 11, 12, 0, 0];
        assert_eq!(
            unpad(&data, 2, 2, 3).unwrap(),
            vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
        );
        assert!(unpad(&data[..10], 2, 2, 3).is_err());
    }

    #[test]
    fn settings_outside_the_limits_are_refused_naming_them() {
        let bad_fps = DecodeSettings {
            format: PictureFormat::Rgb,
            size: None,
            fps: Some(0.0),
        };
        assert!(bad_fps.check().unwrap_err().to_string().contains("fps"));
        let bad_size = DecodeSettings {
            size: Some((0, 10)),
            fps: None,
            ..bad_fps
        };
        assert!(bad_size.check().unwrap_err().to_string().contains("size"));
        let among = |name, allowed| {
            PictureFormat::parse_among("format", name, allowed).map_err(|e| e.to_string())
        };
        assert_eq!(among("jpg", IMAGE_FORMATS), Ok(PictureFormat::Jpeg));
        assert_eq!(among("gray", RAW_FORMATS), Ok(PictureFormat::Gray));
        let e = among("jpeg", RAW_FORMATS).unwrap_err();
        assert!(
            e.contains("format must be rgb, bgr or gray, not `jpeg`"),
            "{e}"
        );
        let e = among("rgb", IMAGE_FORMATS).unwrap_err();
        assert!(e.contains("format must be jpeg or png, not `rgb`"), "{e}");
        assert!(PictureFormat::parse("tiff")
            .unwrap_err()
            .to_string()
            .contains("tiff"));
    }
}
