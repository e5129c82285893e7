//! What an SRT caller's stream ID asks of a shared port: which route, to publish or to read,
//! and as whom. Three forms are understood, as encoders and players send them:
//!
//! - SRT's Access Control syntax (libsrt's docs/features/access-control.md):
//!   `#!::r=ROUTE,m=publish|request|bidirectional,u=USER,s=SESSION,…` (`m` defaults to
//!   `request`, that is reading; unknown keys are ignored, as the spec allows);
//! - MediaMTX's `publish:ROUTE[:USER:PASS]` and `read:ROUTE[:USER:PASS]`;
//! - a bare `ROUTE`, for reading (what a player given only a name sends).
//!
//! A publisher may name one of the route's shared inputs as a path below the route, the way
//! the Access Control spec's resource name and MediaMTX's paths nest: `r=ROUTE/INPUT`,
//! `publish:ROUTE/INPUT` (the input's id: `main`, `backup`). Without it, the route picks one.
//!
//! A stream ID that is none of these is refused with SRT's predefined "bad request" reason; a
//! caller is refused for the other reasons (`Refusal`) by the shared port once it looks the
//! route and the credentials up.

use crate::limits::name_ok;

/// Publishing (an input of the route) or reading (an output).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Publish,
    Read,
}

/// What a stream ID asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRequest {
    pub route: String,
    pub mode: Mode,
    pub user: Option<String>,
    /// MediaMTX's form carries a password; SRT's leaves it to the passphrase.
    pub password: Option<String>,
    /// `s=` of SRT's form.
    pub session: Option<String>,
    /// The shared input a publisher names (`ROUTE/INPUT`); None: the route picks.
    pub input: Option<String>,
}

/// Why a caller is turned away, as SRT's predefined reject reasons (`SRT_REJC_PREDEFINED` +
/// an HTTP status) tell the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The stream ID cannot be read (`SRT_REJX_BAD_REQUEST`).
    BadRequest,
    /// No or wrong credentials (`SRT_REJX_UNAUTHORIZED`).
    Unauthorized,
    /// The user may not do this (`SRT_REJX_FORBIDDEN`).
    Forbidden,
    /// No such route (`SRT_REJX_NOTFOUND`).
    NotFound,
    /// The route already has a publisher (`SRT_REJX_CONFLICT`).
    Conflict,
    /// The port serves as many as it takes of this kind (probes: `SRT_REJX_UNAVAILABLE`).
    Unavailable,
}

impl Refusal {
    /// The code for `srt_setrejectreason`.
    pub fn code(self) -> i32 {
        1000 + match self {
            Refusal::BadRequest => 400,
            Refusal::Unauthorized => 401,
            Refusal::Forbidden => 403,
            Refusal::NotFound => 404,
            Refusal::Conflict => 409,
            Refusal::Unavailable => 503,
        }
    }
}

/// Reads a stream ID; the error says what is wrong with it.
pub fn parse(stream_id: &str) -> Result<StreamRequest, String> {
    let request = if let Some(pairs) = stream_id.strip_prefix("#!::") {
        access_control(pairs)?
    } else if let Some((verb, rest)) = stream_id.split_once(':') {
        let mode = match verb {
            "publish" => Mode::Publish,
            "read" => Mode::Read,
            _ => {
                return Err(format!(
                    "`{verb}:` is not a stream ID form castway knows (publish:, read:, #!::)"
                ))
            }
        };
        let mut parts = rest.split(':');
        let route = parts.next().unwrap_or_default().to_string();
        let (user, password) = match (parts.next(), parts.next(), parts.next()) {
            (None, _, _) => (None, None),
            (Some(u), Some(p), None) => (Some(u.to_string()), Some(p.to_string())),
            _ => return Err(format!("`{verb}:` takes ROUTE or ROUTE:USER:PASS")),
        };
        StreamRequest {
            route,
            mode,
            user,
            password,
            session: None,
            input: None,
        }
    } else {
        StreamRequest {
            route: stream_id.to_string(),
            mode: Mode::Read,
            user: None,
            password: None,
            session: None,
            input: None,
        }
    };
    let mut request = request;
    if let Some((route, input)) = request.route.split_once('/') {
        if request.mode == Mode::Read {
            return Err(format!(
                "`{}`: a reader names the route alone (its readers share one output)",
                request.route
            ));
        }
        if !name_ok(input) {
            return Err(format!(
                "`{input}` is not an input name (1 to 64 of A-Z a-z 0-9 . _ -)"
            ));
        }
        request.input = Some(input.to_string());
        request.route = route.to_string();
    }
    if !name_ok(&request.route) {
        return Err(format!(
            "`{}` is not a route name (1 to 64 of A-Z a-z 0-9 . _ -)",
            request.route
        ));
    }
    Ok(request)
}

/// `r=…,m=…,u=…,s=…` of SRT's Access Control syntax.
fn access_control(pairs: &str) -> Result<StreamRequest, String> {
    let mut r = StreamRequest {
        route: String::new(),
        mode: Mode::Read,
        user: None,
        password: None,
        session: None,
        input: None,
    };
    for pair in pairs.split(',').filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(format!("`{pair}` in the stream ID is not KEY=VALUE"));
        };
        match key {
            "r" => r.route = value.to_string(),
            "m" => {
                r.mode = match value {
                    "publish" => Mode::Publish,
                    "request" => Mode::Read,
                    "bidirectional" => {
                        return Err("`m=bidirectional`: a caller either publishes or reads".into())
                    }
                    _ => return Err(format!("`m={value}` is not publish or request")),
                }
            }
            "u" => r.user = Some(value.to_string()),
            "s" => r.session = Some(value.to_string()),
            // h (host), t (type) and any other key: not castway's to judge.
            _ => {}
        }
    }
    if r.route.is_empty() {
        return Err("the stream ID names no route (`r=`)".into());
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(s: &str) -> (String, Mode, Option<String>, Option<String>) {
        let r = parse(s).unwrap();
        (r.route, r.mode, r.user, r.password)
    }

    #[test]
    fn the_three_forms_encoders_send_are_read() {
        assert_eq!(
            ask("#!::r=news,m=publish,u=cam1,s=abc"),
            ("news".into(), Mode::Publish, Some("cam1".into()), None)
        );
        assert_eq!(
            parse("#!::u=cam1,r=news,s=abc").unwrap().session.as_deref(),
            Some("abc")
        );
        assert_eq!(ask("#!::r=news").1, Mode::Read);
        assert_eq!(ask("#!::r=news,m=request,h=example,t=stream").1, Mode::Read);
        assert_eq!(
            ask("publish:news:obs:secret"),
            (
                "news".into(),
                Mode::Publish,
                Some("obs".into()),
                Some("secret".into())
            )
        );
        assert_eq!(ask("read:news"), ("news".into(), Mode::Read, None, None));
        assert_eq!(ask("news"), ("news".into(), Mode::Read, None, None));
    }

    #[test]
    fn a_publisher_may_name_one_of_the_routes_inputs() {
        let input = |s: &str| {
            let r = parse(s).unwrap();
            (r.route, r.input)
        };
        assert_eq!(
            input("#!::r=news/backup,m=publish,u=cam"),
            ("news".into(), Some("backup".into()))
        );
        assert_eq!(
            input("publish:news/main:cam:secret"),
            ("news".into(), Some("main".into()))
        );
        assert_eq!(input("publish:news"), ("news".into(), None));
        let err = |s: &str| parse(s).unwrap_err();
        assert!(err("read:news/main").contains("names the route alone"));
        assert!(err("#!::r=news/main").contains("names the route alone"));
        assert!(err("publish:news/a/b").contains("not an input name"));
        assert!(err("publish:news/").contains("not an input name"));
    }

    #[test]
    fn what_cannot_be_read_says_why() {
        let err = |s: &str| parse(s).unwrap_err();
        assert!(err("#!::m=publish").contains("no route"));
        assert!(err("#!::r=news,m=push").contains("`m=push`"));
        assert!(err("#!::r=news,m=bidirectional").contains("either publishes or reads"));
        assert!(err("#!::r=news,junk").contains("`junk`"));
        assert!(err("play:news").contains("`play:`"));
        assert!(err("read:news:onlyuser").contains("ROUTE:USER:PASS"));
        assert!(err("live/cam1").contains("names the route alone"));
        assert!(err("").contains("not a route name"));
    }

    #[test]
    fn refusals_are_srts_predefined_reasons() {
        assert_eq!(Refusal::BadRequest.code(), 1400);
        assert_eq!(Refusal::Unauthorized.code(), 1401);
        assert_eq!(Refusal::Forbidden.code(), 1403);
        assert_eq!(Refusal::NotFound.code(), 1404);
        assert_eq!(Refusal::Conflict.code(), 1409);
    }
}
