//! The callers of an SRT listener output: who is connected, and who joined or left since the
//! route's control thread last looked (it reports them to the event log).

use std::sync::{Arc, Mutex};

/// The callers of a listener, kept by its I/O thread.
pub type Callers = Arc<Mutex<CallerList>>;

/// At most this many joins and leaves wait for the control thread (it drains them once a
/// second); beyond, the oldest are forgotten and counted.
const MAX_PENDING: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerChange {
    pub joined: bool,
    /// `IP:PORT`.
    pub address: String,
    /// The stream ID the caller asked for, if it sent one, with its password shown as `***`
    /// (`uri::redact_stream_id`): it goes into events, which never carry secrets.
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
    /// The (redacted) stream ID of each connected caller that sent one, by address.
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

    pub fn joined(&mut self, address: String, stream_id: Option<String>) {
        let stream_id = stream_id.map(|s| crate::uri::redact_stream_id(&s));
        self.connected.push(address.clone());
        if let Some(s) = &stream_id {
            self.stream_ids.push((address.clone(), s.clone()));
        }
        self.note(CallerChange {
            joined: true,
            address,
            stream_id,
        });
    }

    pub fn left(&mut self, address: String) {
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

    /// Takes the joins and leaves not yet reported.
    pub fn take_changes(&mut self) -> Vec<CallerChange> {
        std::mem::take(&mut self.changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_and_leaves_carry_the_stream_id_and_stay_bounded() {
        let mut l = CallerList::default();
        l.joined("127.0.0.1:5000".into(), Some("#!::r=news".into()));
        l.joined("127.0.0.1:5001".into(), None);
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
        l.joined(
            "127.0.0.1:6000".into(),
            Some("read:lab:viewer:viewerpassword".into()),
        );
        l.left("127.0.0.1:6000".into());
        for c in l.take_changes() {
            assert_eq!(c.stream_id.as_deref(), Some("read:lab:viewer:***"));
        }
        for i in 0..(MAX_PENDING + 5) {
            l.joined(format!("127.0.0.1:{i}"), None);
        }
        assert_eq!(l.changes.len(), MAX_PENDING);
        assert_eq!(l.forgotten, 5);
    }
}
