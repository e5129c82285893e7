//! Configuring GStreamer's `srtsrc`/`srtsink` from an [`SrtEndpoint`], and tracking the callers
//! of a listener.

use std::sync::{Arc, Mutex, PoisonError};

use gst::prelude::*;

use crate::stats::socket_address_string;
use crate::uri::{host_port, SrtEndpoint, SrtMode};

/// Addresses of the callers currently connected to a listener, kept by its signals.
pub type Callers = Arc<Mutex<Vec<String>>>;

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

/// Keeps `callers` up to date from a listener sink's caller-added/removed signals. The signal
/// handlers run on libsrt's threads; they only touch the list.
pub fn track_callers(sink: &gst::Element) -> Callers {
    let callers: Callers = Arc::default();
    let added = callers.clone();
    sink.connect("caller-added", false, move |args| {
        if let Some(a) = args.get(2).and_then(|v| v.get::<gst::glib::Object>().ok()) {
            if let Some(s) = socket_address_string(&a) {
                added.lock().unwrap_or_else(PoisonError::into_inner).push(s);
            }
        }
        None
    });
    let removed = callers.clone();
    sink.connect("caller-removed", false, move |args| {
        if let Some(a) = args.get(2).and_then(|v| v.get::<gst::glib::Object>().ok()) {
            if let Some(s) = socket_address_string(&a) {
                let mut list = removed.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(i) = list.iter().position(|c| *c == s) {
                    list.remove(i);
                }
            }
        }
        None
    });
    callers
}
