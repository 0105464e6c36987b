//! What happens to a request once a route matched it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// The object a route, certificate or error came from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    /// The kind, e.g. `HTTPRoute`.
    pub kind: &'static str,
    /// The namespace; empty for cluster-scoped kinds.
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl ObjectRef {
    /// A reference to `kind` `namespace/name`.
    pub fn new(kind: &'static str, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectRef {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// A Service port, as routes name them: a number (Gateway API, Ingress) or
/// a port name (Ingress).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServicePort {
    /// The Service's `port`.
    Number(u16),
    /// The Service port's `name`.
    Name(Arc<str>),
}

/// A Service port that requests are sent to; the endpoint source turns it
/// into ready endpoint addresses.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceRef {
    /// The Service's namespace.
    pub namespace: Arc<str>,
    /// The Service's name.
    pub name: Arc<str>,
    /// The Service port.
    pub port: ServicePort,
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.port {
            ServicePort::Number(port) => write!(f, "{}/{}:{port}", self.namespace, self.name),
            ServicePort::Name(port) => write!(f, "{}/{}:{port}", self.namespace, self.name),
        }
    }
}

/// Where a weighted share of requests goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendTarget {
    /// A Service port.
    Service(ServiceRef),
    /// A reference that could not be resolved or is not permitted: Gateway
    /// API says its share of requests gets a 500, the others are unaffected.
    Invalid,
}

/// A backend and its share of requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightedBackend {
    /// Where requests go.
    pub target: BackendTarget,
    /// The share (relative to the rule's total); 0 sends nothing.
    pub weight: u32,
}

/// How requests reach the backends of a rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RouteProtocol {
    /// HTTP: the version is chosen per backend (its app protocol) and request.
    #[default]
    Http,
    /// gRPC (GRPCRoute): HTTP/2 to the backends always.
    Grpc,
}

/// Header edits (Gateway API's `HTTPHeaderFilter`), already validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderModifier {
    /// Replaced or created.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Appended.
    pub add: Vec<(HeaderName, HeaderValue)>,
    /// Removed.
    pub remove: Vec<HeaderName>,
}

impl HeaderModifier {
    /// Applies the edits: set, then add, then remove.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
        for name in &self.remove {
            headers.remove(name);
        }
    }
}

/// A new path, whole or for the matched prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathModifier {
    /// The whole path.
    Full(String),
    /// The prefix the route matched is replaced.
    Prefix(String),
}

impl PathModifier {
    /// The new path for `path`, given how many bytes of it the route's
    /// prefix matched (see [`PathMatch::matched_prefix_len`](super::PathMatch::matched_prefix_len)).
    pub fn apply(&self, path: &str, matched_len: usize) -> String {
        match self {
            PathModifier::Full(full) => full.clone(),
            PathModifier::Prefix(replacement) => {
                let rest = &path[matched_len.min(path.len())..];
                let mut out = String::with_capacity(replacement.len() + rest.len());
                out.push_str(replacement.trim_end_matches('/'));
                if !rest.is_empty() && !rest.starts_with('/') {
                    out.push('/');
                }
                out.push_str(rest);
                if out.is_empty() {
                    out.push('/');
                }
                out
            }
        }
    }
}

/// `http` or `https`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP (port 80).
    Http,
    /// HTTP over TLS (port 443).
    Https,
}

impl Scheme {
    /// The scheme's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// The scheme's well-known port, left out of redirect locations.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// Answer with a redirect (Gateway API's `RequestRedirect`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    /// The scheme; the request's when absent.
    pub scheme: Option<Scheme>,
    /// The host; the request's when absent.
    pub host: Option<String>,
    /// The port; when absent, the scheme's well-known port if the scheme
    /// changed, else the request's.
    pub port: Option<u16>,
    /// The path; the request's when absent.
    pub path: Option<PathModifier>,
    /// 301, 302, 303, 307 or 308.
    pub status: StatusCode,
}

/// Forward with another host or path (Gateway API's `URLRewrite`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rewrite {
    /// The new `Host` (and `:authority`).
    pub host: Option<HeaderValue>,
    /// The new path.
    pub path: Option<PathModifier>,
}

/// Send a copy of each request to another backend (`RequestMirror`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mirror {
    /// Where copies go.
    pub target: BackendTarget,
    /// The share of requests mirrored: `numerator / denominator`.
    pub numerator: u32,
    /// The denominator (at least 1).
    pub denominator: u32,
}

/// Rule timeouts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// From the request's arrival to the response's headers.
    pub request: Option<Duration>,
    /// For each request to a backend.
    pub backend_request: Option<Duration>,
}

/// A per-route rate limit: `requests` per `per`, with bursts of `burst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RateLimit {
    /// Requests allowed per period, on average.
    pub requests: u32,
    /// The period.
    pub per: Duration,
    /// Requests allowed at once after a quiet period (at least 1).
    pub burst: u32,
}

/// Everything a matched rule does to a request, in the order the proxy
/// applies it: rate limit, redirect (final) or header edits, rewrite and
/// mirrors, then the weighted backends under the timeouts.
#[derive(Clone, Debug)]
pub struct RouteAction {
    /// The route object, for metrics and errors.
    pub route: ObjectRef,
    /// The rule's index in the route.
    pub rule: usize,
    /// HTTP or gRPC.
    pub protocol: RouteProtocol,
    /// The route's rate limit, shared by its rules.
    pub rate_limit: Option<RateLimit>,
    /// Request header edits.
    pub request_headers: Option<HeaderModifier>,
    /// Response header edits.
    pub response_headers: Option<HeaderModifier>,
    /// A redirect answered instead of forwarding.
    pub redirect: Option<Redirect>,
    /// A rewrite before forwarding.
    pub rewrite: Option<Rewrite>,
    /// Mirrors.
    pub mirrors: Vec<Mirror>,
    /// The weighted backends; none (or all weight 0) answers 500, as Gateway
    /// API requires, unless a redirect answers first.
    pub backends: Vec<WeightedBackend>,
    /// Timeouts.
    pub timeouts: Timeouts,
}

impl RouteAction {
    /// An action of `route`'s rule `rule` that does nothing yet.
    pub fn new(route: ObjectRef, rule: usize) -> Self {
        RouteAction {
            route,
            rule,
            protocol: RouteProtocol::Http,
            rate_limit: None,
            request_headers: None,
            response_headers: None,
            redirect: None,
            rewrite: None,
            mirrors: Vec::new(),
            backends: Vec::new(),
            timeouts: Timeouts::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_prefix_match_follows_the_gateway_api_examples() {
        let to = |r: &str, path: &str, matched: usize| {
            PathModifier::Prefix(r.into()).apply(path, matched)
        };
        // prefix /foo
        assert_eq!(to("/xyz", "/foo/bar", 4), "/xyz/bar");
        assert_eq!(to("/xyz/", "/foo/bar", 4), "/xyz/bar");
        assert_eq!(to("/xyz", "/foo", 4), "/xyz");
        assert_eq!(to("/", "/foo/bar", 4), "/bar");
        assert_eq!(to("/", "/foo", 4), "/");
        assert_eq!(to("/xyz", "/foo/", 4), "/xyz/");
        // prefix /
        assert_eq!(to("/v2", "/a/b", 0), "/v2/a/b");
    }
}
