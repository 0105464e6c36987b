//! The route table of one listener: virtual hosts of entries sorted by
//! Gateway API precedence.

use std::cmp::{Ordering, Reverse};

use foldhash::HashMap;
use http::{HeaderMap, Method, Request};

use super::host::{HostPattern, MAX_HOST_LEN, normalize_host};
use super::matching::{PathMatch, RequestMatch};

/// Index of a [`RouteAction`](super::RouteAction) in its
/// [`RouteConfig::actions`](super::RouteConfig::actions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ActionId(pub u32);

/// One match of one rule, under one host.
#[derive(Clone, Debug)]
pub struct RouteEntry {
    /// The conditions.
    pub matcher: RequestMatch,
    /// What to do when they hold.
    pub action: ActionId,
    /// Under a wildcard host: whether exactly one label may precede the
    /// suffix (an Ingress wildcard in a host shared with Gateway routes).
    single_label: bool,
}

/// The entries of one host pattern, in precedence order.
#[derive(Clone, Debug, Default)]
struct VirtualHost {
    entries: Vec<RouteEntry>,
}

impl VirtualHost {
    fn find(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        label_ok: bool,
    ) -> Option<&RouteEntry> {
        self.entries.iter().find(|e| {
            (label_ok || !e.single_label) && e.matcher.matches(method, path, query, headers)
        })
    }
}

/// The routes of one listener (port).
///
/// A request is tried against the entries of its exact host, then of each
/// wildcard suffix from the longest, then of the catch-all: rules of the
/// most specific hostname take precedence, as Gateway API requires, and a
/// request none of them matches falls through to less specific ones.
/// Within a host, entries are sorted by Gateway API's precedence:
/// `Exact` path, then `RegularExpression` (longest pattern first; the API
/// leaves regex precedence to implementations, this is Envoy Gateway's
/// order), then `PathPrefix` by length; then a method condition, more
/// header conditions, more query conditions; then the older route, the
/// route first by `namespace/name`, the earlier rule and match.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    exact: HashMap<Box<str>, VirtualHost>,
    wildcard: HashMap<Box<str>, VirtualHost>,
    any: VirtualHost,
}

impl RouteTable {
    /// The entry for a request, by its host (`:authority` or `Host`), path,
    /// query, method and headers.
    pub fn find<B>(&self, request: &Request<B>) -> Option<&RouteEntry> {
        let authority = request.uri().authority().map(|a| a.as_str()).or_else(|| {
            request
                .headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        });
        self.find_parts(
            authority,
            request.method(),
            request.uri().path(),
            request.uri().query(),
            request.headers(),
        )
    }

    /// [`find`](Self::find) from the request's parts.
    pub fn find_parts(
        &self,
        authority: Option<&str>,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Option<&RouteEntry> {
        let mut buf = [0u8; MAX_HOST_LEN];
        if let Some(host) = authority.and_then(|a| normalize_host(a, &mut buf)) {
            if let Some(entry) = self
                .exact
                .get(host)
                .and_then(|v| v.find(method, path, query, headers, true))
            {
                return Some(entry);
            }
            if !self.wildcard.is_empty() {
                // Suffixes from the longest: for a.b.example.com, .b.example.com then .example.com, .com.
                let mut first = true;
                for (i, _) in host.match_indices('.') {
                    if let Some(entry) = self
                        .wildcard
                        .get(&host[i..])
                        .and_then(|v| v.find(method, path, query, headers, first))
                    {
                        return Some(entry);
                    }
                    first = false;
                }
            }
        }
        self.any.find(method, path, query, headers, true)
    }

    /// Whether the table has no entries at all.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty() && self.any.entries.is_empty()
    }

    /// The number of entries (matches times hosts).
    pub fn len(&self) -> usize {
        self.exact
            .values()
            .chain(self.wildcard.values())
            .map(|v| v.entries.len())
            .sum::<usize>()
            + self.any.entries.len()
    }
}

/// What orders entries of one host, beyond the match itself: where the
/// route comes from. Older routes, then routes first by `namespace/name`,
/// win ties.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RouteOrder {
    /// Ingress default backends go after every rule.
    pub fallback: bool,
    /// The route's creation time (seconds since the epoch); routes without
    /// one sort after those with one.
    pub created: Option<i64>,
    /// `namespace/name`.
    pub name: String,
    /// The rule's index.
    pub rule: usize,
    /// The match's index in the rule.
    pub index: usize,
}

/// Builds a [`RouteTable`]: add entries under host patterns, then
/// [`build`](Self::build) sorts each host's entries by precedence.
#[derive(Debug, Default)]
pub struct RouteTableBuilder {
    hosts: HashMap<HostPattern, Vec<(RouteEntry, RouteOrder)>>,
}

impl RouteTableBuilder {
    /// Adds one match of a rule under `host`.
    pub fn add(
        &mut self,
        host: &HostPattern,
        matcher: RequestMatch,
        action: ActionId,
        order: RouteOrder,
    ) {
        let single_label = matches!(
            host,
            HostPattern::Wildcard {
                single_label: true,
                ..
            }
        );
        // Gateway and Ingress wildcards of one suffix share a virtual host.
        let key = match host {
            HostPattern::Wildcard { suffix, .. } => HostPattern::Wildcard {
                suffix: suffix.clone(),
                single_label: false,
            },
            other => other.clone(),
        };
        self.hosts.entry(key).or_default().push((
            RouteEntry {
                matcher,
                action,
                single_label,
            },
            order,
        ));
    }

    /// The table, every host's entries in precedence order.
    pub fn build(self) -> RouteTable {
        let mut table = RouteTable::default();
        for (host, mut entries) in self.hosts {
            entries.sort_by(|(a, ao), (b, bo)| {
                precedence(&a.matcher, &b.matcher).then_with(|| ao.cmp(bo))
            });
            let vhost = VirtualHost {
                entries: entries.into_iter().map(|(e, _)| e).collect(),
            };
            match host {
                HostPattern::Exact(name) => {
                    table.exact.insert(name.into_boxed_str(), vhost);
                }
                HostPattern::Wildcard { suffix, .. } => {
                    table.wildcard.insert(suffix.into_boxed_str(), vhost);
                }
                HostPattern::Any => table.any = vhost,
            }
        }
        table
    }
}

/// Gateway API match precedence (`Less` = tried first).
fn precedence(a: &RequestMatch, b: &RequestMatch) -> Ordering {
    fn path_key(p: &PathMatch) -> (Reverse<u8>, Reverse<usize>) {
        match p {
            PathMatch::Exact(s) => (Reverse(3), Reverse(s.len())),
            PathMatch::Regex(r) => (Reverse(2), Reverse(r.as_str().len())),
            PathMatch::Prefix(s) => (Reverse(1), Reverse(if s == "/" { 0 } else { s.len() })),
        }
    }
    path_key(&a.path)
        .cmp(&path_key(&b.path))
        .then_with(|| b.method.is_some().cmp(&a.method.is_some()))
        .then_with(|| b.headers.len().cmp(&a.headers.len()))
        .then_with(|| b.query.len().cmp(&a.query.len()))
}

#[cfg(test)]
mod tests {
    use http::HeaderName;

    use super::super::matching::{HeaderMatch, ValueMatch, anchored};
    use super::*;

    fn order(name: &str, created: Option<i64>, rule: usize) -> RouteOrder {
        RouteOrder {
            fallback: false,
            created,
            name: name.into(),
            rule,
            index: 0,
        }
    }

    fn with_path(path: PathMatch) -> RequestMatch {
        RequestMatch {
            path,
            ..RequestMatch::any()
        }
    }

    fn get(table: &RouteTable, host: &str, path: &str) -> Option<u32> {
        get_with(table, host, Method::GET, path, &HeaderMap::new())
    }

    fn get_with(
        table: &RouteTable,
        host: &str,
        method: Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Option<u32> {
        let (path, query) = path
            .split_once('?')
            .map_or((path, None), |(p, q)| (p, Some(q)));
        table
            .find_parts(Some(host), &method, path, query, headers)
            .map(|e| e.action.0)
    }

    #[test]
    fn path_precedence_exact_then_regex_then_longest_prefix() {
        let mut b = RouteTableBuilder::default();
        let any = HostPattern::Any;
        b.add(
            &any,
            with_path(PathMatch::prefix("/")),
            ActionId(0),
            order("a/a", None, 0),
        );
        b.add(
            &any,
            with_path(PathMatch::prefix("/api")),
            ActionId(1),
            order("a/a", None, 1),
        );
        b.add(
            &any,
            with_path(PathMatch::prefix("/api/v1")),
            ActionId(2),
            order("a/a", None, 2),
        );
        b.add(
            &any,
            with_path(PathMatch::Exact("/api/v1/x".into())),
            ActionId(3),
            order("a/a", None, 3),
        );
        b.add(
            &any,
            with_path(PathMatch::Regex(anchored("/api/v[0-9]/y.*").unwrap())),
            ActionId(4),
            order("a/a", None, 4),
        );
        let t = b.build();
        assert_eq!(get(&t, "h", "/"), Some(0));
        assert_eq!(get(&t, "h", "/apix"), Some(0));
        assert_eq!(get(&t, "h", "/api/x"), Some(1));
        assert_eq!(get(&t, "h", "/api/v1/z"), Some(2));
        assert_eq!(get(&t, "h", "/api/v1/x"), Some(3));
        assert_eq!(get(&t, "h", "/api/v1/yes"), Some(4));
    }

    #[test]
    fn method_then_headers_then_query_break_path_ties() {
        let mut b = RouteTableBuilder::default();
        let any = HostPattern::Any;
        let canary = HeaderMatch {
            name: HeaderName::from_static("x-canary"),
            value: ValueMatch::Exact("1".into()),
        };
        b.add(
            &any,
            with_path(PathMatch::prefix("/")),
            ActionId(0),
            order("a/a", None, 0),
        );
        b.add(
            &any,
            RequestMatch {
                headers: vec![canary.clone()],
                ..RequestMatch::any()
            },
            ActionId(1),
            order("a/a", None, 1),
        );
        b.add(
            &any,
            RequestMatch {
                method: Some(Method::POST),
                ..RequestMatch::any()
            },
            ActionId(2),
            order("a/a", None, 2),
        );
        let query = super::super::matching::QueryMatch {
            name: "v".into(),
            value: ValueMatch::Exact("2".into()),
        };
        b.add(
            &any,
            RequestMatch {
                headers: vec![canary],
                query: vec![query],
                ..RequestMatch::any()
            },
            ActionId(3),
            order("a/a", None, 3),
        );
        let t = b.build();
        let mut h = HeaderMap::new();
        assert_eq!(get_with(&t, "h", Method::GET, "/", &h), Some(0));
        h.insert("x-canary", "1".parse().unwrap());
        assert_eq!(get_with(&t, "h", Method::GET, "/", &h), Some(1));
        assert_eq!(get_with(&t, "h", Method::GET, "/?v=2", &h), Some(3));
        // A method condition outranks headers.
        assert_eq!(get_with(&t, "h", Method::POST, "/?v=2", &h), Some(2));
    }

    #[test]
    fn ties_go_to_the_oldest_route_then_by_name_then_rule_order() {
        let mut b = RouteTableBuilder::default();
        let any = HostPattern::Any;
        b.add(
            &any,
            RequestMatch::any(),
            ActionId(0),
            order("b/new", Some(200), 0),
        );
        b.add(
            &any,
            RequestMatch::any(),
            ActionId(1),
            order("z/old", Some(100), 0),
        );
        let t = b.build();
        assert_eq!(get(&t, "h", "/"), Some(1));

        let mut b = RouteTableBuilder::default();
        b.add(
            &any,
            RequestMatch::any(),
            ActionId(0),
            order("b/x", Some(100), 0),
        );
        b.add(
            &any,
            RequestMatch::any(),
            ActionId(1),
            order("a/x", Some(100), 1),
        );
        b.add(
            &any,
            RequestMatch::any(),
            ActionId(2),
            order("a/x", Some(100), 0),
        );
        let t = b.build();
        assert_eq!(get(&t, "h", "/"), Some(2));
    }

    #[test]
    fn the_most_specific_host_wins_and_misses_fall_through() {
        let mut b = RouteTableBuilder::default();
        b.add(
            &HostPattern::Any,
            RequestMatch::any(),
            ActionId(0),
            order("a/a", None, 0),
        );
        b.add(
            &HostPattern::gateway("*.example.com").unwrap(),
            RequestMatch::any(),
            ActionId(1),
            order("a/a", None, 0),
        );
        b.add(
            &HostPattern::gateway("*.shop.example.com").unwrap(),
            RequestMatch::any(),
            ActionId(2),
            order("a/a", None, 0),
        );
        b.add(
            &HostPattern::gateway("a.shop.example.com").unwrap(),
            with_path(PathMatch::prefix("/only")),
            ActionId(3),
            order("a/a", None, 0),
        );
        b.add(
            &HostPattern::ingress("*.one.test").unwrap(),
            RequestMatch::any(),
            ActionId(4),
            order("a/a", None, 0),
        );
        let t = b.build();
        assert_eq!(get(&t, "other.test", "/"), Some(0));
        assert_eq!(get(&t, "x.example.com", "/"), Some(1));
        assert_eq!(get(&t, "X.Shop.Example.com:443", "/"), Some(2));
        assert_eq!(get(&t, "a.shop.example.com", "/only/x"), Some(3));
        // No rule of the exact host matches: the wildcard's do.
        assert_eq!(get(&t, "a.shop.example.com", "/"), Some(2));
        // An Ingress wildcard covers one label only.
        assert_eq!(get(&t, "a.one.test", "/"), Some(4));
        assert_eq!(get(&t, "a.b.one.test", "/"), Some(0));
    }
}
