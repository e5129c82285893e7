//! Waiting for a route's state: the caller sleeps on the gateway's event log (the control
//! thread reports each change of state there) rather than polling.

use std::time::{Duration, Instant};

use super::{lock, Route};
use crate::error::{Error, Result};
use crate::events;

/// The states a route can be waited for.
pub const STATES: [&str; 4] = ["live", "slate", "waiting", "stopped"];

impl Route {
    /// Blocks until the route's state is `state` (as `stats()` shows it), at most `timeout`.
    /// Refuses an unknown state; a route that stops while waiting for another state is an
    /// error, and so is the timeout (naming the state it was in).
    pub fn wait_state(&self, state: &str, timeout: Duration) -> Result<()> {
        self.wait_state_or(state, timeout, &mut || true)
    }

    /// `wait_state`, asking `go_on` at least once a second (false ends the wait: a Ctrl-C the
    /// Python layer saw, which raises its own error in place of this one).
    pub fn wait_state_or(
        &self,
        state: &str,
        timeout: Duration,
        go_on: &mut dyn FnMut() -> bool,
    ) -> Result<()> {
        if !STATES.contains(&state) {
            return Err(Error::InvalidConfig(format!(
                "state must be one of {}, not `{state}`",
                STATES.join(", ")
            )));
        }
        let deadline = Instant::now() + timeout;
        loop {
            // Read before the state: a change after this look is reported with a number above.
            let seen = self.log.latest();
            let now = {
                let inner = lock(&self.inner);
                self.state_of(&inner)
            };
            if now == state {
                return Ok(());
            }
            if now == "stopped" {
                return Err(Error::Closed(format!(
                    "route `{}` (stopped while waiting for `{state}`)",
                    self.name
                )));
            }
            let mine = |e: &events::Event| e.route.as_deref() == Some(self.name.as_str());
            let slice = deadline.min(Instant::now() + Duration::from_secs(1));
            if !self.log.wait_for(seen, slice, mine) {
                if Instant::now() >= deadline {
                    return Err(Error::Timeout(format!(
                        "route `{}` is `{now}`, not `{state}`, after {:.1} s",
                        self.name,
                        timeout.as_secs_f64()
                    )));
                }
                if !go_on() {
                    return Err(Error::Closed(format!(
                        "the wait for route `{}` to be `{state}` (interrupted)",
                        self.name
                    )));
                }
            }
        }
    }
}
