//! An SRT load for benchmarks, in one process: N SRT callers publish a TS file in a loop at a
//! steady bitrate each, and N receivers (SRT callers reading, or UDP ports) take what the relays
//! under test deliver; per-stream counts are printed as one JSON line, like `udp_load`'s. It
//! stands in for N `srt-live-transmit` publishers, whose processes (libsrt's threads times N)
//! would load the machine more than the relays they feed.
//!
//!     srt_load FILE BITRATE SECONDS WARMUP SEND RECV [--streamid T] [--read-streamid T]
//!              [--latency MS] [--groups G]
//!
//! SEND: `HOST:PORT,…`, where publisher k calls; RECV: `srt:HOST:PORT,…` (a caller reading) or
//! `udp:PORT,…` (a UDP port bound on 127.0.0.1), one per stream. `--streamid publish:r{k}` and
//! `--read-streamid read:r{k}` give the stream IDs ({k}: the stream's number); `--latency` is
//! every socket's SRTO_LATENCY (default libsrt's 120 ms). Each side's SRT sockets share G local
//! UDP ports (default 8), so G libsrt multiplexers (a receiving and a sending thread each) serve
//! them, not one per socket.
//!
//! The receivers connect first, then the publishers (both retried for up to 60 s, as a relay
//! may not listen yet); once all are connected the load prints `connected` and the streams run
//! for WARMUP + SECONDS (the caller measures CPU over the last SECONDS). One thread paces every
//! publisher (a tick each millisecond, sends that never wait: libsrt's send buffer is the
//! queue), one thread receives every SRT receiver (`srt_epoll`), one every UDP receiver
//! (`poll`). The receivers keep reading for twice the latency plus 500 ms after the last send,
//! so what is in flight through a relay arrives.
//!
//! `sent` counts the bytes libsrt took; `unsent` what it refused for want of room in a
//! publisher's send buffer (a relay that does not keep up), per stream.
//!
//! The publishers send the file in 7×188-byte messages with each PID's continuity counter
//! rewritten to run on across the file's loops; the receivers count continuity errors (and
//! bytes that are not TS) per stream, so a lost message shows where it was lost. The JSON also
//! has, per stream, libsrt's counts of packets the publisher dropped (too late to send) and the
//! receiver lost and dropped (`pktSndDropTotal`, `pktRcvLossTotal`, `pktRcvDropTotal`).

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::raw::c_int;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use _castway::srt::ffi::{self, SRTSOCKET};
use _castway::srt::{Io, Socket};

const TS: usize = 188;
const CHUNK: usize = 7 * TS;
/// How long connecting may take, retries included.
const CONNECT_FOR: Duration = Duration::from_secs(60);
/// A refused or failed connection is tried again after this long.
const RETRY_AFTER: Duration = Duration::from_millis(250);
const NULL_PID: usize = 0x1fff;

#[derive(Clone)]
enum Recv {
    Srt(SocketAddr),
    Udp(u16),
}

struct Args {
    file: String,
    bitrate: f64,
    seconds: f64,
    warmup: f64,
    send: Vec<SocketAddr>,
    recv: Vec<Recv>,
    streamid: Option<String>,
    read_streamid: Option<String>,
    latency: i32,
    groups: usize,
}

fn fail(what: impl std::fmt::Display) -> ! {
    eprintln!("srt_load: {what}");
    std::process::exit(2);
}

fn address(s: &str) -> SocketAddr {
    (s.to_socket_addrs().ok())
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| fail(format!("`{s}` is not HOST:PORT")))
}

fn parse_args() -> Args {
    let usage = "usage: srt_load FILE BITRATE SECONDS WARMUP SEND RECV [--streamid T] \
                 [--read-streamid T] [--latency MS] [--groups G]";
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.len() < 6 {
        fail(usage);
    }
    let number = |i: usize, what: &str| -> f64 {
        argv[i]
            .parse()
            .unwrap_or_else(|_| fail(format!("{what} `{}` is not a number", argv[i])))
    };
    let mut args = Args {
        file: argv[0].clone(),
        bitrate: number(1, "BITRATE"),
        seconds: number(2, "SECONDS"),
        warmup: number(3, "WARMUP"),
        send: argv[4].split(',').map(address).collect(),
        recv: (argv[5].split(','))
            .map(|r| match r.split_once(':') {
                Some(("srt", a)) => Recv::Srt(address(a)),
                Some(("udp", p)) => Recv::Udp(
                    p.parse()
                        .unwrap_or_else(|_| fail(format!("RECV `{r}`: not a port"))),
                ),
                _ => fail(format!("RECV `{r}` is neither srt:HOST:PORT nor udp:PORT")),
            })
            .collect(),
        streamid: None,
        read_streamid: None,
        latency: 120,
        groups: 8,
    };
    let mut rest = argv[6..].iter();
    while let Some(flag) = rest.next() {
        let value = rest
            .next()
            .unwrap_or_else(|| fail(format!("{flag} needs a value")));
        let int = || -> i64 {
            value
                .parse()
                .unwrap_or_else(|_| fail(format!("{flag} `{value}` is not a number")))
        };
        match flag.as_str() {
            "--streamid" => args.streamid = Some(value.clone()),
            "--read-streamid" => args.read_streamid = Some(value.clone()),
            "--latency" => args.latency = int() as i32,
            "--groups" => args.groups = int().max(1) as usize,
            _ => fail(format!("unknown option {flag}; {usage}")),
        }
    }
    if args.send.len() != args.recv.len() {
        fail("SEND and RECV must list as many streams");
    }
    args
}

/// The unspecified address of `target`'s family, on `port`.
fn local(target: SocketAddr, port: u16) -> SocketAddr {
    match target {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], port)),
        SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], port)),
    }
}

/// Binds `socket` to `addr` with libsrt's own UDP socket (`srt_bind`): sockets bound to the
/// same port share one multiplexer.
fn bind(socket: &Socket, addr: SocketAddr) -> Result<(), String> {
    // SAFETY: all-zero is a valid sockaddr_storage; the address is written as its family says.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    // SAFETY: a valid address of the length given.
    let r = unsafe {
        ffi::srt_bind(
            socket.id(),
            (&storage as *const libc::sockaddr_storage).cast(),
            len as c_int,
        )
    };
    if r == ffi::SRT_ERROR {
        return Err(format!(
            "cannot bind {addr}: {}",
            _castway::srt::socket::last_error().1
        ));
    }
    Ok(())
}

/// Connects one caller per target (`streamid` with `{k}` replaced), spread over `groups` local
/// ports, retrying refusals until `CONNECT_FOR` has passed; all connected, or an error naming
/// the first target that never connected and why.
fn connect_all(
    targets: &[SocketAddr],
    streamid: Option<&str>,
    latency: i32,
    groups: usize,
) -> Result<Vec<Socket>, String> {
    let n = targets.len();
    let mut ports: Vec<Option<u16>> = vec![None; groups];
    let mut sockets: Vec<Option<Socket>> = (0..n).map(|_| None).collect();
    let mut done = vec![false; n];
    let mut why: Vec<String> = vec![String::new(); n];
    let mut retry: Vec<(Instant, usize)> = (0..n).map(|k| (Instant::now(), k)).collect();
    // SAFETY: an epoll owned by this function, released before it returns.
    let eid = unsafe { ffi::srt_epoll_create() };
    unsafe { ffi::srt_epoll_set(eid, ffi::SRT_EPOLL_ENABLE_EMPTY) };
    let mut by_id: HashMap<SRTSOCKET, usize> = HashMap::new();
    let deadline = Instant::now() + CONNECT_FOR;
    let mut ready = vec![ffi::SRT_EPOLL_EVENT::default(); 256];
    let result = loop {
        if done.iter().all(|d| *d) {
            break Ok(());
        }
        if Instant::now() >= deadline {
            let k = done.iter().position(|d| !d).unwrap_or(0);
            break Err(format!(
                "{} of {n} did not connect in {} s; {}: {}",
                done.iter().filter(|d| !**d).count(),
                CONNECT_FOR.as_secs(),
                targets[k],
                why[k]
            ));
        }
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = retry.drain(..).partition(|(t, _)| *t <= now);
        retry = later;
        for (_, k) in due {
            let g = k % groups;
            let s = Socket::new()?;
            s.set_int(ffi::SRTO_TRANSTYPE, 0, "transtype")?;
            s.set_int(ffi::SRTO_LATENCY, latency, "latency")?;
            if let Some(t) = streamid {
                s.set_str(
                    ffi::SRTO_STREAMID,
                    &t.replace("{k}", &k.to_string()),
                    "streamid",
                )?;
            }
            bind(&s, local(targets[k], ports[g].unwrap_or(0)))?;
            if ports[g].is_none() {
                ports[g] = s.local_address().map(|a| a.port());
            }
            s.connect(targets[k])?;
            let events = ffi::SRT_EPOLL_OUT | ffi::SRT_EPOLL_ERR;
            // SAFETY: a socket id and a flag word.
            unsafe { ffi::srt_epoll_add_usock(eid, s.id(), &events) };
            by_id.insert(s.id(), k);
            sockets[k] = Some(s);
        }
        // SAFETY: `ready` holds as many events as given.
        let got = unsafe { ffi::srt_epoll_uwait(eid, ready.as_mut_ptr(), 256, 50) };
        for ev in &ready[..got.max(0) as usize] {
            let Some(&k) = by_id.get(&ev.fd) else {
                continue;
            };
            // SAFETY: as above.
            unsafe { ffi::srt_epoll_remove_usock(eid, ev.fd) };
            by_id.remove(&ev.fd);
            let s = sockets[k].as_ref().expect("a socket being connected");
            if s.connected() {
                done[k] = true;
            } else {
                why[k] = s.reject_reason();
                sockets[k] = None;
                retry.push((Instant::now() + RETRY_AFTER, k));
            }
        }
    };
    // SAFETY: the epoll made above; its sockets are only taken out of it.
    unsafe { ffi::srt_epoll_release(eid) };
    result.map(|()| sockets.into_iter().map(|s| s.expect("connected")).collect())
}

/// Rewrites each PID's continuity counter of a message to go on from `cc` (per PID).
fn restamp(chunk: &mut [u8], cc: &mut [u8]) {
    for p in chunk.chunks_exact_mut(TS) {
        let pid = (usize::from(p[1] & 0x1f) << 8) | usize::from(p[2]);
        if p[0] != 0x47 || pid == NULL_PID {
            continue;
        }
        if p[3] & 0x10 != 0 {
            p[3] = (p[3] & 0xf0) | cc[pid];
            cc[pid] = (cc[pid] + 1) & 0x0f;
        } else {
            // No payload: the counter stays the last one sent.
            p[3] = (p[3] & 0xf0) | (cc[pid].wrapping_sub(1) & 0x0f);
        }
    }
}

/// Continuity errors (and packets without a sync byte) in a message, against `last` per PID
/// (0xff: not seen yet).
fn check(data: &[u8], last: &mut [u8]) -> u64 {
    let mut errors = 0;
    for p in data.chunks(TS) {
        if p.len() < TS || p[0] != 0x47 {
            errors += 1;
            continue;
        }
        let pid = (usize::from(p[1] & 0x1f) << 8) | usize::from(p[2]);
        if pid == NULL_PID || p[3] & 0x10 == 0 {
            continue;
        }
        let cc = p[3] & 0x0f;
        let l = last[pid];
        if l != 0xff && cc != (l + 1) & 0x0f && cc != l {
            errors += 1;
        }
        last[pid] = cc;
    }
    errors
}

/// What the receivers counted, per stream.
struct Received {
    bytes: Vec<u64>,
    cc_errors: Vec<u64>,
}

/// Receives on every SRT receiver (`which[i]` is receiver i's stream) until `done`.
fn receive_srt(sockets: &[Socket], which: &[usize], n: usize, done: &AtomicBool) -> Received {
    let mut got = Received {
        bytes: vec![0; n],
        cc_errors: vec![0; n],
    };
    let mut last = vec![[0xffu8; 8192]; sockets.len()];
    // SAFETY: an epoll owned by this function.
    let eid = unsafe { ffi::srt_epoll_create() };
    unsafe { ffi::srt_epoll_set(eid, ffi::SRT_EPOLL_ENABLE_EMPTY) };
    let mut index: HashMap<SRTSOCKET, usize> = HashMap::new();
    for (i, s) in sockets.iter().enumerate() {
        let events = ffi::SRT_EPOLL_IN | ffi::SRT_EPOLL_ERR;
        // SAFETY: a socket id and a flag word.
        unsafe { ffi::srt_epoll_add_usock(eid, s.id(), &events) };
        index.insert(s.id(), i);
    }
    let mut ready = vec![ffi::SRT_EPOLL_EVENT::default(); 512];
    let mut buf = [0u8; 1500];
    while !done.load(Ordering::Relaxed) {
        // SAFETY: `ready` holds as many events as given.
        let n = unsafe { ffi::srt_epoll_uwait(eid, ready.as_mut_ptr(), 512, 100) };
        for ev in &ready[..n.max(0) as usize] {
            let Some(&i) = index.get(&ev.fd) else {
                continue;
            };
            loop {
                match sockets[i].recv(&mut buf) {
                    Io::Done(len) => {
                        got.bytes[which[i]] += len as u64;
                        got.cc_errors[which[i]] += check(&buf[..len], &mut last[i]);
                    }
                    Io::WouldBlock => break,
                    Io::Failed(_) => {
                        // Broken: what did not arrive is counted as not delivered.
                        unsafe { ffi::srt_epoll_remove_usock(eid, ev.fd) };
                        break;
                    }
                }
            }
        }
    }
    unsafe { ffi::srt_epoll_release(eid) };
    got
}

/// Receives on every UDP receiver until `done`.
fn receive_udp(sockets: &[UdpSocket], which: &[usize], n: usize, done: &AtomicBool) -> Received {
    let mut got = Received {
        bytes: vec![0; n],
        cc_errors: vec![0; n],
    };
    let mut last = vec![[0xffu8; 8192]; sockets.len()];
    let mut fds: Vec<libc::pollfd> = (sockets.iter())
        .map(|s| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let mut buf = [0u8; 65536];
    while !done.load(Ordering::Relaxed) {
        // SAFETY: fds is a valid array of pollfd for the duration of the call.
        if unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as _, 100) } <= 0 {
            continue;
        }
        for (i, fd) in fds.iter_mut().enumerate() {
            if fd.revents == 0 {
                continue;
            }
            fd.revents = 0;
            while let Ok(len) = sockets[i].recv(&mut buf) {
                got.bytes[which[i]] += len as u64;
                got.cc_errors[which[i]] += check(&buf[..len], &mut last[i]);
            }
        }
    }
    got
}

fn list<T: ToString>(v: &[T]) -> String {
    v.iter().map(T::to_string).collect::<Vec<_>>().join(",")
}

fn main() {
    let args = parse_args();
    let data = std::fs::read(&args.file)
        .unwrap_or_else(|e| fail(format!("cannot read {}: {e}", args.file)));
    let chunks: Vec<&[u8]> = data.chunks_exact(CHUNK).collect();
    if chunks.is_empty() {
        fail(format!("{} holds less than one message", args.file));
    }
    let n = args.send.len();

    // Receivers first: nothing a relay forwards before its reader is there counts as lost.
    let (mut srt_at, mut srt_to, mut udp_at, mut udp) = (vec![], vec![], vec![], vec![]);
    for (k, r) in args.recv.iter().enumerate() {
        match r {
            Recv::Srt(a) => {
                srt_at.push(k);
                srt_to.push(*a);
            }
            Recv::Udp(p) => {
                let s = UdpSocket::bind(("127.0.0.1", *p))
                    .unwrap_or_else(|e| fail(format!("cannot bind UDP port {p}: {e}")));
                s.set_nonblocking(true).expect("a non-blocking socket");
                udp_at.push(k);
                udp.push(s);
            }
        }
    }
    let readers = connect_all(
        &srt_to,
        args.read_streamid.as_deref(),
        args.latency,
        args.groups,
    )
    .unwrap_or_else(|e| fail(format!("receivers: {e}")));
    let publishers = connect_all(
        &args.send,
        args.streamid.as_deref(),
        args.latency,
        args.groups,
    )
    .unwrap_or_else(|e| fail(format!("publishers: {e}")));
    println!("connected");

    let done = Arc::new(AtomicBool::new(false));
    let readers = Arc::new(readers);
    let srt_thread = {
        let (done, readers, which) = (done.clone(), readers.clone(), srt_at.clone());
        std::thread::spawn(move || receive_srt(&readers, &which, n, &done))
    };
    let udp_thread = {
        let done = done.clone();
        std::thread::spawn(move || receive_udp(&udp, &udp_at, n, &done))
    };

    let start = Instant::now();
    let end = start + Duration::from_secs_f64(args.warmup + args.seconds);
    let interval = CHUNK as f64 * 8.0 / args.bitrate;
    let mut sent = vec![0u64; n];
    let mut unsent = vec![0u64; n];
    let mut cc = vec![[0u8; 8192]; n];
    let mut next: Vec<u64> = vec![0; n];
    let mut broken = vec![false; n];
    let mut msg = [0u8; CHUNK];
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let t = now.duration_since(start).as_secs_f64();
        for k in 0..n {
            // Stream k starts k/n of an interval late, so the messages are spread over time.
            let due = ((t / interval) - k as f64 / n as f64).max(0.0) as u64;
            while next[k] <= due {
                msg.copy_from_slice(chunks[(next[k] as usize) % chunks.len()]);
                restamp(&mut msg, &mut cc[k]);
                next[k] += 1;
                if broken[k] {
                    continue;
                }
                match publishers[k].send(&msg) {
                    Io::Done(len) => sent[k] += len as u64,
                    // No room in libsrt's send buffer: not sent (counted apart).
                    Io::WouldBlock => unsent[k] += msg.len() as u64,
                    Io::Failed(e) => {
                        eprintln!("srt_load: publisher {k} ({}): {e}", args.send[k]);
                        broken[k] = true;
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    // Through a relay a message spends up to a latency in each of two hops.
    std::thread::sleep(Duration::from_millis(2 * args.latency as u64 + 500));
    done.store(true, Ordering::Relaxed);
    let from_srt = srt_thread.join().expect("the SRT receiver");
    let from_udp = udp_thread.join().expect("the UDP receiver");
    let received: Vec<u64> = (0..n)
        .map(|k| from_srt.bytes[k] + from_udp.bytes[k])
        .collect();
    let cc_errors: Vec<u64> = (0..n)
        .map(|k| from_srt.cc_errors[k] + from_udp.cc_errors[k])
        .collect();
    let stat = |s: &Socket, f: fn(&ffi::CBytePerfMon) -> i64| s.stats().map_or(0, |p| f(&p));
    let sender_dropped: Vec<i64> = (publishers.iter())
        .map(|s| stat(s, |p| p.pktSndDropTotal.into()))
        .collect();
    let (mut receiver_lost, mut receiver_dropped) = (vec![0i64; n], vec![0i64; n]);
    for (s, &k) in readers.iter().zip(&srt_at) {
        receiver_lost[k] = stat(s, |p| p.pktRcvLossTotal.into());
        receiver_dropped[k] = stat(s, |p| p.pktRcvDropTotal.into());
    }
    println!(
        "{{\"sent\":[{}],\"unsent\":[{}],\"received\":[{}],\"cc_errors\":[{}],\"sender_dropped\":[{}],\
         \"receiver_lost\":[{}],\"receiver_dropped\":[{}]}}",
        list(&sent),
        list(&unsent),
        list(&received),
        list(&cc_errors),
        list(&sender_dropped),
        list(&receiver_lost),
        list(&receiver_dropped),
    );
    drop(publishers);
    drop(readers);
}
