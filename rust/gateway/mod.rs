//! The gateway: a set of independent routes sharing only the claims on listening ports.

mod claims;

pub use claims::{first_clash, Bind, Claims};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::{Error, Result};
use crate::route::{Applied, Route, RouteSpec, RouteStats, SystemClock};

#[derive(Default)]
pub struct Gateway {
    routes: Mutex<BTreeMap<String, Arc<Route>>>,
    claims: Arc<Claims>,
    closed: std::sync::atomic::AtomicBool,
}

impl Gateway {
    pub fn new() -> Result<Gateway> {
        gst::init()?;
        raise_open_file_limit();
        Ok(Gateway::default())
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
        let route = Route::start(spec, self.claims.clone(), Arc::new(SystemClock))?;
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

    /// Stops every route. Idempotent.
    pub fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let routes: Vec<Arc<Route>> = std::mem::take(&mut *self.routes()).into_values().collect();
        for r in routes {
            r.shutdown();
        }
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
