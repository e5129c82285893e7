//! Shared listeners that serve many routes on one port (DESIGN.md): the shared SRT port
//! (`srt`, `castway serve --srt-listen`) and what an SRT caller's stream ID asks of it
//! (`streamid`).

pub mod srt;
pub mod streamid;
