"""Clips made with ffmpeg from its generated sources, and decoded with it to find errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

from support.ts import gop_chunks


def make_clip(path: Path, seconds: int, size: str, video_kbps: int, *,
              picture: str = "testsrc2", fps: int = 25, gop: int = 25,
              maxrate_kbps: int | None = None, bufsize_kbps: int | None = None,
              zerolatency: bool = False, tone: int | None = 440, audio_kbps: int | None = 96,
              muxrate_kbps: int | None = None, pcr_ms: int | None = 10,
              resend_headers: bool = True, pids: tuple[int, int] | None = None,
              timeout: float = 60) -> Path:
    """An H.264 + AAC MPEG-TS made by ffmpeg: an `fps` lavfi `picture`, a GOP of `gop` frames,
    a sine `tone` (None: no audio; `audio_kbps` None: the AAC encoder's default rate). With
    `muxrate_kbps` the mux is constant-rate, as broadcast encoders send it: null packets, and
    PCR-only packets (adaptation field, no payload) on the video PID, a PCR every `pcr_ms`
    (None: ffmpeg's default). `maxrate_kbps`/`bufsize_kbps` bound the video rate;
    `zerolatency` tunes x264 for it; `resend_headers` repeats PAT and PMT at the start; `pids`
    puts the PMT and the first elementary stream on other PIDs than ffmpeg's (0x1000, 0x100)."""
    video = ["-c:v", "libx264", "-preset", "ultrafast",
             *(["-tune", "zerolatency"] if zerolatency else []), "-g", str(gop),
             "-b:v", f"{video_kbps}k",
             *(["-maxrate", f"{maxrate_kbps}k"] if maxrate_kbps else []),
             *(["-bufsize", f"{bufsize_kbps}k"] if bufsize_kbps else []),
             "-pix_fmt", "yuv420p"]
    sine = [] if tone is None else ["-f", "lavfi", "-i", f"sine=frequency={tone}:sample_rate=48000"]
    audio = [] if tone is None else [
        "-c:a", "aac", *(["-b:a", f"{audio_kbps}k"] if audio_kbps else [])]
    cbr = []
    if muxrate_kbps:
        cbr = ["-muxrate", f"{muxrate_kbps}k", *(["-pcr_period", str(pcr_ms)] if pcr_ms else [])]
    flags = ["-mpegts_flags", "+resend_headers"] if resend_headers else []
    if pids:
        flags += ["-mpegts_pmt_start_pid", str(pids[0]), "-mpegts_start_pid", str(pids[1])]
    subprocess.run(
        [
            "ffmpeg", "-nostdin", "-v", "error", "-y",
            "-f", "lavfi", "-i", f"{picture}=size={size}:rate={fps}", *sine,
            "-t", str(seconds), *video, *audio, "-f", "mpegts", *cbr, *flags, str(path),
        ],
        check=True,
        timeout=timeout,
    )
    return path


def decode_errors(path: Path, timeout: float = 60, video_only: bool = False) -> str:
    """What `ffmpeg -v error` says while decoding the file fully (empty: clean); with
    `video_only`, its video alone (a capture cut at a keyframe may end mid audio frame)."""
    streams = ["-map", "0:v"] if video_only else []
    r = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), *streams, "-f", "null", "-"],
        capture_output=True, timeout=timeout, check=False,
    )
    return r.stderr.decode(errors="replace").strip()


def bad_gops(data: bytes, tmp: Path) -> tuple[int, list[str]]:
    """Decodes each whole GOP of a capture on its own; returns how many there are and what
    `ffmpeg -v error` said about those that did not decode cleanly."""
    chunks = gop_chunks(data)
    bad = []
    for i, chunk in enumerate(chunks):
        path = tmp / f"gop{i}.ts"
        path.write_bytes(chunk)
        errors = decode_errors(path)
        if errors:
            bad.append(f"GOP {i}: {errors[:200]}")
        path.unlink()
    return len(chunks), bad
