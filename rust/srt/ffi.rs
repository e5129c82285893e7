//! The part of libsrt 1.5's C API castway uses, declared by hand after `/usr/include/srt/srt.h`
//! (Debian's `libsrt-openssl-dev`). Option numbers, the epoll flags and `CBytePerfMon`'s layout
//! must match that header exactly; `tests::layout_matches_the_header` checks the struct's size
//! and a few offsets against values computed from it.

#![allow(non_camel_case_types, non_snake_case, dead_code)]

use std::os::raw::{c_char, c_int, c_void};

pub type SRTSOCKET = c_int;
pub const SRT_INVALID_SOCK: SRTSOCKET = -1;
pub const SRT_ERROR: c_int = -1;

// SRT_SOCKSTATUS
pub const SRTS_INIT: c_int = 1;
pub const SRTS_OPENED: c_int = 2;
pub const SRTS_LISTENING: c_int = 3;
pub const SRTS_CONNECTING: c_int = 4;
pub const SRTS_CONNECTED: c_int = 5;
pub const SRTS_BROKEN: c_int = 6;
pub const SRTS_CLOSING: c_int = 7;
pub const SRTS_CLOSED: c_int = 8;
pub const SRTS_NONEXIST: c_int = 9;

// SRT_SOCKOPT (the numbers of srt.h's enum)
pub const SRTO_MSS: c_int = 0;
pub const SRTO_SNDSYN: c_int = 1;
pub const SRTO_RCVSYN: c_int = 2;
pub const SRTO_FC: c_int = 4;
pub const SRTO_SNDBUF: c_int = 5;
pub const SRTO_RCVBUF: c_int = 6;
pub const SRTO_LINGER: c_int = 7;
pub const SRTO_UDP_SNDBUF: c_int = 8;
pub const SRTO_UDP_RCVBUF: c_int = 9;
pub const SRTO_RENDEZVOUS: c_int = 12;
pub const SRTO_SNDTIMEO: c_int = 13;
pub const SRTO_RCVTIMEO: c_int = 14;
pub const SRTO_REUSEADDR: c_int = 15;
pub const SRTO_MAXBW: c_int = 16;
pub const SRTO_STATE: c_int = 17;
pub const SRTO_EVENT: c_int = 18;
pub const SRTO_SNDDATA: c_int = 19;
pub const SRTO_RCVDATA: c_int = 20;
pub const SRTO_SENDER: c_int = 21;
pub const SRTO_TSBPDMODE: c_int = 22;
pub const SRTO_LATENCY: c_int = 23;
pub const SRTO_INPUTBW: c_int = 24;
pub const SRTO_OHEADBW: c_int = 25;
pub const SRTO_PASSPHRASE: c_int = 26;
pub const SRTO_PBKEYLEN: c_int = 27;
pub const SRTO_KMSTATE: c_int = 28;
pub const SRTO_IPTTL: c_int = 29;
pub const SRTO_IPTOS: c_int = 30;
pub const SRTO_TLPKTDROP: c_int = 31;
pub const SRTO_SNDDROPDELAY: c_int = 32;
pub const SRTO_NAKREPORT: c_int = 33;
pub const SRTO_VERSION: c_int = 34;
pub const SRTO_PEERVERSION: c_int = 35;
pub const SRTO_CONNTIMEO: c_int = 36;
pub const SRTO_DRIFTTRACER: c_int = 37;
pub const SRTO_MININPUTBW: c_int = 38;
pub const SRTO_SNDKMSTATE: c_int = 40;
pub const SRTO_RCVKMSTATE: c_int = 41;
pub const SRTO_LOSSMAXTTL: c_int = 42;
pub const SRTO_RCVLATENCY: c_int = 43;
pub const SRTO_PEERLATENCY: c_int = 44;
pub const SRTO_MINVERSION: c_int = 45;
pub const SRTO_STREAMID: c_int = 46;
pub const SRTO_CONGESTION: c_int = 47;
pub const SRTO_MESSAGEAPI: c_int = 48;
pub const SRTO_PAYLOADSIZE: c_int = 49;
pub const SRTO_TRANSTYPE: c_int = 50;
pub const SRTO_KMREFRESHRATE: c_int = 51;
pub const SRTO_KMPREANNOUNCE: c_int = 52;
pub const SRTO_ENFORCEDENCRYPTION: c_int = 53;
pub const SRTO_IPV6ONLY: c_int = 54;
pub const SRTO_PEERIDLETIMEO: c_int = 55;
pub const SRTO_BINDTODEVICE: c_int = 56;
pub const SRTO_GROUPCONNECT: c_int = 57;
pub const SRTO_GROUPMINSTABLETIMEO: c_int = 58;
pub const SRTO_PACKETFILTER: c_int = 60;
pub const SRTO_RETRANSMITALGO: c_int = 61;

// SRT_EPOLL_OPT
pub const SRT_EPOLL_IN: c_int = 0x1;
pub const SRT_EPOLL_OUT: c_int = 0x4;
pub const SRT_EPOLL_ERR: c_int = 0x8;
// SRT_EPOLL_FLAGS
pub const SRT_EPOLL_ENABLE_EMPTY: i32 = 1;

// SRT_ERRNO (those castway tells apart)
pub const SRT_ECONNLOST: c_int = 2001;
pub const SRT_ENOCONN: c_int = 2002;
pub const SRT_EASYNCSND: c_int = 6001;
pub const SRT_EASYNCRCV: c_int = 6002;

// SRT_REJECT_REASON
pub const SRT_REJ_UNKNOWN: c_int = 0;
pub const SRT_REJ_BADSECRET: c_int = 10;

/// `SRT_EPOLL_EVENT`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct SRT_EPOLL_EVENT {
    pub fd: SRTSOCKET,
    pub events: c_int,
}

/// `struct CBytePerfMon` (`SRT_TRACEBSTATS`), field for field.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct CBytePerfMon {
    // global measurements
    pub msTimeStamp: i64,
    pub pktSentTotal: i64,
    pub pktRecvTotal: i64,
    pub pktSndLossTotal: c_int,
    pub pktRcvLossTotal: c_int,
    pub pktRetransTotal: c_int,
    pub pktSentACKTotal: c_int,
    pub pktRecvACKTotal: c_int,
    pub pktSentNAKTotal: c_int,
    pub pktRecvNAKTotal: c_int,
    pub usSndDurationTotal: i64,
    pub pktSndDropTotal: c_int,
    pub pktRcvDropTotal: c_int,
    pub pktRcvUndecryptTotal: c_int,
    pub byteSentTotal: u64,
    pub byteRecvTotal: u64,
    pub byteRcvLossTotal: u64,
    pub byteRetransTotal: u64,
    pub byteSndDropTotal: u64,
    pub byteRcvDropTotal: u64,
    pub byteRcvUndecryptTotal: u64,
    // local measurements
    pub pktSent: i64,
    pub pktRecv: i64,
    pub pktSndLoss: c_int,
    pub pktRcvLoss: c_int,
    pub pktRetrans: c_int,
    pub pktRcvRetrans: c_int,
    pub pktSentACK: c_int,
    pub pktRecvACK: c_int,
    pub pktSentNAK: c_int,
    pub pktRecvNAK: c_int,
    pub mbpsSendRate: f64,
    pub mbpsRecvRate: f64,
    pub usSndDuration: i64,
    pub pktReorderDistance: c_int,
    pub pktRcvAvgBelatedTime: f64,
    pub pktRcvBelated: i64,
    pub pktSndDrop: c_int,
    pub pktRcvDrop: c_int,
    pub pktRcvUndecrypt: c_int,
    pub byteSent: u64,
    pub byteRecv: u64,
    pub byteRcvLoss: u64,
    pub byteRetrans: u64,
    pub byteSndDrop: u64,
    pub byteRcvDrop: u64,
    pub byteRcvUndecrypt: u64,
    // instant measurements
    pub usPktSndPeriod: f64,
    pub pktFlowWindow: c_int,
    pub pktCongestionWindow: c_int,
    pub pktFlightSize: c_int,
    pub msRTT: f64,
    pub mbpsBandwidth: f64,
    pub byteAvailSndBuf: c_int,
    pub byteAvailRcvBuf: c_int,
    pub mbpsMaxBW: f64,
    pub byteMSS: c_int,
    pub pktSndBuf: c_int,
    pub byteSndBuf: c_int,
    pub msSndBuf: c_int,
    pub msSndTsbPdDelay: c_int,
    pub pktRcvBuf: c_int,
    pub byteRcvBuf: c_int,
    pub msRcvBuf: c_int,
    pub msRcvTsbPdDelay: c_int,
    pub pktSndFilterExtraTotal: c_int,
    pub pktRcvFilterExtraTotal: c_int,
    pub pktRcvFilterSupplyTotal: c_int,
    pub pktRcvFilterLossTotal: c_int,
    pub pktSndFilterExtra: c_int,
    pub pktRcvFilterExtra: c_int,
    pub pktRcvFilterSupply: c_int,
    pub pktRcvFilterLoss: c_int,
    pub pktReorderTolerance: c_int,
    // new in 1.5.0
    pub pktSentUniqueTotal: i64,
    pub pktRecvUniqueTotal: i64,
    pub byteSentUniqueTotal: u64,
    pub byteRecvUniqueTotal: u64,
    pub pktSentUnique: i64,
    pub pktRecvUnique: i64,
    pub byteSentUnique: u64,
    pub byteRecvUnique: u64,
}

/// `srt_listen_callback_fn`: called on libsrt's receiving thread with the new socket of a
/// caller and its stream ID before the handshake completes; -1 refuses the caller.
pub type ListenCallback = unsafe extern "C" fn(
    opaque: *mut c_void,
    ns: SRTSOCKET,
    hsversion: c_int,
    peeraddr: *const libc::sockaddr,
    streamid: *const c_char,
) -> c_int;

/// `SRT_LOG_HANDLER_FN`: called on the thread that logs, with the level (syslog's), the
/// source file and line, the functional area's name and the message.
pub type LogHandler = unsafe extern "C" fn(
    opaque: *mut c_void,
    level: c_int,
    file: *const c_char,
    line: c_int,
    area: *const c_char,
    message: *const c_char,
);
/// `SRT_LOGFA_CONN`: connection establishment and handshake.
pub const SRT_LOGFA_CONN: c_int = 2;
/// `SRT_LOGF_DISABLE_TIME | _THREADNAME | _SEVERITY | _EOL`: the message alone.
pub const SRT_LOGF_BARE: c_int = 1 | 2 | 4 | 8;

// OpenSSL's libcrypto (libsrt's own crypto library): the SHA-256 castway API keys are kept as.
#[link(name = "crypto")]
extern "C" {
    pub fn SHA256(d: *const u8, n: usize, md: *mut u8) -> *mut u8;
}

// libsrt itself is linked by build.rs (pkg-config `srt`).
extern "C" {
    pub fn srt_startup() -> c_int;
    pub fn srt_getversion() -> u32;
    pub fn srt_setloglevel(ll: c_int);
    pub fn srt_resetlogfa(fara: *const c_int, fara_size: usize);
    pub fn srt_setlogflags(flags: c_int);
    pub fn srt_setloghandler(opaque: *mut c_void, handler: LogHandler);
    pub fn srt_create_socket() -> SRTSOCKET;
    pub fn srt_bind(u: SRTSOCKET, name: *const libc::sockaddr, namelen: c_int) -> c_int;
    pub fn srt_bind_acquire(u: SRTSOCKET, udpsock: c_int) -> c_int;
    pub fn srt_listen(u: SRTSOCKET, backlog: c_int) -> c_int;
    pub fn srt_accept(u: SRTSOCKET, addr: *mut libc::sockaddr, addrlen: *mut c_int) -> SRTSOCKET;
    pub fn srt_connect(u: SRTSOCKET, name: *const libc::sockaddr, namelen: c_int) -> c_int;
    pub fn srt_rendezvous(
        u: SRTSOCKET,
        local_name: *const libc::sockaddr,
        local_namelen: c_int,
        remote_name: *const libc::sockaddr,
        remote_namelen: c_int,
    ) -> c_int;
    pub fn srt_close(u: SRTSOCKET) -> c_int;
    pub fn srt_getpeername(u: SRTSOCKET, name: *mut libc::sockaddr, namelen: *mut c_int) -> c_int;
    pub fn srt_getsockname(u: SRTSOCKET, name: *mut libc::sockaddr, namelen: *mut c_int) -> c_int;
    pub fn srt_getsockflag(
        u: SRTSOCKET,
        opt: c_int,
        optval: *mut c_void,
        optlen: *mut c_int,
    ) -> c_int;
    pub fn srt_setsockflag(u: SRTSOCKET, opt: c_int, optval: *const c_void, optlen: c_int)
        -> c_int;
    pub fn srt_sendmsg(
        u: SRTSOCKET,
        buf: *const c_char,
        len: c_int,
        ttl: c_int,
        inorder: c_int,
    ) -> c_int;
    pub fn srt_recvmsg(u: SRTSOCKET, buf: *mut c_char, len: c_int) -> c_int;
    pub fn srt_getlasterror_str() -> *const c_char;
    pub fn srt_getlasterror(errno_loc: *mut c_int) -> c_int;
    pub fn srt_clearlasterror();
    pub fn srt_bstats(u: SRTSOCKET, perf: *mut CBytePerfMon, clear: c_int) -> c_int;
    pub fn srt_bistats(
        u: SRTSOCKET,
        perf: *mut CBytePerfMon,
        clear: c_int,
        instantaneous: c_int,
    ) -> c_int;
    pub fn srt_getsockstate(u: SRTSOCKET) -> c_int;
    pub fn srt_epoll_create() -> c_int;
    pub fn srt_epoll_add_usock(eid: c_int, u: SRTSOCKET, events: *const c_int) -> c_int;
    pub fn srt_epoll_remove_usock(eid: c_int, u: SRTSOCKET) -> c_int;
    pub fn srt_epoll_update_usock(eid: c_int, u: SRTSOCKET, events: *const c_int) -> c_int;
    pub fn srt_epoll_uwait(
        eid: c_int,
        fdsSet: *mut SRT_EPOLL_EVENT,
        fdsSize: c_int,
        msTimeOut: i64,
    ) -> c_int;
    pub fn srt_epoll_set(eid: c_int, flags: i32) -> i32;
    pub fn srt_epoll_release(eid: c_int) -> c_int;
    pub fn srt_getrejectreason(sock: SRTSOCKET) -> c_int;
    pub fn srt_setrejectreason(sock: SRTSOCKET, value: c_int) -> c_int;
    pub fn srt_listen_callback(
        lsn: SRTSOCKET,
        hook_fn: ListenCallback,
        hook_opaque: *mut c_void,
    ) -> c_int;
    pub fn srt_rejectreason_str(id: c_int) -> *const c_char;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn layout_matches_the_header() {
        // Computed from srt.h's declaration with the x86-64 System V ABI (gcc agrees:
        // `offsetof(struct CBytePerfMon, msRTT)` and friends).
        assert_eq!(offset_of!(CBytePerfMon, usSndDurationTotal), 56);
        assert_eq!(offset_of!(CBytePerfMon, byteSentTotal), 80);
        assert_eq!(offset_of!(CBytePerfMon, pktSent), 136);
        assert_eq!(offset_of!(CBytePerfMon, mbpsSendRate), 184);
        assert_eq!(offset_of!(CBytePerfMon, msRTT), 328);
        assert_eq!(offset_of!(CBytePerfMon, msRcvTsbPdDelay), 392);
        assert_eq!(offset_of!(CBytePerfMon, pktSentUniqueTotal), 432);
        assert_eq!(size_of::<CBytePerfMon>(), 496);
    }
}
