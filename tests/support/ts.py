"""MPEG-TS analysis of captures, the way a TR 101 290 analyser or a receiver reads them:
continuity counters by ISO/IEC 13818-1's rules, PCR and PES time, random access points and
whole GOPs, the PAT/PMT layout in force, and which clip a packet's video payload came from.
"""

from __future__ import annotations

import random
from pathlib import Path

TS = 188
# Seven TS packets: the usual datagram of MPEG-TS over UDP and SRT.
CHUNK = 7 * TS


def random_ts(packets: int, seed: int = 1) -> bytes:
    """Valid-looking TS packets (sync byte, PID 0x100, counting CC) with random payloads."""
    rnd = random.Random(seed)
    out = bytearray()
    for i in range(packets):
        out += bytes([0x47, 0x01, 0x00, 0x10 | (i & 0x0F)]) + rnd.randbytes(TS - 4)
    return bytes(out)


def from_first_keyframe(data: bytes, path: Path) -> Path:
    """Writes `data` to `path` cut at the first TS packet that starts an H.264 IDR access unit
    (random_access_indicator set), so a capture joined mid-stream decodes from its first
    keyframe."""
    for off in range(0, len(data) - TS + 1, TS):
        if is_random_access(data[off:off + TS]):
            path.write_bytes(data[off:])
            return path
    raise AssertionError("no random access point in the capture")


def is_random_access(p: bytes) -> bool:
    """A TS packet whose adaptation field has random_access_indicator (an H.264 IDR starts)."""
    return bool(p[0] == 0x47 and p[3] & 0x20 and p[4] > 0 and p[5] & 0x40)


def whole_gops(data: bytes, path: Path) -> Path:
    """Writes the part of a capture from its first to its last random access point, so a
    capture joined and left mid-stream holds whole GOPs only."""
    offsets = range(0, len(data) - TS + 1, TS)
    starts = [off for off in offsets if is_random_access(data[off:off + TS])]
    assert len(starts) >= 2, "fewer than two random access points in the capture"
    path.write_bytes(data[starts[0]:starts[-1]])
    return path


def ts_continuity(data: bytes) -> dict[str, int]:
    """Counts continuity-counter errors and backward PCR jumps in a TS capture, as a TR 101 290
    analyser does (ISO/IEC 13818-1 2.4.3.3): a packet with payload counts up by one (or repeats
    once, a duplicate); a packet without payload repeats the last counter of its PID; a
    discontinuity_indicator starts the count over. `pcr_jumps` counts PCR steps forward of more
    than 0.7 s (a clock a splice placed wrongly; ISO 13818-1 wants one every 100 ms)."""
    last_cc: dict[int, int] = {}
    last_pcr: int | None = None
    pcr_pid: int | None = None
    cc_errors = pcr_back = pcr_jumps = packets = 0
    for off in range(0, len(data) - TS + 1, TS):
        p = data[off:off + TS]
        if p[0] != 0x47:
            cc_errors += 1
            continue
        packets += 1
        pid = ((p[1] & 0x1F) << 8) | p[2]
        has_af, has_payload = bool(p[3] & 0x20), bool(p[3] & 0x10)
        cc = p[3] & 0x0F
        discontinuity = has_af and p[4] > 0 and bool(p[5] & 0x80)
        if pid != 0x1FFF and pid in last_cc and not discontinuity:
            last = last_cc[pid]
            ok = cc in ((last + 1) & 0x0F, last) if has_payload else cc == last
            cc_errors += not ok
        if pid != 0x1FFF and (has_payload or pid not in last_cc or discontinuity):
            last_cc[pid] = cc
        if has_af and p[4] >= 7 and p[5] & 0x10:
            base = (p[6] << 25) | (p[7] << 17) | (p[8] << 9) | (p[9] << 1) | (p[10] >> 7)
            if pcr_pid is None:
                pcr_pid = pid
            if pid == pcr_pid:
                if last_pcr is not None and base < last_pcr:
                    pcr_back += 1
                if last_pcr is not None and base - last_pcr > 63_000:
                    pcr_jumps += 1
                last_pcr = base
    return {"packets": packets, "cc_errors": cc_errors, "pcr_backwards": pcr_back,
            "pcr_jumps": pcr_jumps}


def _section_start(p: bytes) -> int:
    """Offset of the PSI section in a packet that starts one."""
    off = 4 + (1 + p[4] if p[3] & 0x20 else 0)
    return off + 1 + p[off]


class Layout:
    """Follows PAT and PMT through a capture: the PMT PID and the video PID in force."""

    def __init__(self) -> None:
        self.pmt_pid: int | None = None
        self.video_pid: int | None = None
        self.pat: bytes | None = None
        self.pmt: bytes | None = None

    def see(self, p: bytes) -> None:
        if not p[1] & 0x40:
            return
        pid = ((p[1] & 0x1F) << 8) | p[2]
        if pid == 0:
            s = _section_start(p)
            self.pat = p
            self.pmt_pid = ((p[s + 10] & 0x1F) << 8) | p[s + 11]
        elif pid == self.pmt_pid:
            s = _section_start(p)
            self.pmt = p
            end = s + 3 + (((p[s + 1] & 0x0F) << 8) | p[s + 2]) - 4
            i = s + 12 + (((p[s + 10] & 0x0F) << 8) | p[s + 11])
            while i + 5 <= end:
                if p[i] in (0x1B, 0x24):
                    self.video_pid = ((p[i + 1] & 0x1F) << 8) | p[i + 2]
                    return
                i += 5 + (((p[i + 3] & 0x0F) << 8) | p[i + 4])


def gop_chunks(data: bytes) -> list[bytes]:
    """Splits a capture at each video packet with random_access_indicator; each chunk is
    prefixed with the PAT and PMT in force, so it decodes on its own."""
    layout = Layout()
    starts: list[tuple[int, bytes]] = []
    for off in range(0, len(data) - TS + 1, TS):
        p = data[off:off + TS]
        layout.see(p)
        pid = ((p[1] & 0x1F) << 8) | p[2]
        if pid == layout.video_pid and is_random_access(p) and layout.pat and layout.pmt:
            starts.append((off, layout.pat + layout.pmt))
    return [
        head + data[off:starts[i + 1][0]] for i, (off, head) in enumerate(starts[:-1])
    ]


def pes_backwards(data: bytes) -> dict[int, int]:
    """Per PID, how often a PES's DTS (else PTS) is not after the previous one's (33-bit
    wrap-aware). Empty when every stream's time only moves forward."""
    last: dict[int, int] = {}
    back: dict[int, int] = {}
    for off in range(0, len(data) - TS + 1, TS):
        p = data[off:off + TS]
        if not p[1] & 0x40 or not p[3] & 0x10:
            continue
        pid = ((p[1] & 0x1F) << 8) | p[2]
        o = 4 + (1 + p[4] if p[3] & 0x20 else 0)
        pes = p[o:]
        if len(pes) < 19 or pes[:3] != b"\0\0\1" or pes[3] in (0xBC, 0xBE, 0xBF, 0xF0, 0xF1):
            continue
        flags = pes[7] >> 6
        if flags not in (2, 3):
            continue
        at = 14 if flags == 3 else 9
        b = pes[at:at + 5]
        ts = (b[0] >> 1 & 7) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1
        if pid in last:
            step = (ts - last[pid]) % (1 << 33)
            if step == 0 or step >= 1 << 32:
                back[pid] = back.get(pid, 0) + 1
        last[pid] = ts
    return back


def video_payloads(data: bytes) -> set[bytes]:
    """The payloads of a clip's video packets that continue a PES (no header, so nothing a
    splice rewrites): what identifies the clip in a capture."""
    layout = Layout()
    out: set[bytes] = set()
    for off in range(0, len(data) - TS + 1, TS):
        p = data[off:off + TS]
        layout.see(p)
        pid = ((p[1] & 0x1F) << 8) | p[2]
        if pid == layout.video_pid and not p[1] & 0x40 and p[3] & 0x10:
            out.add(p[4 + (1 + p[4] if p[3] & 0x20 else 0):])
    return out


def sources_of(chunks: list[bytes], clips: dict[str, set[bytes]]) -> list[str | None]:
    """For each captured datagram, which clip its video payload packets came from: a name of
    `clips`, `"?"` if a payload is in none of them (rewritten, corrupted or the slate), or
    None if the datagram has no video payload that tells."""
    layout = Layout()
    out: list[str | None] = []
    for chunk in chunks:
        found: str | None = None
        for off in range(0, len(chunk) - TS + 1, TS):
            p = chunk[off:off + TS]
            layout.see(p)
            pid = ((p[1] & 0x1F) << 8) | p[2]
            if pid != layout.video_pid or p[1] & 0x40 or not p[3] & 0x10:
                continue
            payload = p[4 + (1 + p[4] if p[3] & 0x20 else 0):]
            names = [n for n, s in clips.items() if payload in s]
            if len(names) == 1:
                found = names[0]
            elif not names:
                found = "?"
        out.append(found)
    return out
