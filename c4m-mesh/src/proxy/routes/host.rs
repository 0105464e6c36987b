//! Hostnames: patterns of routes and listeners, and the request's host.

use std::fmt;

/// A hostname a route or listener serves.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPattern {
    /// One host, lowercase.
    Exact(String),
    /// `*.suffix`: kept as the suffix with its leading dot (`.example.com`).
    /// Gateway API's wildcard matches any number of labels before the
    /// suffix; Ingress' matches exactly one (`single_label`).
    Wildcard {
        /// The suffix, with its leading dot.
        suffix: String,
        /// Ingress semantics: exactly one label before the suffix.
        single_label: bool,
    },
    /// Every host.
    Any,
}

/// Why a hostname was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostnameError {
    /// Not an RFC 1123 name with an optional leading `*.` label.
    #[error("{0:?} is not a valid hostname (lowercase RFC 1123 labels, optionally a leading `*.`)")]
    Invalid(String),
    /// An IP address, which Gateway API and Ingress hostnames exclude.
    #[error("{0:?} is an IP address; hostnames must be DNS names")]
    IpAddress(String),
}

impl HostPattern {
    /// Parses a Gateway API hostname (`*.` matches one or more labels).
    pub fn gateway(hostname: &str) -> Result<Self, HostnameError> {
        Self::parse(hostname, false)
    }

    /// Parses an Ingress host (`*.` matches exactly one label).
    pub fn ingress(hostname: &str) -> Result<Self, HostnameError> {
        Self::parse(hostname, true)
    }

    fn parse(hostname: &str, single_label: bool) -> Result<Self, HostnameError> {
        if hostname.parse::<std::net::IpAddr>().is_ok() {
            return Err(HostnameError::IpAddress(hostname.to_owned()));
        }
        let (wildcard, name) = match hostname.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, hostname),
        };
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                let bytes = label.as_bytes();
                !bytes.is_empty()
                    && bytes.len() <= 63
                    && bytes
                        .iter()
                        .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && bytes[0] != b'-'
                    && bytes[bytes.len() - 1] != b'-'
            });
        if !valid {
            return Err(HostnameError::Invalid(hostname.to_owned()));
        }
        Ok(if wildcard {
            HostPattern::Wildcard {
                suffix: format!(".{name}"),
                single_label,
            }
        } else {
            HostPattern::Exact(name.to_owned())
        })
    }

    /// Whether a (lowercase, port-less) host is matched.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(exact) => host == exact,
            HostPattern::Wildcard {
                suffix,
                single_label,
            } => wildcard_matches(suffix, *single_label, host),
            HostPattern::Any => true,
        }
    }

    /// The hostnames both patterns serve: what a route's hostname gives on a
    /// listener with a hostname (Gateway API's hostname intersection).
    pub fn intersect(&self, other: &HostPattern) -> Option<HostPattern> {
        use HostPattern::*;
        match (self, other) {
            (Any, x) | (x, Any) => Some(x.clone()),
            (Exact(a), Exact(b)) => (a == b).then(|| self.clone()),
            (Exact(host), wildcard @ Wildcard { .. })
            | (wildcard @ Wildcard { .. }, Exact(host)) => {
                wildcard.matches(host).then(|| Exact(host.clone()))
            }
            (Wildcard { suffix: a, .. }, Wildcard { suffix: b, .. }) => {
                // The longer suffix is the narrower set, if it lies within the other.
                if a.ends_with(b.as_str()) {
                    Some(self.clone())
                } else if b.ends_with(a.as_str()) {
                    Some(other.clone())
                } else {
                    None
                }
            }
        }
    }
}

fn wildcard_matches(suffix: &str, single_label: bool, host: &str) -> bool {
    match host.strip_suffix(suffix) {
        Some(label) => !label.is_empty() && (!single_label || !label.contains('.')),
        None => false,
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(host) => f.write_str(host),
            HostPattern::Wildcard { suffix, .. } => write!(f, "*{suffix}"),
            HostPattern::Any => f.write_str("*"),
        }
    }
}

/// The longest host the gateway routes by (the DNS limit).
pub(crate) const MAX_HOST_LEN: usize = 253;

/// The request's host, lowercase and without port or trailing dot, written
/// into `buf` (no allocation); `None` when absent or not a plausible host.
pub(crate) fn normalize_host<'b>(
    authority: &str,
    buf: &'b mut [u8; MAX_HOST_LEN],
) -> Option<&'b str> {
    let host = if authority.starts_with('[') {
        // An IPv6 literal: `[::1]:8080`.
        &authority[..authority.find(']').map_or(authority.len(), |i| i + 1)]
    } else {
        authority
            .rsplit_once(':')
            .map_or(authority, |(host, _port)| host)
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > MAX_HOST_LEN {
        return None;
    }
    let out = &mut buf[..host.len()];
    for (o, b) in out.iter_mut().zip(host.bytes()) {
        *o = b.to_ascii_lowercase();
    }
    std::str::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_follow_each_api() {
        let gateway = HostPattern::gateway("*.example.com").unwrap();
        assert!(gateway.matches("a.example.com"));
        assert!(gateway.matches("a.b.example.com"));
        assert!(!gateway.matches("example.com"));
        let ingress = HostPattern::ingress("*.example.com").unwrap();
        assert!(ingress.matches("a.example.com"));
        assert!(!ingress.matches("a.b.example.com"));
    }

    #[test]
    fn bad_hostnames_are_refused() {
        assert!(HostPattern::gateway("Example.com").is_err());
        assert!(HostPattern::gateway("a.*.com").is_err());
        assert!(HostPattern::gateway("-a.com").is_err());
        assert_eq!(
            HostPattern::gateway("10.0.0.1"),
            Err(HostnameError::IpAddress("10.0.0.1".into()))
        );
    }

    #[test]
    fn intersection_keeps_the_narrower_name() {
        let any = HostPattern::Any;
        let wild = HostPattern::gateway("*.example.com").unwrap();
        let deeper = HostPattern::gateway("*.shop.example.com").unwrap();
        let exact = HostPattern::gateway("a.example.com").unwrap();
        assert_eq!(any.intersect(&exact), Some(exact.clone()));
        assert_eq!(wild.intersect(&exact), Some(exact.clone()));
        assert_eq!(exact.intersect(&wild), Some(exact.clone()));
        assert_eq!(wild.intersect(&deeper), Some(deeper.clone()));
        assert_eq!(deeper.intersect(&wild), Some(deeper.clone()));
        assert_eq!(
            HostPattern::gateway("b.other.com")
                .unwrap()
                .intersect(&wild),
            None
        );
    }

    #[test]
    fn request_hosts_are_normalized_in_place() {
        let mut buf = [0; MAX_HOST_LEN];
        assert_eq!(
            normalize_host("Shop.Example.COM:8443", &mut buf),
            Some("shop.example.com")
        );
        assert_eq!(
            normalize_host("example.com.", &mut buf),
            Some("example.com")
        );
        assert_eq!(normalize_host("[::1]:80", &mut buf), Some("[::1]"));
        assert_eq!(normalize_host("", &mut buf), None);
    }
}
