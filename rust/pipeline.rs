//! GStreamer helpers for the control path: state changes bounded in time, and the forwarding of
//! a pipeline's bus messages to the thread that acts on them. Nothing here runs per packet.

use std::sync::mpsc;
use std::time::Duration;

use gst::prelude::*;

/// Sets a pipeline's state on a helper thread and waits at most `timeout` for it: a sink stuck
/// in a blocking call (a FIFO nobody reads, a filesystem that hangs) must not hold up the route.
/// `None` means the change did not finish in time and goes on alone.
pub(crate) fn set_state_bounded(
    pipeline: &gst::Pipeline,
    state: gst::State,
    timeout: Duration,
) -> Option<std::result::Result<gst::StateChangeSuccess, gst::StateChangeError>> {
    let (tx, rx) = mpsc::channel();
    let p = pipeline.clone();
    std::thread::Builder::new()
        .name("castway-state".into())
        .spawn(move || {
            let _ = tx.send(p.set_state(state));
        })
        .ok()?;
    rx.recv_timeout(timeout).ok()
}

/// Hands `forward` the messages of `pipeline`'s bus that a control thread acts on: errors,
/// ends of stream, warnings, and the pipeline itself reaching PLAYING. It runs on whatever
/// thread posts (a streaming thread too), so it must only pass the message on; every message
/// is dropped from the bus afterwards.
pub(crate) fn forward_bus(
    pipeline: &gst::Pipeline,
    forward: impl Fn(gst::Message) + Send + Sync + 'static,
) {
    let bus = pipeline.bus().expect("a pipeline has a bus");
    let weak = pipeline.downgrade();
    bus.set_sync_handler(move |_, msg| {
        use gst::MessageView as M;
        let wanted = match msg.view() {
            M::Error(_) | M::Eos(_) | M::Warning(_) => true,
            M::StateChanged(s) => {
                s.current() == gst::State::Playing
                    && weak
                        .upgrade()
                        .is_some_and(|p| msg.src() == Some(p.upcast_ref::<gst::Object>()))
            }
            _ => false,
        };
        if wanted {
            forward(msg.clone());
        }
        gst::BusSyncReply::Drop
    });
}

/// Stops forwarding `pipeline`'s bus messages (what is still queued is of no interest).
pub(crate) fn stop_forwarding(pipeline: &gst::Pipeline) {
    if let Some(bus) = pipeline.bus() {
        bus.unset_sync_handler();
    }
}
