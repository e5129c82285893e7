//! Which local UDP ports the gateway's listeners hold. A second claim on a port (by any route)
//! is refused before anything starts, and so is a port another process holds: libsrt binds
//! with SO_REUSEADDR, so without this check a clash would go unnoticed and split the traffic.

use std::net::UdpSocket;
use std::sync::{Mutex, PoisonError};

use crate::error::{Error, Result};
use crate::uri::{Endpoint, Role};

#[derive(Default)]
pub struct Claims {
    /// (owner `route/slot`, host, port)
    held: Mutex<Vec<(String, String, u16)>>,
}

fn overlaps(a: &(String, u16), b: &(String, u16)) -> bool {
    let wildcard = |h: &str| matches!(h, "0.0.0.0" | "::" | "");
    a.1 == b.1 && (a.0 == b.0 || wildcard(&a.0) || wildcard(&b.0))
}

impl Claims {
    /// Claims the exclusive binds of `endpoints` (owner, endpoint, role), all or none.
    pub fn claim_all(&self, endpoints: &[(String, &Endpoint, Role)]) -> Result<()> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let mut new: Vec<(String, String, u16)> = Vec::new();
        for (owner, endpoint, role) in endpoints {
            let Some(bind) = endpoint.exclusive_bind(*role) else {
                continue;
            };
            let clash = held
                .iter()
                .chain(new.iter())
                .find(|(_, h, p)| overlaps(&(h.clone(), *p), &bind));
            if let Some((other, _, _)) = clash {
                return Err(Error::AddressInUse {
                    endpoint: format!("{owner} ({endpoint})"),
                    addr: format!("UDP port {} (held by {other})", bind.1),
                });
            }
            if let Err(e) = UdpSocket::bind((bind.0.as_str(), bind.1)) {
                let addr = format!("UDP {}:{}", bind.0, bind.1);
                return Err(match e.kind() {
                    std::io::ErrorKind::AddrInUse => Error::AddressInUse {
                        endpoint: format!("{owner} ({endpoint})"),
                        addr: format!("{addr} (held by another process)"),
                    },
                    _ => Error::InvalidConfig(format!(
                        "{owner} ({endpoint}): cannot bind {addr}: {e}"
                    )),
                });
            }
            new.push((owner.clone(), bind.0, bind.1));
        }
        held.extend(new);
        Ok(())
    }

    pub fn release(&self, owner: &str) {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(o, _, _)| o != owner);
    }

    pub fn release_prefix(&self, prefix: &str) {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(o, _, _)| !o.starts_with(prefix));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(uri: &str) -> Endpoint {
        Endpoint::parse(uri, Role::Input).unwrap()
    }

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
    fn a_port_held_by_another_socket_is_refused() {
        let holder = UdpSocket::bind("0.0.0.0:0").unwrap();
        let port = holder.local_addr().unwrap().port();
        let e = Claims::default()
            .claim_all(&[("r/in0".into(), &ep(&format!("udp://:{port}")), Role::Input)])
            .unwrap_err();
        assert!(matches!(e, Error::AddressInUse { .. }), "{e}");
        assert!(e.to_string().contains("another process"), "{e}");
    }
}
