//! HTTPRoute and GRPCRoute rules into matches and actions, whatever they
//! attach to (a Gateway listener here, a Service for the mesh sidecar).

use std::sync::Arc;

use http::{HeaderName, HeaderValue, Method, StatusCode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::super::action::{
    BackendTarget, HeaderModifier, Mirror, ObjectRef, PathModifier, Redirect, Rewrite, RouteAction,
    RouteProtocol, Scheme, ServicePort, ServiceRef, Timeouts, WeightedBackend,
};
use super::super::error::{Problem, RouteError};
use super::super::host::HostPattern;
use super::super::matching::{
    HeaderMatch, PathMatch, QueryMatch, RequestMatch, ValueMatch, anchored,
};
use super::parse_duration;
use crate::proxy::api::{
    BackendObjectReference, GrpcMethodMatchType, GrpcRoute, HeaderMatchType, HttpHeaderFilter,
    HttpPathModifier, HttpRoute, HttpRouteFilter, PathMatchType, PathModifierType,
};

/// One rule of a route: its matches (ORed) and what it does.
#[derive(Clone, Debug)]
pub struct CompiledRule {
    /// The matches; a request satisfying any one selects the rule.
    pub matches: Vec<RequestMatch>,
    /// What the rule does.
    pub action: RouteAction,
}

/// Whether a route may send to Service `namespace/name` (in another
/// namespace: a ReferenceGrant allows it).
pub(super) type MayRefer<'a> = dyn Fn(&str, &str) -> bool + 'a;

/// Collects errors on one route; the route is refused if any is fatal.
struct Checker<'e> {
    object: ObjectRef,
    errors: &'e mut Vec<RouteError>,
    fatal: bool,
}

impl<'e> Checker<'e> {
    /// Starts checking a route: its namespace, and its hostnames checked.
    fn start(
        kind: &'static str,
        meta: &ObjectMeta,
        hostnames: &[String],
        errors: &'e mut Vec<RouteError>,
    ) -> (String, Self) {
        let namespace = meta.namespace.clone().unwrap_or_default();
        let object = ObjectRef::new(
            kind,
            namespace.clone(),
            meta.name.clone().unwrap_or_default(),
        );
        let mut check = Checker {
            object,
            errors,
            fatal: false,
        };
        for (i, hostname) in hostnames.iter().enumerate() {
            if let Err(e) = HostPattern::gateway(hostname) {
                check.fail(format!("spec.hostnames[{i}]"), e.into());
            }
        }
        (namespace, check)
    }

    fn fail(&mut self, field: String, problem: Problem) {
        self.errors
            .push(RouteError::new(&self.object, field, problem));
        self.fatal = true;
    }

    /// An error that leaves the route in place (a backend reference).
    fn warn(&mut self, field: String, problem: Problem) {
        self.errors
            .push(RouteError::new(&self.object, field, problem));
    }
}

/// Compiles an HTTPRoute's rules; `None` if the route is invalid (every
/// reason is appended to `errors`). Invalid backend references are
/// reported but keep the route, with their share answered 500.
pub fn compile_http_rules(
    route: &HttpRoute,
    may_refer: &MayRefer<'_>,
    errors: &mut Vec<RouteError>,
) -> Option<Vec<CompiledRule>> {
    let (namespace, mut check) =
        Checker::start("HTTPRoute", &route.metadata, &route.spec.hostnames, errors);
    let object = check.object.clone();
    let mut rules = Vec::with_capacity(route.spec.rules.len());
    for (r, rule) in route.spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{r}]");
        let default_match = [Default::default()];
        let matches_in = rule.matches.as_deref().unwrap_or(&default_match);
        let mut matches = Vec::with_capacity(matches_in.len());
        for (m, mat) in matches_in.iter().enumerate() {
            let at = format!("{at}.matches[{m}]");
            let path = match &mat.path {
                None => PathMatch::Prefix("/".into()),
                Some(p) => {
                    let value = p.value.as_deref().unwrap_or("/");
                    path_match(p.type_, value).unwrap_or_else(|problem| {
                        // The route is refused; the other fields are still checked.
                        check.fail(format!("{at}.path.value"), problem);
                        PathMatch::Prefix("/".into())
                    })
                }
            };
            let method = match mat.method.as_deref().map(method) {
                None => None,
                Some(Ok(m)) => Some(m),
                Some(Err(problem)) => {
                    check.fail(format!("{at}.method"), problem);
                    None
                }
            };
            let headers = header_matches(
                mat.headers
                    .iter()
                    .map(|h| (h.type_, h.name.as_str(), h.value.as_str())),
                &format!("{at}.headers"),
                &mut check,
            );
            let mut query = Vec::with_capacity(mat.query_params.len());
            for (q, param) in mat.query_params.iter().enumerate() {
                if query
                    .iter()
                    .any(|existing: &QueryMatch| existing.name == param.name)
                {
                    continue; // Gateway API: only the first of equal names counts.
                }
                match value_match(param.type_, &param.value) {
                    Ok(value) if !param.name.is_empty() => query.push(QueryMatch {
                        name: param.name.clone(),
                        value,
                    }),
                    Ok(_) => check.fail(
                        format!("{at}.queryParams[{q}].name"),
                        Problem::Invalid("empty name".into()),
                    ),
                    Err(problem) => check.fail(format!("{at}.queryParams[{q}].value"), problem),
                }
            }
            matches.push(RequestMatch {
                path,
                method,
                headers,
                query,
            });
        }
        let mut action = RouteAction::new(object.clone(), r);
        for (f, filter) in rule.filters.iter().enumerate() {
            apply_filter(
                filter,
                &format!("{at}.filters[{f}]"),
                &namespace,
                may_refer,
                &matches,
                &mut action,
                &mut check,
                false,
            );
        }
        if action.redirect.is_some() && action.rewrite.is_some() {
            check.fail(
                format!("{at}.filters"),
                Problem::Invalid("RequestRedirect and URLRewrite cannot both be set".into()),
            );
        }
        let refs = rule
            .backend_refs
            .iter()
            .map(|b| (&b.backend, b.weight, !b.filters.is_empty()));
        action.backends = backend_refs(refs, &at, &namespace, may_refer, &mut check);
        if let Some(timeouts) = &rule.timeouts {
            action.timeouts = timeouts_of(
                timeouts.request.as_deref(),
                timeouts.backend_request.as_deref(),
                &format!("{at}.timeouts"),
                &mut check,
            );
        }
        rules.push(CompiledRule { matches, action });
    }
    (!check.fatal).then_some(rules)
}

/// Compiles a GRPCRoute's rules, as [`compile_http_rules`] does. A method
/// match becomes a path match on `/service/method`.
pub fn compile_grpc_rules(
    route: &GrpcRoute,
    may_refer: &MayRefer<'_>,
    errors: &mut Vec<RouteError>,
) -> Option<Vec<CompiledRule>> {
    let (namespace, mut check) =
        Checker::start("GRPCRoute", &route.metadata, &route.spec.hostnames, errors);
    let object = check.object.clone();
    let mut rules = Vec::with_capacity(route.spec.rules.len());
    for (r, rule) in route.spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{r}]");
        let mut matches = Vec::with_capacity(rule.matches.len().max(1));
        for (m, mat) in rule.matches.iter().enumerate() {
            let at = format!("{at}.matches[{m}]");
            let path = match &mat.method {
                None => PathMatch::Prefix("/".into()),
                Some(method) => match grpc_path(
                    method.type_,
                    method.service.as_deref(),
                    method.method.as_deref(),
                ) {
                    Ok(path) => path,
                    Err(problem) => {
                        check.fail(format!("{at}.method"), problem);
                        continue;
                    }
                },
            };
            let headers = header_matches(
                mat.headers
                    .iter()
                    .map(|h| (h.type_, h.name.as_str(), h.value.as_str())),
                &format!("{at}.headers"),
                &mut check,
            );
            matches.push(RequestMatch {
                path,
                method: None,
                headers,
                query: Vec::new(),
            });
        }
        if rule.matches.is_empty() {
            matches.push(RequestMatch::any());
        }
        let mut action = RouteAction::new(object.clone(), r);
        action.protocol = RouteProtocol::Grpc;
        for (f, filter) in rule.filters.iter().enumerate() {
            let as_http = HttpRouteFilter {
                type_: filter.type_.clone(),
                request_header_modifier: filter.request_header_modifier.clone(),
                response_header_modifier: filter.response_header_modifier.clone(),
                request_mirror: filter.request_mirror.clone(),
                request_redirect: None,
                url_rewrite: None,
            };
            apply_filter(
                &as_http,
                &format!("{at}.filters[{f}]"),
                &namespace,
                may_refer,
                &matches,
                &mut action,
                &mut check,
                true,
            );
        }
        let refs = rule
            .backend_refs
            .iter()
            .map(|b| (&b.backend, b.weight, !b.filters.is_empty()));
        action.backends = backend_refs(refs, &at, &namespace, may_refer, &mut check);
        rules.push(CompiledRule { matches, action });
    }
    (!check.fatal).then_some(rules)
}

fn path_match(kind: PathMatchType, value: &str) -> Result<PathMatch, Problem> {
    if kind == PathMatchType::RegularExpression {
        return anchored(value)
            .map(PathMatch::Regex)
            .map_err(Problem::Regex);
    }
    if !value.starts_with('/') {
        return Err(Problem::Invalid(format!("{value:?} must start with \"/\"")));
    }
    // Gateway API's validation: no `//`, no dot segments, no encoded slash, no fragment.
    let forbidden = ["//", "/./", "/../", "%2f", "%2F", "#"];
    if let Some(bad) = forbidden.iter().find(|f| value.contains(*f)) {
        return Err(Problem::Invalid(format!(
            "{value:?} must not contain {bad:?}"
        )));
    }
    if value.ends_with("/..") || value.ends_with("/.") {
        return Err(Problem::Invalid(format!(
            "{value:?} must not end with a dot segment"
        )));
    }
    Ok(match kind {
        PathMatchType::Exact => PathMatch::Exact(value.to_owned()),
        _ => PathMatch::prefix(value),
    })
}

fn method(name: &str) -> Result<Method, Problem> {
    const METHODS: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    if METHODS.contains(&name) {
        Method::from_bytes(name.as_bytes())
            .map_err(|_| Problem::Invalid(format!("{name:?} is not a method")))
    } else {
        Err(Problem::Invalid(format!(
            "{name:?} is not one of {}",
            METHODS.join(", ")
        )))
    }
}

fn value_match(kind: HeaderMatchType, value: &str) -> Result<ValueMatch, Problem> {
    match kind {
        HeaderMatchType::Exact => Ok(ValueMatch::Exact(value.to_owned())),
        HeaderMatchType::RegularExpression => anchored(value)
            .map(ValueMatch::Regex)
            .map_err(Problem::Regex),
    }
}

fn header_matches<'h>(
    headers: impl Iterator<Item = (HeaderMatchType, &'h str, &'h str)>,
    at: &str,
    check: &mut Checker<'_>,
) -> Vec<HeaderMatch> {
    let mut out: Vec<HeaderMatch> = Vec::new();
    for (h, (kind, name, value)) in headers.enumerate() {
        let name = match HeaderName::from_bytes(name.as_bytes()) {
            Ok(name) => name,
            Err(_) => {
                check.fail(
                    format!("{at}[{h}].name"),
                    Problem::Invalid(format!("{name:?} is not a header name")),
                );
                continue;
            }
        };
        if out.iter().any(|existing| existing.name == name) {
            continue; // Gateway API: only the first of equal names counts.
        }
        match value_match(kind, value) {
            Ok(value) => out.push(HeaderMatch { name, value }),
            Err(problem) => check.fail(format!("{at}[{h}].value"), problem),
        }
    }
    out
}

/// A gRPC method match as a path condition on `/service/method`.
fn grpc_path(
    kind: GrpcMethodMatchType,
    service: Option<&str>,
    method: Option<&str>,
) -> Result<PathMatch, Problem> {
    let valid_name = |s: &str| !s.is_empty() && !s.contains('/');
    match (kind, service, method) {
        (_, None, None) => Err(Problem::Invalid(
            "one of service and method must be set".into(),
        )),
        (GrpcMethodMatchType::Exact, service, method) => {
            if service.is_some_and(|s| !valid_name(s)) || method.is_some_and(|m| !valid_name(m)) {
                return Err(Problem::Invalid(
                    "service and method must be non-empty names without '/'".into(),
                ));
            }
            Ok(match (service, method) {
                (Some(s), Some(m)) => PathMatch::Exact(format!("/{s}/{m}")),
                (Some(s), None) => PathMatch::Prefix(format!("/{s}")),
                (None, Some(m)) => PathMatch::Regex(
                    anchored(&format!("/[^/]+/{}", regex::escape(m))).map_err(Problem::Regex)?,
                ),
                (None, None) => unreachable!("handled above"),
            })
        }
        (GrpcMethodMatchType::RegularExpression, service, method) => {
            let pattern = format!(
                "/(?:{})/(?:{})",
                service.unwrap_or("[^/]+"),
                method.unwrap_or("[^/]+")
            );
            anchored(&pattern)
                .map(PathMatch::Regex)
                .map_err(Problem::Regex)
        }
    }
}

fn header_modifier(filter: &HttpHeaderFilter, at: &str, check: &mut Checker<'_>) -> HeaderModifier {
    let mut out = HeaderModifier::default();
    let pairs = |list: &[crate::proxy::api::HttpHeader], field: &str, check: &mut Checker<'_>| {
        let mut pairs = Vec::with_capacity(list.len());
        for (i, h) in list.iter().enumerate() {
            match (
                HeaderName::from_bytes(h.name.as_bytes()),
                HeaderValue::from_str(&h.value),
            ) {
                (Ok(name), Ok(value)) => pairs.push((name, value)),
                (Err(_), _) => check.fail(
                    format!("{at}.{field}[{i}].name"),
                    Problem::Invalid(format!("{:?} is not a header name", h.name)),
                ),
                (_, Err(_)) => check.fail(
                    format!("{at}.{field}[{i}].value"),
                    Problem::Invalid(format!("{:?} is not a header value", h.value)),
                ),
            }
        }
        pairs
    };
    out.set = pairs(&filter.set, "set", check);
    out.add = pairs(&filter.add, "add", check);
    for (i, name) in filter.remove.iter().enumerate() {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(name) => out.remove.push(name),
            Err(_) => check.fail(
                format!("{at}.remove[{i}]"),
                Problem::Invalid(format!("{name:?} is not a header name")),
            ),
        }
    }
    out
}

fn path_modifier(
    modifier: &HttpPathModifier,
    at: &str,
    matches: &[RequestMatch],
    check: &mut Checker<'_>,
) -> Option<PathModifier> {
    let (value, field) = match modifier.type_ {
        PathModifierType::ReplaceFullPath => {
            (modifier.replace_full_path.as_deref(), "replaceFullPath")
        }
        PathModifierType::ReplacePrefixMatch => (
            modifier.replace_prefix_match.as_deref(),
            "replacePrefixMatch",
        ),
    };
    let Some(value) = value else {
        check.fail(
            format!("{at}.{field}"),
            Problem::Invalid(format!("{field} must be set for type {:?}", modifier.type_)),
        );
        return None;
    };
    if !value.starts_with('/') {
        check.fail(
            format!("{at}.{field}"),
            Problem::Invalid(format!("{value:?} must start with \"/\"")),
        );
        return None;
    }
    Some(match modifier.type_ {
        PathModifierType::ReplaceFullPath => PathModifier::Full(value.to_owned()),
        PathModifierType::ReplacePrefixMatch => {
            if let Some(m) = matches
                .iter()
                .position(|m| !matches!(m.path, PathMatch::Prefix(_)))
            {
                check.fail(
                    format!("{at}.type"),
                    Problem::Invalid(format!(
                        "ReplacePrefixMatch needs PathPrefix matches; matches[{m}] is not one"
                    )),
                );
            }
            PathModifier::Prefix(value.to_owned())
        }
    })
}

#[allow(clippy::too_many_arguments)]
fn apply_filter(
    filter: &HttpRouteFilter,
    at: &str,
    namespace: &str,
    may_refer: &MayRefer<'_>,
    matches: &[RequestMatch],
    action: &mut RouteAction,
    check: &mut Checker<'_>,
    grpc: bool,
) {
    let missing = |check: &mut Checker<'_>, field: &str| {
        check.fail(
            format!("{at}.{field}"),
            Problem::Invalid(format!("{field} must be set for type {}", filter.type_)),
        )
    };
    let once = |check: &mut Checker<'_>, set: bool| {
        if set {
            check.fail(
                format!("{at}.type"),
                Problem::Invalid(format!("{} may appear once per rule", filter.type_)),
            );
        }
    };
    match filter.type_.as_str() {
        "RequestHeaderModifier" => match &filter.request_header_modifier {
            Some(f) => {
                once(check, action.request_headers.is_some());
                action.request_headers = Some(header_modifier(
                    f,
                    &format!("{at}.requestHeaderModifier"),
                    check,
                ));
            }
            None => missing(check, "requestHeaderModifier"),
        },
        "ResponseHeaderModifier" => match &filter.response_header_modifier {
            Some(f) => {
                once(check, action.response_headers.is_some());
                action.response_headers = Some(header_modifier(
                    f,
                    &format!("{at}.responseHeaderModifier"),
                    check,
                ));
            }
            None => missing(check, "responseHeaderModifier"),
        },
        "RequestMirror" => match &filter.request_mirror {
            Some(f) => {
                let at = format!("{at}.requestMirror");
                let (numerator, denominator) = match (f.percent, &f.fraction) {
                    (Some(_), Some(_)) => {
                        check.fail(
                            format!("{at}.fraction"),
                            Problem::Invalid("percent and fraction cannot both be set".into()),
                        );
                        (0, 1)
                    }
                    (Some(p), None) if (0..=100).contains(&p) => (p as u32, 100),
                    (None, Some(fr))
                        if fr.numerator >= 0
                            && fr.denominator.unwrap_or(100) > 0
                            && fr.numerator <= fr.denominator.unwrap_or(100) =>
                    {
                        (fr.numerator as u32, fr.denominator.unwrap_or(100) as u32)
                    }
                    (None, None) => (1, 1),
                    _ => {
                        check.fail(
                            at.clone(),
                            Problem::Invalid("the mirrored share must lie between 0 and 1".into()),
                        );
                        (0, 1)
                    }
                };
                let target = service_target(
                    &f.backend_ref,
                    &format!("{at}.backendRef"),
                    namespace,
                    may_refer,
                    check,
                );
                action.mirrors.push(Mirror {
                    target,
                    numerator,
                    denominator,
                });
            }
            None => missing(check, "requestMirror"),
        },
        "RequestRedirect" if !grpc => match &filter.request_redirect {
            Some(f) => {
                let at = format!("{at}.requestRedirect");
                once(check, action.redirect.is_some());
                let scheme = match f.scheme.as_deref() {
                    None => None,
                    Some("http") => Some(Scheme::Http),
                    Some("https") => Some(Scheme::Https),
                    Some(other) => {
                        check.fail(
                            format!("{at}.scheme"),
                            Problem::Invalid(format!("{other:?} is not http or https")),
                        );
                        None
                    }
                };
                if let Some(host) = &f.hostname
                    && let Err(e) = HostPattern::gateway(host).and_then(|p| match p {
                        HostPattern::Exact(_) => Ok(()),
                        _ => Err(super::super::host::HostnameError::Invalid(host.clone())),
                    })
                {
                    check.fail(format!("{at}.hostname"), e.into());
                }
                let port = match f.port {
                    None => None,
                    Some(p) if (1..=65535).contains(&p) => Some(p as u16),
                    Some(p) => {
                        check.fail(
                            format!("{at}.port"),
                            Problem::Invalid(format!("{p} is not a port")),
                        );
                        None
                    }
                };
                let status = match f.status_code.unwrap_or(302) {
                    code @ (301 | 302 | 303 | 307 | 308) => {
                        StatusCode::from_u16(code as u16).expect("a valid redirect status")
                    }
                    other => {
                        check.fail(
                            format!("{at}.statusCode"),
                            Problem::Invalid(format!("{other} is not 301, 302, 303, 307 or 308")),
                        );
                        StatusCode::FOUND
                    }
                };
                let path = f
                    .path
                    .as_ref()
                    .and_then(|p| path_modifier(p, &format!("{at}.path"), matches, check));
                action.redirect = Some(Redirect {
                    scheme,
                    host: f.hostname.clone(),
                    port,
                    path,
                    status,
                });
            }
            None => missing(check, "requestRedirect"),
        },
        "URLRewrite" if !grpc => match &filter.url_rewrite {
            Some(f) => {
                let at = format!("{at}.urlRewrite");
                once(check, action.rewrite.is_some());
                let host = f
                    .hostname
                    .as_ref()
                    .and_then(|h| match HostPattern::gateway(h) {
                        Ok(HostPattern::Exact(_)) => HeaderValue::from_str(h).ok(),
                        _ => {
                            check.fail(
                                format!("{at}.hostname"),
                                Problem::Invalid(format!("{h:?} is not a hostname")),
                            );
                            None
                        }
                    });
                let path = f
                    .path
                    .as_ref()
                    .and_then(|p| path_modifier(p, &format!("{at}.path"), matches, check));
                action.rewrite = Some(Rewrite { host, path });
            }
            None => missing(check, "urlRewrite"),
        },
        other => check.fail(
            format!("{at}.type"),
            Problem::Unsupported(format!("filter type {other:?}")),
        ),
    }
}

/// A backend reference as a target; problems keep the route (500 share).
fn service_target(
    backend: &BackendObjectReference,
    at: &str,
    namespace: &str,
    may_refer: &MayRefer<'_>,
    check: &mut Checker<'_>,
) -> BackendTarget {
    let group = backend.group.as_deref().unwrap_or("");
    let kind = backend.kind.as_deref().unwrap_or("Service");
    if !group.is_empty() || kind != "Service" {
        check.warn(
            format!("{at}.kind"),
            Problem::Unsupported(format!(
                "backend kind {kind:?} of group {group:?} (only Services)"
            )),
        );
        return BackendTarget::Invalid;
    }
    let port = match backend.port {
        Some(p) if (1..=65535).contains(&p) => p as u16,
        Some(p) => {
            check.fail(
                format!("{at}.port"),
                Problem::Invalid(format!("{p} is not a port")),
            );
            return BackendTarget::Invalid;
        }
        None => {
            check.fail(
                format!("{at}.port"),
                Problem::Invalid("port is required for a Service".into()),
            );
            return BackendTarget::Invalid;
        }
    };
    let target_namespace = backend.namespace.as_deref().unwrap_or(namespace);
    if !may_refer(target_namespace, &backend.name) {
        check.warn(
            format!("{at}.namespace"),
            Problem::NotPermitted {
                target: format!("Service {target_namespace}/{}", backend.name),
                namespace: target_namespace.to_owned(),
            },
        );
        return BackendTarget::Invalid;
    }
    BackendTarget::Service(ServiceRef {
        namespace: Arc::from(target_namespace),
        name: Arc::from(backend.name.as_str()),
        port: ServicePort::Number(port),
    })
}

fn weighted(
    backend: &BackendObjectReference,
    weight: Option<i32>,
    at: &str,
    namespace: &str,
    may_refer: &MayRefer<'_>,
    check: &mut Checker<'_>,
) -> WeightedBackend {
    let weight = match weight.unwrap_or(1) {
        w @ 0..=1_000_000 => w as u32,
        w => {
            check.fail(
                format!("{at}.weight"),
                Problem::Invalid(format!("{w} is not between 0 and 1000000")),
            );
            0
        }
    };
    WeightedBackend {
        target: service_target(backend, at, namespace, may_refer, check),
        weight,
    }
}

/// A rule's weighted backends; filters on them are refused.
fn backend_refs<'b>(
    refs: impl Iterator<Item = (&'b BackendObjectReference, Option<i32>, bool)>,
    at: &str,
    namespace: &str,
    may_refer: &MayRefer<'_>,
    check: &mut Checker<'_>,
) -> Vec<WeightedBackend> {
    let mut out = Vec::new();
    for (b, (backend, weight, has_filters)) in refs.enumerate() {
        let at = format!("{at}.backendRefs[{b}]");
        if has_filters {
            check.fail(
                format!("{at}.filters"),
                Problem::Unsupported("filters on a backendRef".into()),
            );
        }
        out.push(weighted(backend, weight, &at, namespace, may_refer, check));
    }
    out
}

fn timeouts_of(
    request: Option<&str>,
    backend: Option<&str>,
    at: &str,
    check: &mut Checker<'_>,
) -> Timeouts {
    let parse = |value: Option<&str>, field: &str, check: &mut Checker<'_>| match value
        .map(parse_duration)
    {
        None => None,
        Some(Ok(d)) => d,
        Some(Err(why)) => {
            check.fail(format!("{at}.{field}"), Problem::Invalid(why));
            None
        }
    };
    let timeouts = Timeouts {
        request: parse(request, "request", check),
        backend_request: parse(backend, "backendRequest", check),
    };
    if let (Some(r), Some(b)) = (timeouts.request, timeouts.backend_request)
        && b > r
    {
        check.fail(
            format!("{at}.backendRequest"),
            Problem::Invalid("must not be longer than request".into()),
        );
    }
    timeouts
}
