//! `test://?size=1280x720&fps=30&bitrate=4000&pattern=smpte&audio=1`: a generated H.264 + AAC
//! test signal in MPEG-TS.

use super::query::Query;
use crate::limits;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestEndpoint {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// Video bitrate in kbit/s.
    pub bitrate_kbps: u32,
    /// A `videotestsrc` pattern nick (smpte, ball, snow, bar, …).
    pub pattern: String,
    pub audio: bool,
    /// Silence instead of a tone (the slate).
    pub silence: bool,
    /// PIDs for the video and audio streams (the slate takes those of the route's input so
    /// receivers keep playing); the muxer's own when None. Not settable in a URI.
    pub video_pid: Option<u16>,
    pub audio_pid: Option<u16>,
    /// The PCR PID of what went out before (the slate's, so receivers keep their clock's PID):
    /// the PCR stays on the video PID if that was it; else (and when None) it rides the audio.
    /// Not settable in a URI.
    pub pcr_pid: Option<u16>,
}

impl Default for TestEndpoint {
    fn default() -> Self {
        TestEndpoint {
            width: 1280,
            height: 720,
            fps: 30,
            bitrate_kbps: 4000,
            pattern: "smpte".into(),
            audio: true,
            silence: false,
            video_pid: None,
            audio_pid: None,
            pcr_pid: None,
        }
    }
}

const PATTERNS: &[&str] = &[
    "smpte",
    "snow",
    "black",
    "white",
    "red",
    "green",
    "blue",
    "checkers-1",
    "checkers-2",
    "checkers-4",
    "checkers-8",
    "circular",
    "blink",
    "smpte75",
    "zone-plate",
    "gamut",
    "chroma-zone-plate",
    "solid-color",
    "ball",
    "smpte100",
    "bar",
    "pinwheel",
    "spokes",
    "gradient",
    "colors",
];

impl TestEndpoint {
    pub(super) fn parse(authority_path: &str, mut q: Query) -> Result<TestEndpoint, String> {
        if !authority_path.trim_matches('/').is_empty() {
            return Err(format!(
                "test:// takes no host or path (got `{authority_path}`)"
            ));
        }
        let d = TestEndpoint::default();
        let (width, height) = match q.take(&["size"])? {
            None => (d.width, d.height),
            Some(s) => limits::parse_picture_size(&s)
                .ok_or_else(|| format!("`size={s}` is not {}", limits::picture_size_rule()))?,
        };
        let fps = q
            .take_parsed::<u32>(&["fps", "framerate"], "a frame rate")?
            .unwrap_or(d.fps);
        if !(1..=120).contains(&fps) {
            return Err(format!("`fps={fps}` is outside 1..120"));
        }
        let bitrate_kbps = q
            .take_parsed::<u32>(&["bitrate"], "a bitrate in kbit/s")?
            .unwrap_or(d.bitrate_kbps);
        if !(50..=100_000).contains(&bitrate_kbps) {
            return Err(format!(
                "`bitrate={bitrate_kbps}` is outside 50..100000 kbit/s"
            ));
        }
        let pattern = q.take(&["pattern"])?.unwrap_or(d.pattern);
        if !PATTERNS.contains(&pattern.as_str()) {
            return Err(format!(
                "`pattern={pattern}` is not one of {}",
                PATTERNS.join(", ")
            ));
        }
        let audio = q.take_bool(&["audio"])?.unwrap_or(true);
        q.finish("test")?;
        Ok(TestEndpoint {
            width,
            height,
            fps,
            bitrate_kbps,
            pattern,
            audio,
            ..TestEndpoint::default()
        })
    }
}

impl fmt::Display for TestEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "test://?size={}x{}&fps={}&bitrate={}&pattern={}&audio={}",
            self.width,
            self.height,
            self.fps,
            self.bitrate_kbps,
            self.pattern,
            u8::from(self.audio)
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::uri::{Endpoint, Role, TestEndpoint};

    #[test]
    fn defaults_and_keys() {
        let parsed = |u: &str| match Endpoint::parse(u, Role::Input).unwrap() {
            Endpoint::Test(t) => t,
            other => panic!("{other:?}"),
        };
        assert_eq!(parsed("test://"), TestEndpoint::default());
        let t = parsed("test://?size=640x360&fps=25&bitrate=800&pattern=ball&audio=0");
        assert_eq!(
            (t.width, t.height, t.fps, t.bitrate_kbps, t.audio),
            (640, 360, 25, 800, false)
        );
        crate::uri::assert_refused(&[
            ("test://?size=640", Role::Input, "`size=640`"),
            ("test://?size=641x360", Role::Input, "`size=641x360`"),
            ("test://?fps=0", Role::Input, "`fps=0`"),
            ("test://?pattern=nope", Role::Input, "`pattern=nope`"),
            ("test://host", Role::Input, "takes no host"),
        ]);
    }
}
