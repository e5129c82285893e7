//! A UDP load for benchmarks: sends a TS file in a loop to N ports at a steady bitrate each,
//! receives on N other ports, and prints per-port byte counts as one JSON line. One thread
//! paces every stream (a tick each millisecond), another receives, so the load costs the same
//! whatever relays the streams.
//!
//!     udp_load FILE BITRATE SECONDS WARMUP IN_PORT,… OUT_PORT,…
//!
//! The streams run for WARMUP + SECONDS (the caller measures CPU over the last SECONDS); every
//! datagram sent and received over the whole run is counted, and the receivers keep reading
//! for 200 ms after the last send, so what is in flight arrives.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHUNK: usize = 7 * 188;

fn ports(arg: &str) -> Vec<u16> {
    arg.split(',')
        .map(|p| p.parse().expect("a port number"))
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 7 {
        eprintln!("usage: udp_load FILE BITRATE SECONDS WARMUP IN_PORTS OUT_PORTS");
        std::process::exit(2);
    }
    let data = std::fs::read(&args[1]).expect("the TS file");
    let chunks: Vec<&[u8]> = data.chunks_exact(CHUNK).collect();
    let bitrate: f64 = args[2].parse().expect("bits per second");
    let seconds: f64 = args[3].parse().expect("seconds");
    let warmup: f64 = args[4].parse().expect("seconds");
    let (ins, outs) = (ports(&args[5]), ports(&args[6]));
    assert_eq!(ins.len(), outs.len(), "one output port per input port");
    let n = ins.len();

    let receivers: Vec<UdpSocket> = outs
        .iter()
        .map(|p| {
            let s = UdpSocket::bind(("127.0.0.1", *p)).expect("bind an output port");
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(warmup + seconds);
    let done = Arc::new(AtomicBool::new(false));
    let receiving = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut fds: Vec<libc::pollfd> = receivers
                .iter()
                .map(|s| libc::pollfd {
                    fd: s.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            let mut got = vec![0u64; receivers.len()];
            let mut buf = [0u8; 65536];
            while !done.load(Ordering::Relaxed) {
                // SAFETY: fds is a valid array of pollfd for the duration of the call.
                let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as _, 100) };
                if ready <= 0 {
                    continue;
                }
                for (i, fd) in fds.iter_mut().enumerate() {
                    if fd.revents == 0 {
                        continue;
                    }
                    fd.revents = 0;
                    while let Ok(len) = receivers[i].recv(&mut buf) {
                        got[i] += len as u64;
                    }
                }
            }
            got
        })
    };

    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let interval = CHUNK as f64 * 8.0 / bitrate;
    let mut sent = vec![0u64; n];
    // Stream k starts k/n of an interval late, so the datagrams are spread over time.
    let mut next: Vec<u64> = vec![0; n];
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let t = now.duration_since(start).as_secs_f64();
        for k in 0..n {
            let due = ((t / interval) - k as f64 / n as f64).max(0.0) as u64;
            while next[k] <= due {
                let c = chunks[(next[k] as usize) % chunks.len()];
                if sender.send_to(c, ("127.0.0.1", ins[k])).is_ok() {
                    sent[k] += c.len() as u64;
                }
                next[k] += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    // What is in flight arrives within this; a relay's fallback (castway's slate, after its
    // loss timeout) would come later and is not counted.
    std::thread::sleep(Duration::from_millis(200));
    done.store(true, Ordering::Relaxed);
    let got = receiving.join().unwrap();
    let list = |v: &[u64]| {
        v.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    println!(
        "{{\"sent\":[{}],\"received\":[{}]}}",
        list(&sent),
        list(&got)
    );
}
