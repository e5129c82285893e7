//! Shared listeners that serve many routes on one port (DESIGN.md). For now: what an SRT
//! caller's stream ID asks for (`streamid`), the first piece of the shared SRT port of issue
//! 12 part 4 (`castway serve --srt-listen`), which is not built yet.

pub mod streamid;
