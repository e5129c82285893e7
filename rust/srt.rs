//! Configuring GStreamer's `srtsrc`/`srtsink` from an [`SrtEndpoint`], and tracking the callers
//! of a listener.

use std::sync::{Arc, Mutex, PoisonError};

use gst::prelude::*;

use crate::stats::socket_address_string;
use crate::uri::{host_port, SrtEndpoint, SrtMode};

/// The callers of a listener, kept by its signals (on libsrt's threads): who is connected, and
/// who joined or left since the route's control thread last looked.
pub type Callers = Arc<Mutex<CallerList>>;

/// At most this many joins and leaves wait for the control thread (it drains them once a
/// second); beyond, the oldest are forgotten and counted.
const MAX_PENDING: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerChange {
    pub joined: bool,
    /// `IP:PORT`.
    pub address: String,
    /// The stream ID the caller asked for, if it sent one.
    pub stream_id: Option<String>,
}

#[derive(Debug, Default)]
pub struct CallerList {
    /// Addresses of the callers connected now.
    pub connected: Vec<String>,
    /// Joins and leaves not yet reported, oldest first.
    pub changes: Vec<CallerChange>,
    /// Joins and leaves forgotten because too many waited.
    pub forgotten: u64,
    /// The stream ID of each caller being accepted or connected, by address.
    stream_ids: Vec<(String, String)>,
}

impl CallerList {
    fn note(&mut self, change: CallerChange) {
        if self.changes.len() >= MAX_PENDING {
            self.changes.remove(0);
            self.forgotten += 1;
        }
        self.changes.push(change);
    }

    fn joined(&mut self, address: String) {
        let stream_id = self
            .stream_ids
            .iter()
            .find(|(a, _)| *a == address)
            .map(|(_, s)| s.clone());
        self.connected.push(address.clone());
        self.note(CallerChange {
            joined: true,
            address,
            stream_id,
        });
    }

    fn left(&mut self, address: String) {
        if let Some(i) = self.connected.iter().position(|c| *c == address) {
            self.connected.remove(i);
        }
        let mut stream_id = None;
        if let Some(i) = self.stream_ids.iter().position(|(a, _)| *a == address) {
            stream_id = Some(self.stream_ids.remove(i).1);
        }
        self.note(CallerChange {
            joined: false,
            address,
            stream_id,
        });
    }

    fn connecting(&mut self, address: String, stream_id: String) {
        self.stream_ids.retain(|(a, _)| *a != address);
        if self.stream_ids.len() >= MAX_PENDING {
            self.stream_ids.remove(0);
        }
        self.stream_ids.push((address, stream_id));
    }

    /// Takes the joins and leaves not yet reported.
    pub fn take_changes(&mut self) -> Vec<CallerChange> {
        std::mem::take(&mut self.changes)
    }
}

/// Sets every property of an srt element from the endpoint. Properties are set one by one
/// rather than through the element's `uri`, so castway's parser alone decides what a URI means.
pub fn configure(element: &gst::Element, ep: &SrtEndpoint) {
    let remote_host = if ep.host.is_empty() {
        "0.0.0.0"
    } else {
        ep.host.as_str()
    };
    element.set_property("uri", format!("srt://{}", host_port(remote_host, ep.port)));
    // The element's mode nicks are the URI's words (`SrtMode`'s Display).
    element.set_property_from_str("mode", &ep.mode.to_string());
    element.set_property("latency", ep.latency_ms as i32);
    element.set_property("auto-reconnect", false);
    match ep.mode {
        SrtMode::Listener => {
            element.set_property("localaddress", ep.bind_host());
            element.set_property("localport", u32::from(ep.port));
        }
        SrtMode::Rendezvous => {
            element.set_property("localaddress", ep.bind_host());
            element.set_property("localport", u32::from(ep.local_port.unwrap_or(ep.port)));
        }
        SrtMode::Caller => {
            if let Some(a) = &ep.local_addr {
                element.set_property("localaddress", a);
            }
            element.set_property("localport", u32::from(ep.local_port.unwrap_or(0)));
        }
    }
    if let Some(p) = &ep.passphrase {
        element.set_property("passphrase", p);
        element.set_property_from_str("pbkeylen", &ep.pbkeylen.to_string());
    }
    if let Some(s) = &ep.streamid {
        element.set_property("streamid", s);
    }
}

/// Keeps `callers` up to date from a listener sink's signals: `caller-connecting` (the stream
/// ID a caller asks for; every caller is accepted: castway does not choose callers by stream
/// ID here, and the passphrase is checked by libsrt as before),
/// `caller-added` and `caller-removed`. The handlers run on libsrt's threads; they only touch
/// the list.
pub fn track_callers(sink: &gst::Element) -> Callers {
    let callers: Callers = Arc::default();
    let address = |args: &[gst::glib::Value], at: usize| {
        args.get(at)
            .and_then(|v| v.get::<gst::glib::Object>().ok())
            .and_then(|a| socket_address_string(&a))
    };
    // srtsink emits `caller-connecting` only with `authentication` on (off by default on
    // 1.22, whatever gst-inspect shows); the handler accepts every caller.
    sink.set_property("authentication", true);
    let list = callers.clone();
    sink.connect("caller-connecting", false, move |args| {
        let stream_id = args
            .get(2)
            .and_then(|v| v.get::<Option<String>>().ok().flatten());
        if let (Some(a), Some(s)) = (address(args, 1), stream_id.filter(|s| !s.is_empty())) {
            lock(&list).connecting(a, s);
        }
        Some(true.to_value())
    });
    let list = callers.clone();
    sink.connect("caller-added", false, move |args| {
        if let Some(a) = address(args, 2) {
            lock(&list).joined(a);
        }
        None
    });
    let list = callers.clone();
    sink.connect("caller-removed", false, move |args| {
        if let Some(a) = address(args, 2) {
            lock(&list).left(a);
        }
        None
    });
    callers
}

fn lock(c: &Callers) -> std::sync::MutexGuard<'_, CallerList> {
    c.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_and_leaves_carry_the_stream_id_and_stay_bounded() {
        let mut l = CallerList::default();
        l.connecting("127.0.0.1:5000".into(), "#!::r=news".into());
        l.joined("127.0.0.1:5000".into());
        l.joined("127.0.0.1:5001".into());
        l.left("127.0.0.1:5000".into());
        assert_eq!(l.connected, ["127.0.0.1:5001"]);
        let changes = l.take_changes();
        let seen: Vec<_> = changes
            .iter()
            .map(|c| (c.joined, c.address.as_str(), c.stream_id.as_deref()))
            .collect();
        assert_eq!(
            seen,
            [
                (true, "127.0.0.1:5000", Some("#!::r=news")),
                (true, "127.0.0.1:5001", None),
                (false, "127.0.0.1:5000", Some("#!::r=news")),
            ]
        );
        assert!(l.take_changes().is_empty());
        for i in 0..(MAX_PENDING + 5) {
            l.joined(format!("127.0.0.1:{i}"));
        }
        assert_eq!(l.changes.len(), MAX_PENDING);
        assert_eq!(l.forgotten, 5);
    }
}
