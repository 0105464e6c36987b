//! What a request asks to do, as authorizers see it: Kubernetes'
//! `authorizer.Attributes`, read from a request by Kubernetes'
//! `RequestInfo` rules, and from c4m's own endpoints by [`C4M_ENDPOINTS`].

use thiserror::Error;

use crate::c4m_endpoints::C4M_ENDPOINTS;
use crate::user::UserInfo;

/// A request path that cannot be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RequestError {
    /// `%` not followed by two hex digits, or bytes that are not UTF-8.
    #[error("request path {path:?} is not valid percent-encoded UTF-8")]
    Encoding {
        /// The path as received.
        path: String,
    },
    /// An empty, `.` or `..` segment: refused rather than read differently
    /// from the router behind.
    #[error("request path {path:?} has an empty, \".\" or \"..\" segment")]
    Segment {
        /// The path as received.
        path: String,
    },
    /// `/api/v1/watch` or `/api/v1/proxy` with nothing after it.
    #[error("unable to determine the resource of request path {path:?}")]
    NoResource {
        /// The path as received.
        path: String,
    },
}

/// A request's user, verb and target (Kubernetes' `authorizer.Attributes`).
///
/// For a resource request (`is_resource_request`) the target is `api_group`,
/// `resource`, `subresource`, `namespace` (empty: cluster-scoped, or every
/// namespace) and `name` (empty: a collection); otherwise it is `path`, and
/// `verb` is the lowercase HTTP method.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    /// Who asks.
    pub user: UserInfo,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`, `proxy`; for a non-resource request the method.
    pub verb: String,
    /// The namespace; empty for cluster-scoped resources and lists across
    /// namespaces.
    pub namespace: String,
    /// The API group (`""` for the core group).
    pub api_group: String,
    /// The API version (`v1`).
    pub api_version: String,
    /// The plural resource (`pods`).
    pub resource: String,
    /// The subresource (`exec`, `status`), or empty.
    pub subresource: String,
    /// The object's name; empty for collections and creates.
    pub name: String,
    /// The request path, percent-decoded.
    pub path: String,
    /// Whether the request is for a resource (else for `path`).
    pub is_resource_request: bool,
}

/// Segments after the version that name a verb rather than a resource.
const SPECIAL_VERBS: &[&str] = &["proxy", "watch"];
/// Subresources of a namespace (`/api/v1/namespaces/NAME/status`), not
/// resources inside it.
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];
/// Streams a client opens with a WebSocket `GET`; they act on the pod as
/// Kubernetes' `POST` does, so they need `create` (Kubernetes 1.31 checks
/// `create` as well as `get`; c4m serves these streams only over WebSocket).
const POD_STREAMS: &[&str] = &["exec", "attach", "portforward"];

impl Attributes {
    /// The attributes of a resource request: `verb` on `resource` of
    /// `api_group` (no subresource: add one with [`Self::with_subresource`]),
    /// for a SubjectAccessReview or an object of a batch apply.
    pub fn resource(
        user: UserInfo,
        verb: &str,
        api_group: &str,
        resource: &str,
        namespace: &str,
        name: &str,
    ) -> Self {
        Self {
            user,
            verb: verb.to_owned(),
            namespace: namespace.to_owned(),
            api_group: api_group.to_owned(),
            resource: resource.to_owned(),
            name: name.to_owned(),
            is_resource_request: true,
            ..Self::default()
        }
    }

    /// The attributes of a non-resource request: `verb` on `path`.
    pub fn non_resource(user: UserInfo, verb: &str, path: &str) -> Self {
        Self {
            user,
            verb: verb.to_owned(),
            path: path.to_owned(),
            ..Self::default()
        }
    }

    /// The same attributes with `subresource`.
    pub fn with_subresource(mut self, subresource: &str) -> Self {
        self.subresource = subresource.to_owned();
        self
    }

    /// What `user`'s `method` request to `path` (percent-encoded, as
    /// received) with `query` (without `?`) asks, by Kubernetes' rules:
    ///
    /// - `/api/VERSION/...` and `/apis/GROUP/VERSION/...` are resource
    ///   requests: `[namespaces/NS/]RESOURCE[/NAME[/SUBRESOURCE[/...]]]`,
    ///   with `namespaces/NAME/status|finalize` a namespace's subresource;
    /// - the verb comes from the method: `GET`/`HEAD` is `get`, or `list`
    ///   without a name, or `watch` with `?watch` (not `0`/`false`) or a
    ///   `/watch/` prefix; `POST` is `create`, `PUT` `update`, `PATCH`
    ///   `patch`, `DELETE` `delete` or `deletecollection` without a name;
    ///   a `/proxy/` prefix is `proxy` (with no subresource);
    /// - a list or watch whose `fieldSelector` requires `metadata.name=X`
    ///   names `X`;
    /// - a `GET` of `pods/exec`, `pods/attach` or `pods/portforward` (a
    ///   WebSocket stream) is `create`;
    /// - c4m's own endpoints are resource requests in API group `c4m.io`
    ///   ([`C4M_ENDPOINTS`]);
    /// - anything else (`/healthz`, `/version`, `/openapi/v2`, `/apis`) is a
    ///   non-resource request for `path`, verb the lowercase method.
    ///
    /// # Errors
    /// A path that is not percent-encoded UTF-8, has an empty, `.` or `..`
    /// segment, or has a special verb and nothing after it.
    pub fn from_request(
        method: &str,
        path: &str,
        query: Option<&str>,
        user: UserInfo,
    ) -> Result<Self, RequestError> {
        let decoded = percent_decode(path).ok_or_else(|| RequestError::Encoding {
            path: path.to_owned(),
        })?;
        let trimmed = decoded.trim_matches('/');
        let parts: Vec<&str> = if trimmed.is_empty() {
            Vec::new()
        } else {
            trimmed.split('/').collect()
        };
        if parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
        {
            return Err(RequestError::Segment {
                path: path.to_owned(),
            });
        }
        if let Some(attributes) = c4m_endpoint(method, &parts, &user) {
            return Ok(Self {
                path: decoded,
                ..attributes
            });
        }
        let (api_group, rest) = match parts.as_slice() {
            ["api", rest @ ..] if rest.len() >= 2 => ("", rest),
            ["apis", group, rest @ ..] if rest.len() >= 2 => (*group, rest),
            _ => {
                let verb = method.to_ascii_lowercase();
                return Ok(Self::non_resource(user, &verb, &decoded));
            }
        };
        let (api_version, mut rest) = (rest[0], &rest[1..]);
        let mut verb = match rest[0] {
            special if SPECIAL_VERBS.contains(&special) => {
                if rest.len() < 2 {
                    return Err(RequestError::NoResource {
                        path: path.to_owned(),
                    });
                }
                rest = &rest[1..];
                special
            }
            _ => match method {
                "GET" | "HEAD" => "get",
                "POST" => "create",
                "PUT" => "update",
                "PATCH" => "patch",
                "DELETE" => "delete",
                _ => "",
            },
        };
        let mut namespace = "";
        if rest[0] == "namespaces" && rest.len() > 1 {
            namespace = rest[1];
            if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
                rest = &rest[2..];
            }
        }
        let resource = rest[0];
        let mut name = rest.get(1).copied().unwrap_or("");
        let subresource = match rest.get(2) {
            Some(sub) if verb != "proxy" => *sub,
            _ => "",
        };
        let query = ListQuery::parse(query.unwrap_or(""));
        if name.is_empty() && verb == "get" {
            verb = if query.watch { "watch" } else { "list" };
            name = query.name.as_deref().unwrap_or("");
        }
        if name.is_empty() && verb == "delete" {
            verb = "deletecollection";
        }
        if verb == "get"
            && api_group.is_empty()
            && resource == "pods"
            && POD_STREAMS.contains(&subresource)
        {
            verb = "create";
        }
        Ok(Self {
            verb: verb.to_owned(),
            namespace: namespace.to_owned(),
            api_group: api_group.to_owned(),
            api_version: api_version.to_owned(),
            resource: resource.to_owned(),
            subresource: subresource.to_owned(),
            name: name.to_owned(),
            is_resource_request: true,
            user,
            path: decoded,
        })
    }

    /// `resource/subresource`, or `resource` alone, as rules name it.
    pub fn resource_with_subresource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

/// The attributes of c4m's own endpoint `parts` (path segments), if it is
/// one.
fn c4m_endpoint(method: &str, parts: &[&str], user: &UserInfo) -> Option<Attributes> {
    if parts.first() != Some(&"c4m") {
        return None;
    }
    let method = if method == "HEAD" { "GET" } else { method };
    C4M_ENDPOINTS.iter().find_map(|endpoint| {
        if endpoint.method != method {
            return None;
        }
        let pattern: Vec<&str> = endpoint.path.trim_matches('/').split('/').collect();
        if pattern.len() != parts.len() {
            return None;
        }
        let (mut namespace, mut name) = ("", "");
        for (expected, part) in pattern.iter().zip(parts) {
            match *expected {
                "{namespace}" => namespace = part,
                "{name}" => name = part,
                literal if literal == *part => {}
                _ => return None,
            }
        }
        Some(Attributes {
            api_version: "v1".to_owned(),
            ..Attributes::resource(
                user.clone(),
                endpoint.verb,
                crate::c4m_endpoints::C4M_API_GROUP,
                endpoint.resource,
                namespace,
                name,
            )
            .with_subresource(endpoint.subresource)
        })
    })
}

/// What a list request's query says about its verb and name.
struct ListQuery {
    /// `watch` is present and neither `0` nor `false` (Kubernetes reads any
    /// other value as true).
    watch: bool,
    /// The name a `fieldSelector` requires with `metadata.name=` or `==`,
    /// if the selector parses and the name is a valid path segment.
    name: Option<String>,
}

impl ListQuery {
    fn parse(query: &str) -> Self {
        let mut watch = None;
        let mut field_selector = None;
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "watch" if watch.is_none() => {
                    watch = Some(!matches!(
                        value.to_ascii_lowercase().as_str(),
                        "false" | "0"
                    ));
                }
                "fieldSelector" if field_selector.is_none() => {
                    field_selector = Some(value.into_owned());
                }
                _ => {}
            }
        }
        Self {
            watch: watch.unwrap_or(false),
            name: field_selector
                .as_deref()
                .and_then(required_name)
                .filter(|name| valid_path_segment_name(name)),
        }
    }
}

/// The value a field selector requires `metadata.name` to equal, or `None`
/// when it requires none or does not parse (Kubernetes' grammar: terms
/// `key=value`, `key==value` or `key!=value` joined by `,`, with `\`
/// escaping `,`, `=`, `!` and `\` in values).
fn required_name(selector: &str) -> Option<String> {
    let mut found = None;
    for term in split_unescaped(selector, ',') {
        if term.is_empty() {
            continue;
        }
        let (key, operator, value) = split_term(term)?;
        if key.trim() == "metadata.name" && operator != "!=" && found.is_none() {
            found = Some(unescape(value)?);
        }
    }
    found
}

/// `term` split at its operator (`!=`, `==` or `=`, the first one found).
fn split_term(term: &str) -> Option<(&str, &str, &str)> {
    let at = term.find(['=', '!'])?;
    let (key, rest) = term.split_at(at);
    let operator = ["!=", "==", "="]
        .into_iter()
        .find(|operator| rest.starts_with(operator))?;
    Some((key, operator, &rest[operator.len()..]))
}

/// `text` split at each `separator` not escaped by `\`.
fn split_unescaped(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut escaped) = (0, false);
    for (at, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            c if c == separator => {
                parts.push(&text[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// A field selector value with its escapes removed; `None` for an unknown
/// escape, a dangling `\` or an unescaped `,`, `=` or `!` (invalid values).
fn unescape(value: &str) -> Option<String> {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                escaped @ ('\\' | ',' | '=' | '!') => out.push(escaped),
                _ => return None,
            },
            ',' | '=' | '!' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// Whether `name` can be a path segment naming an object (Kubernetes'
/// `IsValidPathSegmentName`).
fn valid_path_segment_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '%'])
}

/// `path` with `%XX` escapes decoded, or `None` if one is malformed or the
/// result is not UTF-8. (`+` stays `+`: it means a space only in queries.)
fn percent_decode(path: &str) -> Option<String> {
    if !path.contains('%') {
        return Some(path.to_owned());
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = bytes.get(at + 1..at + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(method, url, verb, group, version, namespace, resource,
    /// subresource, name)`.
    type Case = (
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
    );

    fn request(method: &str, url: &str) -> Result<Attributes, RequestError> {
        let (path, query) = match url.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (url, None),
        };
        Attributes::from_request(method, path, query, UserInfo::new("alice", &[]))
    }

    #[test]
    fn resource_requests_by_kubernetes_rules() {
        #[rustfmt::skip]
        let cases: &[Case] = &[
            // Collections and objects, namespaced and cluster-wide.
            ("GET", "/api/v1/namespaces", "list", "", "v1", "", "namespaces", "", ""),
            ("GET", "/api/v1/namespaces/other", "get", "", "v1", "other", "namespaces", "", "other"),
            ("GET", "/api/v1/namespaces/other/pods", "list", "", "v1", "other", "pods", "", ""),
            ("GET", "/api/v1/namespaces/other/pods/foo", "get", "", "v1", "other", "pods", "", "foo"),
            ("HEAD", "/api/v1/namespaces/other/pods/foo", "get", "", "v1", "other", "pods", "", "foo"),
            ("GET", "/api/v1/pods", "list", "", "v1", "", "pods", "", ""),
            ("HEAD", "/api/v1/pods", "list", "", "v1", "", "pods", "", ""),
            ("GET", "/api/v1/nodes/n1", "get", "", "v1", "", "nodes", "", "n1"),
            ("PATCH", "/api/v1/namespaces/new-namespace", "patch", "", "v1", "new-namespace", "namespaces", "", "new-namespace"),
            ("GET", "/api/v1/namespaces/other/pods/", "list", "", "v1", "other", "pods", "", ""),
            // Special verbs: proxy takes no subresource; watch by prefix or query.
            ("GET", "/api/v1/proxy/namespaces/other/pods/foo", "proxy", "", "v1", "other", "pods", "", "foo"),
            ("GET", "/api/v1/proxy/namespaces/other/pods/foo/subpath/not/a/subresource", "proxy", "", "v1", "other", "pods", "", "foo"),
            ("GET", "/api/v1/watch/pods", "watch", "", "v1", "", "pods", "", ""),
            ("GET", "/api/v1/watch/namespaces/other/pods", "watch", "", "v1", "other", "pods", "", ""),
            ("GET", "/api/v1/pods?watch=true", "watch", "", "v1", "", "pods", "", ""),
            ("GET", "/api/v1/pods?watch=false", "list", "", "v1", "", "pods", "", ""),
            ("GET", "/api/v1/namespaces/other/pods?watch=1", "watch", "", "v1", "other", "pods", "", ""),
            ("GET", "/api/v1/namespaces/other/pods?watch=0", "list", "", "v1", "other", "pods", "", ""),
            ("GET", "/api/v1/pods?watch=FALSE", "list", "", "v1", "", "pods", "", ""),
            ("GET", "/api/v1/pods?watch", "watch", "", "v1", "", "pods", "", ""),
            ("GET", "/api/v1/pods?resourceVersion=5&watch=yes", "watch", "", "v1", "", "pods", "", ""),
            // Subresources.
            ("GET", "/api/v1/namespaces/other/pods/foo/status", "get", "", "v1", "other", "pods", "status", "foo"),
            ("GET", "/api/v1/namespaces/other/pods/foo/proxy/subpath", "get", "", "v1", "other", "pods", "proxy", "foo"),
            ("PUT", "/api/v1/namespaces/other/finalize", "update", "", "v1", "other", "namespaces", "finalize", "other"),
            ("PUT", "/api/v1/namespaces/other/status", "update", "", "v1", "other", "namespaces", "status", "other"),
            ("GET", "/api/v1/namespaces/other/pods/foo/log", "get", "", "v1", "other", "pods", "log", "foo"),
            ("PUT", "/api/v1/namespaces/other/pods/foo/status", "update", "", "v1", "other", "pods", "status", "foo"),
            ("PATCH", "/apis/apps/v1/namespaces/other/deployments/web/scale", "patch", "apps", "v1", "other", "deployments", "scale", "web"),
            ("GET", "/apis/c4m.io/v1/namespaces/other/microservices/web/scale", "get", "c4m.io", "v1", "other", "microservices", "scale", "web"),
            ("POST", "/api/v1/namespaces/other/pods/foo/eviction", "create", "", "v1", "other", "pods", "eviction", "foo"),
            ("POST", "/api/v1/namespaces/other/pods/foo/binding", "create", "", "v1", "other", "pods", "binding", "foo"),
            ("POST", "/api/v1/namespaces/other/pods/foo/exec", "create", "", "v1", "other", "pods", "exec", "foo"),
            // WebSocket streams are GETs that act like Kubernetes' POSTs.
            ("GET", "/api/v1/namespaces/other/pods/foo/exec?command=sh&stdin=true", "create", "", "v1", "other", "pods", "exec", "foo"),
            ("GET", "/api/v1/namespaces/other/pods/foo/attach", "create", "", "v1", "other", "pods", "attach", "foo"),
            ("GET", "/api/v1/namespaces/other/pods/foo/portforward?ports=80", "create", "", "v1", "other", "pods", "portforward", "foo"),
            ("HEAD", "/api/v1/namespaces/other/pods/foo/exec", "create", "", "v1", "other", "pods", "exec", "foo"),
            // Verbs.
            ("PATCH", "/api/v1/namespaces/other/pods/foo", "patch", "", "v1", "other", "pods", "", "foo"),
            ("DELETE", "/api/v1/namespaces/other/pods/foo", "delete", "", "v1", "other", "pods", "", "foo"),
            ("POST", "/api/v1/namespaces/other/pods", "create", "", "v1", "other", "pods", "", ""),
            ("PUT", "/api/v1/namespaces/other/pods/foo", "update", "", "v1", "other", "pods", "", "foo"),
            ("OPTIONS", "/api/v1/namespaces/other/pods/foo", "", "", "v1", "other", "pods", "", "foo"),
            // Collections deleted.
            ("DELETE", "/api/v1/nodes", "deletecollection", "", "v1", "", "nodes", "", ""),
            ("DELETE", "/api/v1/namespaces", "deletecollection", "", "v1", "", "namespaces", "", ""),
            ("DELETE", "/api/v1/namespaces/other/pods", "deletecollection", "", "v1", "other", "pods", "", ""),
            ("DELETE", "/apis/extensions/v1/namespaces/other/pods", "deletecollection", "extensions", "v1", "other", "pods", "", ""),
            // Groups and versions.
            ("POST", "/apis/extensions/v1/namespaces/other/pods", "create", "extensions", "v1", "other", "pods", "", ""),
            ("POST", "/apis/extensions/v1beta3/namespaces/other/pods", "create", "extensions", "v1beta3", "other", "pods", "", ""),
            ("GET", "/apis/metrics.k8s.io/v1beta1/namespaces/other/pods/foo", "get", "metrics.k8s.io", "v1beta1", "other", "pods", "", "foo"),
            ("GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles/view", "get", "rbac.authorization.k8s.io", "v1", "", "clusterroles", "", "view"),
            // A field selector on metadata.name names the object.
            ("GET", "/apis/group/version/resource", "list", "group", "version", "", "resource", "", ""),
            ("GET", "/apis/group/version/resource?fieldSelector=metadata.name=name1", "list", "group", "version", "", "resource", "", "name1"),
            ("GET", "/apis/group/version/resource?fieldSelector=metadata.name%3D%3Dname1", "list", "group", "version", "", "resource", "", "name1"),
            ("GET", "/apis/group/version/resource?watch=true&fieldSelector=metadata.name=name1", "watch", "group", "version", "", "resource", "", "name1"),
            ("GET", "/apis/group/version/resource?fieldSelector=spec.nodeName=n1,metadata.name=name1", "list", "group", "version", "", "resource", "", "name1"),
            ("GET", "/apis/group/version/resource?fieldSelector=foo=bar", "list", "group", "version", "", "resource", "", ""),
            ("GET", "/apis/group/version/resource?fieldSelector=metadata.name!=name1", "list", "group", "version", "", "resource", "", ""),
            ("GET", "/apis/group/version/resource?fieldSelector=metadata.name=name1,foo", "list", "group", "version", "", "resource", "", ""),
            ("GET", "/apis/group/version/resource?fieldSelector=metadata.name=name1,foo&watch=true", "watch", "group", "version", "", "resource", "", ""),
            ("GET", "/apis/group/version/resource?fieldSelector=metadata.name=name1,foo&watch=false", "list", "group", "version", "", "resource", "", ""),
            ("GET", "/apis/group/version/resource?fieldSelector=metadata.name=..", "list", "group", "version", "", "resource", "", ""),
            ("GET", "/apis/group/version/resource?fieldSelector=metadata.name=a%2Fb", "list", "group", "version", "", "resource", "", ""),
            // A selector that names an object does not turn a collection delete into a delete.
            ("DELETE", "/api/v1/namespaces/other/pods?fieldSelector=metadata.name=foo", "deletecollection", "", "v1", "other", "pods", "", ""),
            // Percent-encoded segments are read decoded, as the router reads them.
            ("GET", "/api/v1/namespaces/default/secrets/%73ecret", "get", "", "v1", "default", "secrets", "", "secret"),
        ];
        for &(method, url, verb, group, version, namespace, resource, subresource, name) in cases {
            let got = request(method, url).unwrap_or_else(|e| panic!("{method} {url}: {e}"));
            let want = (
                true,
                verb,
                group,
                version,
                namespace,
                resource,
                subresource,
                name,
            );
            let have = (
                got.is_resource_request,
                got.verb.as_str(),
                got.api_group.as_str(),
                got.api_version.as_str(),
                got.namespace.as_str(),
                got.resource.as_str(),
                got.subresource.as_str(),
                got.name.as_str(),
            );
            assert_eq!(have, want, "{method} {url}");
            assert_eq!(got.user.name, "alice");
        }
    }

    #[test]
    fn non_resource_requests_keep_their_path_and_method() {
        for (method, url) in [
            ("GET", "/"),
            ("GET", "/healthz"),
            ("GET", "/livez"),
            ("GET", "/readyz"),
            ("GET", "/version"),
            ("GET", "/version/"),
            ("GET", "/openapi/v2"),
            ("GET", "/openapi/v3/apis/apps/v1"),
            ("GET", "/api"),
            ("GET", "/api/v1"),
            ("GET", "/apis"),
            ("GET", "/apis/apps"),
            ("GET", "/apis/apps/v1"),
            ("GET", "/apis/apps/v1/"),
            ("HEAD", "/healthz"),
            ("POST", "/not-api/version/resource"),
            ("GET", "/apis/version/resource"),
            ("GET", "/badprefix/version/resource"),
            // c4m paths that are not endpoints of the table.
            ("GET", "/c4m/v1/unknown"),
            ("POST", "/c4m/v1/scheduler/policy"),
            ("GET", "/c4m/v1/nodes/n1/images/import"),
        ] {
            let got = request(method, url).unwrap();
            assert!(!got.is_resource_request, "{method} {url}");
            assert_eq!(got.verb, method.to_ascii_lowercase(), "{url}");
            assert_eq!(got.path, url, "{url}");
            assert_eq!(
                (got.resource.as_str(), got.name.as_str()),
                ("", ""),
                "{url}"
            );
        }
    }

    #[test]
    fn resource_and_non_resource_paths_as_kubernetes_splits_them() {
        for (url, resource) in [
            ("/api/version/resource", true),
            ("/apis/group/version/resource/name/subresource", true),
            ("/api/version/resource/name/subresource", true),
            ("/apis/batch/v1/job", true),
            ("/apis/batch/v1/job/foo", true),
            ("/apis/batch/v1/job/foo/scale", true),
            ("/not-api/version/resource", false),
            ("/apis/extensions/v1beta1", false),
            ("/apis/extensions/v1beta1/", false),
            ("/api/version", false),
            ("/api", false),
            ("/", false),
            ("", false),
        ] {
            let got = request("GET", url).unwrap();
            assert_eq!(got.is_resource_request, resource, "{url}");
        }
    }

    #[test]
    fn unreadable_paths_are_errors_naming_the_path() {
        for (url, want) in [
            (
                "/api/v1/watch",
                "unable to determine the resource of request path \"/api/v1/watch\"",
            ),
            (
                "/apis/apps/v1/proxy/",
                "unable to determine the resource of request path \"/apis/apps/v1/proxy/\"",
            ),
            (
                "/api/v1/namespaces/a/pods/%zz",
                "request path \"/api/v1/namespaces/a/pods/%zz\" is not valid percent-encoded UTF-8",
            ),
            (
                "/api/v1/pods/%ff",
                "request path \"/api/v1/pods/%ff\" is not valid percent-encoded UTF-8",
            ),
            (
                "/api/v1/pods/%4",
                "request path \"/api/v1/pods/%4\" is not valid percent-encoded UTF-8",
            ),
            (
                "/api/v1/namespaces/a/pods/../secrets/x",
                "request path \"/api/v1/namespaces/a/pods/../secrets/x\" has an empty, \".\" or \"..\" segment",
            ),
            (
                "/api//v1/pods",
                "request path \"/api//v1/pods\" has an empty, \".\" or \"..\" segment",
            ),
            (
                "/healthz/./x",
                "request path \"/healthz/./x\" has an empty, \".\" or \"..\" segment",
            ),
            (
                "/api/v1/namespaces/a/pods/%2e%2e/x",
                "request path \"/api/v1/namespaces/a/pods/%2e%2e/x\" has an empty, \".\" or \"..\" segment",
            ),
        ] {
            assert_eq!(request("GET", url).unwrap_err().to_string(), want);
        }
    }

    #[test]
    fn c4m_endpoints_are_resources_of_c4m_io() {
        #[rustfmt::skip]
        let cases: &[Case] = &[
            ("POST", "/c4m/v1/apply", "create", "c4m.io", "v1", "", "applies", "", ""),
            ("GET", "/c4m/v1/namespaces/shop/services/web/endpoints", "get", "c4m.io", "v1", "shop", "services", "endpoints", "web"),
            ("GET", "/c4m/v1/nodes/n1/images", "get", "c4m.io", "v1", "", "nodes", "images", "n1"),
            ("HEAD", "/c4m/v1/nodes/n1/images", "get", "c4m.io", "v1", "", "nodes", "images", "n1"),
            ("DELETE", "/c4m/v1/nodes/n1/images?ref=busybox", "delete", "c4m.io", "v1", "", "nodes", "images", "n1"),
            ("POST", "/c4m/v1/nodes/n1/images/import?name=x", "create", "c4m.io", "v1", "", "nodes", "images", "n1"),
            ("POST", "/c4m/v1/nodes/n1/images/pull", "create", "c4m.io", "v1", "", "nodes", "images", "n1"),
            ("GET", "/c4m/v1/scheduler/policy", "get", "c4m.io", "v1", "", "schedulerpolicy", "", ""),
            ("PUT", "/c4m/v1/scheduler/policy", "update", "c4m.io", "v1", "", "schedulerpolicy", "", ""),
            ("GET", "/c4m/v1/scheduler/policy/history", "get", "c4m.io", "v1", "", "schedulerpolicy", "history", ""),
            ("GET", "/c4m/v1/tls/certificate", "get", "c4m.io", "v1", "", "tlscertificate", "", ""),
        ];
        for &(method, url, verb, group, version, namespace, resource, subresource, name) in cases {
            let got = request(method, url).unwrap();
            let have = (
                got.is_resource_request,
                got.verb.as_str(),
                got.api_group.as_str(),
                got.api_version.as_str(),
                got.namespace.as_str(),
                got.resource.as_str(),
                got.subresource.as_str(),
                got.name.as_str(),
            );
            let want = (
                true,
                verb,
                group,
                version,
                namespace,
                resource,
                subresource,
                name,
            );
            assert_eq!(have, want, "{method} {url}");
            assert_eq!(got.path, url.split('?').next().unwrap());
        }
    }

    #[test]
    fn every_c4m_endpoint_is_reachable_by_its_own_path() {
        for endpoint in C4M_ENDPOINTS {
            let path = endpoint
                .path
                .replace("{namespace}", "ns")
                .replace("{name}", "x");
            let got = request(endpoint.method, &path).unwrap();
            assert!(got.is_resource_request, "{path}");
            assert_eq!(
                (
                    got.verb.as_str(),
                    got.resource.as_str(),
                    got.subresource.as_str()
                ),
                (endpoint.verb, endpoint.resource, endpoint.subresource),
                "{} {path}",
                endpoint.method
            );
        }
    }
}
