//! The gateway: a set of independent routes sharing only the claims on listening ports.

mod claims;

pub use claims::{file_identity, first_clash, Bind, Claims};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::{Error, Result};
use crate::events::{Event, EventLog};
use crate::route::{Applied, Route, RouteSpec, RouteStats, SystemClock};

#[derive(Default)]
pub struct Gateway {
    routes: Mutex<BTreeMap<String, Arc<Route>>>,
    claims: Arc<Claims>,
    closed: std::sync::atomic::AtomicBool,
    /// What every route and the control plane report, in one numbered sequence.
    events: Arc<EventLog>,
    /// The shared SRT port, once opened (`listen_srt`).
    srt_port: Mutex<Option<crate::server::srt::SrtPort>>,
}

impl Gateway {
    pub fn new() -> Result<Gateway> {
        Gateway::with_event_history(crate::events::DEFAULT_CAPACITY)
    }

    /// A gateway whose event log keeps the last `events` events.
    pub fn with_event_history(events: usize) -> Result<Gateway> {
        gst::init()?;
        raise_open_file_limit();
        Ok(Gateway {
            routes: Mutex::default(),
            claims: Arc::default(),
            closed: std::sync::atomic::AtomicBool::default(),
            events: Arc::new(EventLog::new(events)),
            srt_port: Mutex::default(),
        })
    }

    /// The gateway's event log (read it, wait on it).
    pub fn events(&self) -> &Arc<EventLog> {
        &self.events
    }

    /// Adds an event the control plane reports (see `events::Kind::from_control_plane`) to the
    /// sequence; returns its number.
    pub fn emit(&self, event: Event) -> Result<u64> {
        if !event.kind.from_control_plane() {
            return Err(Error::InvalidConfig(format!(
                "event kind `{}` is reported by the data plane, not emitted",
                event.kind.as_str()
            )));
        }
        Ok(self.events.push(event).0)
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Route>>> {
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Builds and starts a route. The route map is not locked while the route starts (that can
    /// take seconds), so other calls on the gateway go on meanwhile.
    pub fn add_route(&self, spec: RouteSpec) -> Result<Arc<Route>> {
        let name = spec.name.clone();
        let taken = |routes: &BTreeMap<String, Arc<Route>>| -> Result<()> {
            if self.closed.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(Error::Closed("gateway".into()));
            }
            if routes.contains_key(&name) {
                return Err(Error::AlreadyExists(format!("route `{name}`")));
            }
            Ok(())
        };
        taken(&self.routes())?;
        let route = Route::start(
            spec,
            self.claims.clone(),
            Arc::new(SystemClock),
            self.events.clone(),
        )?;
        let mut routes = self.routes();
        // Checked again: a concurrent add of the same name, or close(), may have come first.
        if let Err(e) = taken(&routes) {
            drop(routes);
            route.shutdown();
            return Err(e);
        }
        routes.insert(name.clone(), route.clone());
        Ok(route)
    }

    /// Makes route `spec.name` match `spec`: by difference while it runs (`Route::reconfigure`), or
    /// by a restart when `Route::needs_restart` says so (a failed restart leaves the route
    /// stopped and gone; start the previous spec again to put it back).
    pub fn update_route(&self, spec: RouteSpec) -> Result<(Arc<Route>, Applied)> {
        let route = self.route(&spec.name)?;
        if !route.needs_restart(&spec) {
            let applied = route.reconfigure(&spec)?;
            return Ok((route, applied));
        }
        // Checked before the old one stops.
        Route::check(&spec)?;
        self.remove_route(&spec.name)?;
        let route = self.add_route(spec)?;
        Ok((
            route,
            Applied {
                restarted: true,
                ..Applied::default()
            },
        ))
    }

    pub fn route(&self, name: &str) -> Result<Arc<Route>> {
        self.routes()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("route `{name}`")))
    }

    pub fn route_names(&self) -> Vec<String> {
        self.routes().keys().cloned().collect()
    }

    /// Stops and removes a route; the others are untouched.
    pub fn remove_route(&self, name: &str) -> Result<()> {
        let route = self
            .routes()
            .remove(name)
            .ok_or_else(|| Error::NotFound(format!("route `{name}`")))?;
        route.shutdown();
        Ok(())
    }

    pub fn stats(&self) -> Vec<RouteStats> {
        let routes: Vec<Arc<Route>> = self.routes().values().cloned().collect();
        routes.iter().map(|r| r.stats()).collect()
    }

    /// Opens the shared SRT port on `address` (`[HOST]:PORT`, srt:// socket options as a
    /// query), serving the `srt-shared://` endpoints of every route; returns the address it
    /// listens on. One per gateway.
    pub fn listen_srt(&self, address: &str) -> Result<std::net::SocketAddr> {
        let mut port = self.srt_port.lock().unwrap_or_else(PoisonError::into_inner);
        if self.closed.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Error::Closed("gateway".into()));
        }
        if let Some(p) = port.as_ref() {
            return Err(Error::AlreadyExists(format!(
                "the shared SRT port (listening on {})",
                p.address()
            )));
        }
        // Port 0 (any free port) is not claimed: no route can have asked for it.
        let any_port = address.split('?').next().is_some_and(|a| a.ends_with(":0"));
        let owner = "castway/srt-listen".to_string();
        let claimed = !any_port;
        if claimed {
            let (endpoint, _) = crate::server::srt::port_endpoint(address)
                .map_err(|why| Error::InvalidConfig(format!("the shared SRT port: {why}")))?;
            let endpoint = crate::uri::Endpoint::Srt(endpoint);
            self.claims
                .claim_all(&[(owner.clone(), &endpoint, crate::uri::Role::Input)])?;
        }
        let directory = self.claims.shared_srt.clone();
        // The address itself is checked first (`InvalidConfig`: what was asked is wrong); a
        // port another socket holds is `AddressInUse`, as for a route's listener.
        crate::server::srt::port_endpoint(address)
            .map_err(|why| Error::InvalidConfig(format!("the shared SRT port: {why}")))?;
        let in_use = std::io::Error::from_raw_os_error(libc::EADDRINUSE).to_string();
        let opened = crate::server::srt::SrtPort::open(address, directory, self.events.clone())
            .map_err(|why| match why.contains(&in_use) {
                true => Error::AddressInUse {
                    endpoint: "the shared SRT port".into(),
                    addr: address.into(),
                },
                false => Error::InvalidConfig(format!("the shared SRT port: {why}")),
            });
        let opened = opened.inspect_err(|_| {
            if claimed {
                self.claims.release(&owner);
            }
        })?;
        let addr = opened.address();
        *port = Some(opened);
        self.claims.shared_srt.set_open();
        Ok(addr)
    }

    /// castway's live API keys for the shared SRT port's `keys=1` endpoints: the SHA-256 (hex)
    /// of each key's secret and its role (viewer, operator, admin).
    pub fn set_srt_keys(&self, keys: &[(String, String)]) {
        self.claims.shared_srt.set_keys(keys);
    }

    /// The shared SRT port's figures, if it is open.
    pub fn srt_port_stats(&self) -> Option<crate::server::srt::SrtPortStats> {
        let port = self.srt_port.lock().unwrap_or_else(PoisonError::into_inner);
        port.as_ref().map(|p| p.stats())
    }

    /// Stops every route. Idempotent.
    pub fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        // The shared port first: no caller is handed to a route that stops.
        let port = self
            .srt_port
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(port);
        let routes: Vec<Arc<Route>> = std::mem::take(&mut *self.routes()).into_values().collect();
        // Every recording ends its segment at a frame at the same time: one wait for all,
        // not up to 1.5 s per recording route.
        for r in &routes {
            r.ask_settle_recording();
        }
        for r in routes {
            r.shutdown();
        }
        self.events.close();
    }
}

/// Every route holds a few sockets and pipes: lifts the soft limit on open files to the hard
/// one (best effort), so hundreds of routes fit without the operator raising `ulimit -n`.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.close();
    }
}
