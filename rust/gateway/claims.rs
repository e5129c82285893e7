//! Which local UDP ports the gateway's listeners hold. A second claim on a port (by any route)
//! is refused before anything starts, and so is a port another process holds: libsrt binds
//! with SO_REUSEADDR, so without this check a clash would go unnoticed and split the traffic.
//!
//! A released port is not free at once: libsrt closes a listener's UDP socket from its
//! garbage-collector thread, up to about a second after `srt_close` returned. Released binds are
//! kept as *closing* until a probe can bind them; `await_free` waits for that (removing a route
//! returns when its ports are free), and a claim on a port this gateway is still closing waits
//! too, and never blames another process for it.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::uri::{Endpoint, Role};

/// How long a released port may take to close before a claim or a removal gives up waiting.
/// libsrt has been seen to keep a listener's UDP port about 5 s after the listener closed, when
/// it closed right after it opened (a route's input changed at once).
const RELEASE_WAIT: Duration = Duration::from_secs(10);
/// How often a closing port is probed.
const PROBE_EVERY: Duration = Duration::from_millis(5);

/// A bind as claims see it: (owner `route/slot`, host, port).
pub type Bind = (String, String, u16);

#[derive(Default)]
struct State {
    held: Vec<Bind>,
    /// The files outputs write: (owner `route/slot`, the path as `file_identity` gives it).
    files: Vec<(String, PathBuf)>,
    /// Released binds whose socket may still be open, with when they were released.
    closing: Vec<(Bind, Instant)>,
}

#[derive(Default)]
pub struct Claims {
    state: Mutex<State>,
    /// The routes' places on the gateway's shared SRT port (their `srt-shared://` endpoints).
    pub shared_srt: crate::server::srt::Directory,
}

/// Whether two binds clash: the same port, and the same host or either a wildcard.
fn overlaps(a: (&str, u16), b: (&str, u16)) -> bool {
    let wildcard = |h: &str| matches!(h, "0.0.0.0" | "::" | "");
    a.1 == b.1 && (a.0 == b.0 || wildcard(a.0) || wildcard(b.0))
}

/// The first of `others` that clashes with the bind `(host, port)`.
fn clash<'a>(
    (host, port): (&str, u16),
    others: impl IntoIterator<Item = &'a Bind>,
) -> Option<&'a Bind> {
    (others.into_iter()).find(|(_, h, p)| overlaps((host, port), (h, *p)))
}

/// The first of `new` that clashes with one of `held` or with one before it in `new`, and the
/// bind it clashes with. Nothing is probed: this is the rule alone, for binds that are not
/// claimed yet (the control server checks stored routes, running or not, with it).
pub fn first_clash<'a>(new: &'a [Bind], held: &'a [Bind]) -> Option<(&'a Bind, &'a Bind)> {
    new.iter()
        .enumerate()
        .find_map(|(n, b)| clash((&b.1, b.2), held.iter().chain(&new[..n])).map(|other| (b, other)))
}

/// The path a file is known by for claims: symbolic links and `..` resolved (a link to a file,
/// `/proc/self/fd/N` of the control server's media root, `dir/../x`: all name the file they
/// lead to). A file not there yet is its resolved directory and its name.
pub fn file_identity(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir)
            .map(|d| d.join(name))
            .unwrap_or_else(|_| path.to_path_buf()),
        _ => path.to_path_buf(),
    }
}

/// Whether nothing holds `host:port` (a socket without SO_REUSEADDR can bind it).
fn probe(host: &str, port: u16) -> std::io::Result<()> {
    UdpSocket::bind((host, port)).map(drop)
}

impl Claims {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Claims the exclusive binds of `endpoints` (owner, endpoint, role), all or none. A port
    /// this gateway is still closing is waited for (at most `RELEASE_WAIT` after its release),
    /// with the lock let go between tries so other routes' claims and releases go on.
    pub fn claim_all(&self, endpoints: &[(String, &Endpoint, Role)]) -> Result<()> {
        while let Some(deadline) = self.try_claim_all(endpoints)? {
            let wait = deadline.saturating_duration_since(Instant::now());
            std::thread::sleep(wait.min(PROBE_EVERY));
        }
        Ok(())
    }

    /// One try: Ok(None) when claimed, Ok(Some(deadline)) when a port this gateway released is
    /// still closing (nothing claimed; try again until the deadline).
    fn try_claim_all(&self, endpoints: &[(String, &Endpoint, Role)]) -> Result<Option<Instant>> {
        let mut state = self.state();
        let mut new: Vec<Bind> = Vec::new();
        let mut files: Vec<(String, PathBuf)> = Vec::new();
        for (owner, endpoint, role) in endpoints {
            let Some(path) = endpoint.written_file(*role) else {
                continue;
            };
            let path = file_identity(path);
            let writer = (state.files.iter().chain(&files)).find(|(_, p)| *p == path);
            if let Some((other, _)) = writer {
                return Err(Error::AddressInUse {
                    endpoint: format!("{owner} ({endpoint})"),
                    addr: format!("file {} (written by {other})", path.display()),
                });
            }
            files.push((owner.clone(), path));
        }
        for (owner, endpoint, role) in endpoints {
            let Some(bind) = endpoint.exclusive_bind(*role) else {
                continue;
            };
            if let Some((other, _, _)) = clash((&bind.0, bind.1), state.held.iter().chain(&new)) {
                return Err(Error::AddressInUse {
                    endpoint: format!("{owner} ({endpoint})"),
                    addr: format!("UDP port {} (held by {other})", bind.1),
                });
            }
            let Err(e) = probe(&bind.0, bind.1) else {
                new.push((owner.clone(), bind.0, bind.1));
                continue;
            };
            let addr = format!("UDP {}:{}", bind.0, bind.1);
            if e.kind() != std::io::ErrorKind::AddrInUse {
                return Err(Error::InvalidConfig(format!(
                    "{owner} ({endpoint}): cannot bind {addr}: {e}"
                )));
            }
            // A port this gateway released a moment ago may still be closing.
            let closing =
                (state.closing.iter()).find(|((_, h, p), _)| overlaps((h, *p), (&bind.0, bind.1)));
            return match closing {
                Some((_, at)) if at.elapsed() < RELEASE_WAIT => Ok(Some(*at + RELEASE_WAIT)),
                Some(((was, _, _), _)) => Err(Error::AddressInUse {
                    endpoint: format!("{owner} ({endpoint})"),
                    addr: format!("{addr} (still being closed by this gateway: it was {was}'s)"),
                }),
                None => Err(Error::AddressInUse {
                    endpoint: format!("{owner} ({endpoint})"),
                    addr: format!("{addr} (held by another process)"),
                }),
            };
        }
        state
            .closing
            .retain(|((_, h, p), _)| clash((h, *p), &new).is_none());
        state.held.extend(new);
        state.files.extend(files);
        Ok(None)
    }

    /// Gives up the binds of `owner`; they count as closing until `await_free` sees them free.
    pub fn release(&self, owner: &str) {
        self.release_where(|o| o == owner);
    }

    /// Gives up the binds of every owner starting with `prefix` (a whole route: `name/`).
    pub fn release_prefix(&self, prefix: &str) {
        self.release_where(|o| o.starts_with(prefix));
    }

    fn release_where(&self, gone: impl Fn(&str) -> bool) {
        let mut state = self.state();
        state.files.retain(|(o, _)| !gone(o));
        let now = Instant::now();
        let (released, kept): (Vec<Bind>, Vec<Bind>) = std::mem::take(&mut state.held)
            .into_iter()
            .partition(|(o, _, _)| gone(o));
        state.held = kept;
        state.closing.extend(released.into_iter().map(|b| (b, now)));
    }

    /// Waits (at most a few seconds) until the closing binds of `owner` are free, then forgets
    /// them. Called after the sockets were told to close, so that a removal returns when its
    /// ports can be bound again.
    pub fn await_free(&self, owner: &str) {
        self.await_where(|o| o == owner);
    }

    /// `await_free` for every owner of route `name`.
    pub fn await_route_free(&self, name: &str) {
        let prefix = format!("{name}/");
        self.await_where(|o| o.starts_with(&prefix));
    }

    fn await_where(&self, mine: impl Fn(&str) -> bool) {
        let waiting: Vec<(Bind, Instant)> = self
            .state()
            .closing
            .iter()
            .filter(|((o, _, _), _)| mine(o))
            .cloned()
            .collect();
        for (bind, at) in &waiting {
            // Not under the lock: other routes claim and release meanwhile. A port claimed
            // again (the route re-added) is no longer ours to wait for, nor to probe.
            let deadline = *at + RELEASE_WAIT;
            while Instant::now() < deadline
                && self.state().closing.iter().any(|(b, _)| b == bind)
                && probe(&bind.1, bind.2).is_err()
            {
                std::thread::sleep(PROBE_EVERY);
            }
        }
        let mut state = self.state();
        state.closing.retain(|(b, at)| {
            !(waiting.iter().any(|(w, _)| w == b) && probe(&b.1, b.2).is_ok())
                && at.elapsed() < RELEASE_WAIT * 10
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uri::input as ep;

    #[test]
    fn a_port_is_claimed_once() {
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let claims = Claims::default();
        let a = ep(&format!("srt://:{port}"));
        claims
            .claim_all(&[("r1/in0".into(), &a, Role::Input)])
            .unwrap();
        let b = ep(&format!("srt://127.0.0.1:{port}?mode=listener"));
        let e = claims
            .claim_all(&[("r2/in0".into(), &b, Role::Input)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("held by r1/in0"), "{e}");
        claims.release_prefix("r1/");
        claims
            .claim_all(&[("r2/in0".into(), &b, Role::Input)])
            .unwrap();
    }

    #[test]
    fn a_file_is_written_by_one_output_at_once() {
        let dir = std::env::temp_dir().join(format!("castway-claims-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let out = |p: &str| {
            let uri = format!("file://{}", dir.join(p).display());
            crate::uri::Endpoint::parse(&uri, Role::Output).unwrap()
        };
        let claims = Claims::default();
        let a = out("rec.ts");
        claims
            .claim_all(&[("r1/out0".into(), &a, Role::Output)])
            .unwrap();
        // The same file by another name, from another route or the same one.
        let b = out("sub/../rec.ts");
        let e = claims
            .claim_all(&[("r2/out0".into(), &b, Role::Output)])
            .unwrap_err();
        assert!(matches!(e, Error::AddressInUse { .. }), "{e}");
        assert!(e.to_string().contains("written by r1/out0"), "{e}");
        let (c, d) = (out("two.ts"), out("two.ts"));
        let e = claims
            .claim_all(&[
                ("r3/out0".into(), &c, Role::Output),
                ("r3/out1".into(), &d, Role::Output),
            ])
            .unwrap_err();
        assert!(e.to_string().contains("written by r3/out0"), "{e}");
        // Reading it is not writing it; a released file can be written again.
        let input = crate::uri::input(&format!("file://{}", dir.join("rec.ts").display()));
        claims
            .claim_all(&[("r4/in0".into(), &input, Role::Input)])
            .unwrap();
        claims.release_prefix("r1/");
        claims
            .claim_all(&[("r2/out0".into(), &b, Role::Output)])
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn binds_clash_on_one_port_when_a_host_matches_or_is_a_wildcard() {
        let b = |owner: &str, host: &str, port| (owner.to_string(), host.to_string(), port);
        let held = [b("r1/in0", "127.0.0.1", 9000), b("r1/out0", "::", 9100)];
        let none = |new: &[Bind]| first_clash(new, &held).is_none();
        assert!(none(&[
            b("r2/in0", "127.0.0.2", 9000),
            b("r2/in1", "", 9001)
        ]));
        let wildcard = [b("r2/in0", "", 9000)];
        let (mine, other) = first_clash(&wildcard, &held).unwrap();
        assert_eq!((mine.0.as_str(), other.0.as_str()), ("r2/in0", "r1/in0"));
        assert_eq!(
            first_clash(&[b("r2/o", "10.0.0.1", 9100)], &held)
                .unwrap()
                .1
                 .0,
            "r1/out0"
        );
        // Within the new binds too.
        let twice = [b("r2/in0", "0.0.0.0", 7000), b("r2/in1", "127.0.0.1", 7000)];
        let (mine, other) = first_clash(&twice, &[]).unwrap();
        assert_eq!((mine.0.as_str(), other.0.as_str()), ("r2/in1", "r2/in0"));
    }

    #[test]
    fn a_port_held_by_another_socket_is_refused() {
        let holder = UdpSocket::bind("0.0.0.0:0").unwrap();
        let port = holder.local_addr().unwrap().port();
        let e = Claims::default()
            .claim_all(&[("r/in0".into(), &ep(&format!("udp://:{port}")), Role::Input)])
            .unwrap_err();
        assert!(matches!(e, Error::AddressInUse { .. }), "{e}");
        assert!(e.to_string().contains("another process"), "{e}");
    }

    #[test]
    fn a_port_released_but_still_closing_is_waited_for_not_blamed_on_another_process() {
        let probe = UdpSocket::bind("0.0.0.0:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let claims = Claims::default();
        let a = ep(&format!("srt://:{port}"));
        claims
            .claim_all(&[("r/in0".into(), &a, Role::Input)])
            .unwrap();
        // The route's socket, as libsrt keeps it open for a while after the route let go.
        let socket = UdpSocket::bind(("0.0.0.0", port)).unwrap();
        claims.release_prefix("r/");
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(socket);
        });
        claims
            .claim_all(&[("r/in0".into(), &a, Role::Input)])
            .unwrap();
        closer.join().unwrap();
    }

    #[test]
    fn await_free_returns_once_the_released_port_binds() {
        let probe = UdpSocket::bind("0.0.0.0:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let claims = Claims::default();
        let a = ep(&format!("udp://:{port}"));
        claims
            .claim_all(&[("r/in0".into(), &a, Role::Input)])
            .unwrap();
        let socket = UdpSocket::bind(("0.0.0.0", port)).unwrap();
        claims.release("r/in0");
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(socket);
        });
        claims.await_route_free("r");
        assert!(UdpSocket::bind(("0.0.0.0", port)).is_ok());
        closer.join().unwrap();
    }
}
