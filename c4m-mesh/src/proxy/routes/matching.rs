//! Request conditions: path, method, headers, query parameters.
//!
//! Matching reads the request in place and allocates nothing on the common
//! path (a query value is decoded into a fresh string only when it holds
//! `%` or `+`).

use std::borrow::Cow;

use http::{HeaderMap, HeaderName, Method};
use regex::Regex;

/// A path condition, with Gateway API semantics.
#[derive(Clone, Debug)]
pub enum PathMatch {
    /// The whole path.
    Exact(String),
    /// A prefix of whole path elements, kept without a trailing `/` (bar `/`
    /// itself): `/abc` matches `/abc`, `/abc/` and `/abc/def`, not `/abcd`.
    Prefix(String),
    /// A regular expression, anchored at both ends.
    Regex(Regex),
}

impl PathMatch {
    /// A prefix condition; a trailing `/` is ignored, as Gateway API and
    /// Ingress both define.
    pub fn prefix(prefix: &str) -> Self {
        let trimmed = prefix.trim_end_matches('/');
        PathMatch::Prefix(if trimmed.is_empty() {
            "/".to_owned()
        } else {
            trimmed.to_owned()
        })
    }

    /// Whether `path` (without the query) satisfies the condition.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(exact) => path == exact,
            PathMatch::Prefix(prefix) => prefix_matches(prefix, path),
            PathMatch::Regex(regex) => regex.is_match(path),
        }
    }

    /// How much of `path` a `ReplacePrefixMatch` replaces: the prefix for a
    /// prefix condition, the whole path for the others.
    pub fn matched_prefix_len(&self, path: &str) -> usize {
        match self {
            PathMatch::Prefix(prefix) if prefix == "/" => 0,
            PathMatch::Prefix(prefix) => prefix.len().min(path.len()),
            PathMatch::Exact(_) | PathMatch::Regex(_) => path.len(),
        }
    }
}

/// Element-wise prefix test; `prefix` has no trailing `/` unless it is `/`.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// A value condition for a header or a query parameter.
#[derive(Clone, Debug)]
pub enum ValueMatch {
    /// The whole value.
    Exact(String),
    /// A regular expression, anchored at both ends.
    Regex(Regex),
}

impl ValueMatch {
    /// Whether `value` satisfies the condition.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            ValueMatch::Exact(exact) => value == exact,
            ValueMatch::Regex(regex) => regex.is_match(value),
        }
    }
}

/// A header condition: some value of the header satisfies it.
#[derive(Clone, Debug)]
pub struct HeaderMatch {
    /// The header (names are case-insensitive).
    pub name: HeaderName,
    /// The value condition.
    pub value: ValueMatch,
}

/// A query parameter condition: the first occurrence of the parameter
/// satisfies it (Gateway API leaves repeats to the implementation).
#[derive(Clone, Debug)]
pub struct QueryMatch {
    /// The parameter name (case-sensitive).
    pub name: String,
    /// The value condition, on the percent-decoded value.
    pub value: ValueMatch,
}

/// Every condition of one route match; all must hold.
#[derive(Clone, Debug)]
pub struct RequestMatch {
    /// The path condition.
    pub path: PathMatch,
    /// The method, if any.
    pub method: Option<Method>,
    /// Header conditions.
    pub headers: Vec<HeaderMatch>,
    /// Query parameter conditions.
    pub query: Vec<QueryMatch>,
}

impl RequestMatch {
    /// A match of every request (`PathPrefix /`).
    pub fn any() -> Self {
        RequestMatch {
            path: PathMatch::Prefix("/".to_owned()),
            method: None,
            headers: Vec::new(),
            query: Vec::new(),
        }
    }

    /// Whether the request satisfies every condition.
    pub fn matches(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> bool {
        if let Some(expected) = &self.method
            && expected != method
        {
            return false;
        }
        if !self.path.matches(path) {
            return false;
        }
        for condition in &self.headers {
            let mut values = headers.get_all(&condition.name).iter();
            if !values.any(|v| v.to_str().is_ok_and(|v| condition.value.matches(v))) {
                return false;
            }
        }
        for condition in &self.query {
            match query.and_then(|q| query_param(q, &condition.name)) {
                Some(value) if condition.value.matches(&value) => {}
                _ => return false,
            }
        }
        true
    }
}

/// The first value of `name` in a query string, percent-decoded (borrowed
/// from the query unless decoding changed it).
fn query_param<'q>(query: &'q str, name: &str) -> Option<Cow<'q, str>> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

/// A regular expression matching the whole input, as Gateway API's
/// `RegularExpression` is defined (RE2 syntax, which `regex` follows).
pub(crate) fn anchored(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{pattern})$"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_element_wise_and_ignores_a_trailing_slash() {
        let p = PathMatch::prefix("/abc/");
        assert!(p.matches("/abc"));
        assert!(p.matches("/abc/"));
        assert!(p.matches("/abc/def"));
        assert!(!p.matches("/abcd"));
        assert!(!p.matches("/ab"));
        assert!(PathMatch::prefix("/").matches("/anything"));
    }

    #[test]
    fn regex_matches_the_whole_path() {
        let p = PathMatch::Regex(anchored("/v[0-9]+/items").unwrap());
        assert!(p.matches("/v2/items"));
        assert!(!p.matches("/v2/items/x"));
        assert!(!p.matches("/x/v2/items"));
    }

    #[test]
    fn query_parameters_are_decoded() {
        assert_eq!(query_param("a=1&b=x%20y&b=2", "b").as_deref(), Some("x y"));
        assert_eq!(query_param("flag&a=1", "flag").as_deref(), Some(""));
        assert_eq!(query_param("a=1", "b"), None);
    }

    #[test]
    fn every_condition_must_hold() {
        let m = RequestMatch {
            path: PathMatch::prefix("/api"),
            method: Some(Method::POST),
            headers: vec![HeaderMatch {
                name: HeaderName::from_static("x-canary"),
                value: ValueMatch::Exact("yes".into()),
            }],
            query: vec![QueryMatch {
                name: "v".into(),
                value: ValueMatch::Exact("2".into()),
            }],
        };
        let mut headers = HeaderMap::new();
        headers.append("x-canary", "no".parse().unwrap());
        headers.append("x-canary", "yes".parse().unwrap());
        assert!(m.matches(&Method::POST, "/api/x", Some("v=2"), &headers));
        assert!(!m.matches(&Method::GET, "/api/x", Some("v=2"), &headers));
        assert!(!m.matches(&Method::POST, "/apix", Some("v=2"), &headers));
        assert!(!m.matches(&Method::POST, "/api/x", Some("v=3"), &headers));
        assert!(!m.matches(&Method::POST, "/api/x", None, &headers));
        assert!(!m.matches(&Method::POST, "/api/x", Some("v=2"), &HeaderMap::new()));
    }
}
