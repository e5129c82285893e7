//! Sockets served without a GStreamer pipeline: the pool of epoll-driven I/O threads.

pub mod epoll;
