//! The HTTP/JSON API: Kubernetes-style paths and semantics for every kind,
//! plus c4m's own endpoints (batch apply, the service registry, metrics).
//!
//! Paths: `/api/v1/...` for the core group, `/apis/{group}/{version}/...`
//! for the others; `namespaces/{ns}/` before the plural for namespaced
//! kinds; `/{name}` for one object and `/{name}/status` for its status.
//! Lists are Kubernetes Lists with a resourceVersion; `?watch=1` streams
//! newline-delimited watch events from a resourceVersion.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use c4m_api::ApplyRequest;
use c4m_core::ResourceKind;
use c4m_state::EventKind;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::bookmarks::{self, WatchOptions};
use crate::deletion::DeleteOptions;
use crate::discovery;
use crate::metrics;
use crate::objects::{Objects, Part, decode, kind, prefix};
use crate::pagination::PageRequest;
use crate::registry::Registry;
use crate::selector::Selector;
use crate::server_side_apply::ApplyPatch as ServerSideApply;
use crate::streams;
use crate::tables::{IncludeObject, List, ListMeta, Table};
use crate::{Error, Result, scheduler_policy};
use crate::{invalid, patch};

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct ApiState {
    pub objects: Objects,
    pub registry: Registry,
    pub metrics: crate::metrics::MetricsState,
    /// The bearer token clients must present; None in dev mode.
    pub token: Option<String>,
    /// The token the control plane presents to agents.
    pub agent_token: String,
    pub http: reqwest::Client,
    pub shutdown: CancellationToken,
    /// The API's TLS certificate (PEM), which `c4m kubeconfig` fetches
    /// for clients to trust; None when the API speaks only HTTP.
    pub certificate_pem: Option<String>,
    /// The lists being paged through (`limit`/`continue`).
    pub pages: Arc<crate::pagination::Snapshots>,
}

type Shared = State<Arc<ApiState>>;

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (code, reason) = self.http_status();
        if code >= 500 {
            tracing::error!(error = %self, "API request failed");
        }
        let mut body = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": reason,
            "code": code,
        });
        // Clients (kubectl, client-go) name the object from these.
        if let Error::NotFound { kind, name } | Error::AlreadyExists { kind, name } = &self {
            body["details"] = json!({"name": name, "kind": kind});
        }
        if let Error::InvalidObject {
            kind,
            group,
            name,
            causes,
        } = &self
        {
            body["details"] = json!({"name": name, "group": group, "kind": kind, "causes": causes});
        }
        if let Error::ApplyConflict { causes, .. } = &self {
            body["details"] = json!({ "causes": causes });
        }
        (
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            axum::Json(body),
        )
            .into_response()
    }
}

/// The largest request body taken: a batch apply of thousands of objects
/// is one request (axum's default of 2 MiB would refuse 10,000 instances).
/// Each object in it is still held to [`crate::objects::MAX_OBJECT_BYTES`].
pub(crate) const MAX_REQUEST_BYTES: usize = 64 << 20;

/// The largest body of a request on one object (create, replace, patch,
/// apply, and anything else under a resource path): Kubernetes' limit
/// (`MaxRequestBodyBytes`, 3 MiB), twice what an object may be, as a
/// patch or YAML may take more room than the object it makes. Larger is a
/// 413, refused after at most this many bytes are read.
pub(crate) const MAX_OBJECT_REQUEST_BYTES: usize = 3 << 20;

/// Reads a request body of at most `limit` bytes into memory. A larger one
/// is a 413: at once when its length is declared, else as soon as `limit`
/// bytes have come.
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<Bytes> {
    use axum::body::HttpBody;
    let too_large = || {
        Error::TooLarge(format!(
            "the request body is too large: the limit is {limit} bytes"
        ))
    };
    if body.size_hint().lower() > limit as u64 {
        return Err(too_large());
    }
    let mut stream = body.into_data_stream();
    let mut read = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| Error::BadRequest(format!("cannot read the request body: {e}")))?;
        if read.len() + chunk.len() > limit {
            return Err(too_large());
        }
        read.extend_from_slice(&chunk);
    }
    Ok(read.freeze())
}

/// The API's router.
pub(crate) fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/c4m/v1/apply", post(apply))
        .route(
            "/c4m/v1/namespaces/{ns}/services/{name}/endpoints",
            get(service_endpoints),
        )
        .route("/apis/metrics.k8s.io/v1beta1/pods", get(metrics::all_pods))
        .route(
            "/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods",
            get(metrics::namespace_pods),
        )
        .route(
            "/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods/{name}",
            get(metrics::pod),
        )
        .route("/apis/metrics.k8s.io/v1beta1/nodes", get(metrics::nodes))
        .route(
            "/apis/metrics.k8s.io/v1beta1/nodes/{name}",
            get(metrics::node),
        )
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}/log",
            get(streams::pod_log),
        )
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}/exec",
            get(streams::pod_exec),
        )
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}/attach",
            get(streams::pod_attach),
        )
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}/portforward",
            get(streams::pod_port_forward),
        )
        .route(
            "/c4m/v1/nodes/{node}/images",
            get(node_images).delete(node_images),
        )
        .route(
            "/c4m/v1/nodes/{node}/images/{action}",
            post(node_image_action).layer(DefaultBodyLimit::disable()),
        )
        .route(
            c4m_api::SCHEDULER_POLICY_PATH,
            get(scheduler_policy).put(set_scheduler_policy),
        )
        .route(
            c4m_api::SCHEDULER_POLICY_HISTORY_PATH,
            get(scheduler_policy_history),
        )
        .route(c4m_api::TLS_CERTIFICATE_PATH, get(tls_certificate))
        .route("/api", get(discover_core))
        .route("/api/{version}", get(group_version_document))
        .route("/apis", get(discover_groups))
        .route("/apis/{group}/{version}", get(group_version_document))
        .route(
            "/openapi/v3",
            get(|| async { axum::Json(discovery::openapi_v3_root()) }),
        )
        .route("/openapi/v3/api/{version}", get(group_version_document))
        .route(
            "/openapi/v3/apis/{group}/{version}",
            get(group_version_document),
        )
        .fallback(resource)
        .layer(middleware::from_fn(crate::events_view::view))
        .layer(middleware::from_fn(crate::autoscaling_v1::view))
        .layer(middleware::from_fn(crate::protobuf::negotiate))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            authenticate,
        ))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/version", get(version))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .layer(middleware::from_fn(crate::panics::contain))
        .with_state(state)
}

/// Who made a request, for audit records: the access token's key id (the
/// part before the secret), or `anonymous` in dev mode.
#[derive(Clone, Debug)]
pub(crate) struct Caller(pub String);

async fn authenticate(State(state): Shared, mut request: Request, next: Next) -> Response {
    let mut caller = Caller("anonymous".into());
    if let Some(token) = &state.token {
        let header = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if header.is_none() {
            return Error::Unauthorized(
                "no credentials: set C4M_ACCESS_TOKEN and C4M_SECRET_KEY".into(),
            )
            .into_response();
        }
        if !c4m_api::bearer_matches(header, token) {
            return Error::Unauthorized("the access token or secret key is wrong".into())
                .into_response();
        }
        // It matched, so it is the configured token: its key id is the caller.
        caller.0 = token
            .split_once('.')
            .map_or(token.as_str(), |(id, _)| id)
            .to_owned();
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// `/version` with every field kubectl's `version.Info` has.
async fn version() -> axum::Json<Value> {
    axum::Json(json!({
        "major": "1",
        "minor": "33",
        "gitVersion": format!("v1.33.0+c4m-{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    }))
}

/// A discovery answer: the aggregated document when the client asks for
/// it (`core` picks `/api` or `/apis`), else the legacy one.
fn discovery_response(headers: &HeaderMap, core: bool, legacy: Value) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if discovery::wants_aggregated(accept) {
        let body = discovery::aggregated(core).to_string();
        return Response::builder()
            .header(header::CONTENT_TYPE, discovery::AGGREGATED_CONTENT_TYPE)
            .body(Body::from(body))
            .unwrap_or_default();
    }
    axum::Json(legacy).into_response()
}

async fn discover_core(headers: HeaderMap) -> Response {
    discovery_response(&headers, true, discovery::api_versions())
}

async fn discover_groups(headers: HeaderMap) -> Response {
    discovery_response(&headers, false, discovery::group_list())
}

/// `/api/{version}`, `/apis/{group}/{version}` (APIResourceLists) and
/// their `/openapi/v3/` documents, or a 404 naming the path asked for.
async fn group_version_document(uri: Uri) -> Result<axum::Json<Value>> {
    let path = uri.path();
    let (openapi, rest) = match path.strip_prefix("/openapi/v3") {
        Some(rest) => (true, rest),
        None => (false, path),
    };
    let segments: Vec<&str> = rest.trim_matches('/').split('/').collect();
    let document = match segments.as_slice() {
        ["api", version] if openapi => discovery::openapi_v3_group_version("", version),
        ["apis", group, version] if openapi => discovery::openapi_v3_group_version(group, version),
        ["api", version] => discovery::resource_list("", version),
        ["apis", group, version] => discovery::resource_list(group, version),
        _ => None,
    };
    document.map(axum::Json).ok_or_else(|| Error::NotFound {
        kind: "path".into(),
        name: path.to_string(),
    })
}

async fn apply(State(state): Shared, body: Bytes) -> Result<axum::Json<c4m_api::ApplyResponse>> {
    let request: ApplyRequest = serde_json::from_slice(&body)
        .map_err(|e| Error::BadRequest(format!("invalid apply request: {e}")))?;
    Ok(axum::Json(state.objects.apply(request).await?))
}

async fn tls_certificate(State(state): Shared) -> Result<Response> {
    let pem = state
        .certificate_pem
        .clone()
        .ok_or_else(|| Error::NotFound {
            kind: "TLS certificate".into(),
            name: "(the API serves only HTTP)".into(),
        })?;
    Ok(([(header::CONTENT_TYPE, "application/x-pem-file")], pem).into_response())
}

async fn scheduler_policy(State(state): Shared) -> Result<axum::Json<Value>> {
    Ok(axum::Json(scheduler_policy::get(&state.objects).await?))
}

async fn set_scheduler_policy(
    State(state): Shared,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<axum::Json<Value>> {
    Ok(axum::Json(
        scheduler_policy::set(&state.objects, &caller.0, &body).await?,
    ))
}

async fn scheduler_policy_history(State(state): Shared) -> Result<axum::Json<Value>> {
    Ok(axum::Json(scheduler_policy::history(&state.objects).await?))
}

async fn service_endpoints(
    State(state): Shared,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Response> {
    match state.registry.service(&ns, &name) {
        Some(endpoints) => Ok(axum::Json(endpoints).into_response()),
        None => Err(Error::NotFound {
            kind: "services".into(),
            name: format!("{ns}/{name}"),
        }),
    }
}

/// The HTTP address of `node`'s agent.
pub(crate) async fn agent_url(state: &ApiState, node: &str) -> Result<String> {
    let node_object = state.objects.get(kind("nodes"), "", node).await?;
    node_object["metadata"]["annotations"][c4m_core::annotations::AGENT_URL]
        .as_str()
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .ok_or_else(|| Error::Unavailable(format!("node {node} has no agent address")))
}

/// `/c4m/v1/nodes/{node}/images` (GET list, DELETE `?ref=`): the node's
/// image store, proxied to its agent.
async fn node_images(
    State(state): Shared,
    Path(node): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    proxy_to_agent(&state, &node, "/v1/images", method, uri, &headers, body).await
}

/// `POST /c4m/v1/nodes/{node}/images/import?name=` (an image archive as
/// the body) and `POST /c4m/v1/nodes/{node}/images/pull` (the node pulls
/// from a registry): proxied to the node's agent.
async fn node_image_action(
    State(state): Shared,
    Path((node, action)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    if action != "import" && action != "pull" {
        return Err(Error::NotFound {
            kind: "image action".into(),
            name: action,
        });
    }
    let path = format!("/v1/images/{action}");
    proxy_to_agent(&state, &node, &path, Method::POST, uri, &headers, body).await
}

/// Forwards a request (query, content type and streamed body) to `path`
/// on `node`'s agent and streams the answer back with its status.
async fn proxy_to_agent(
    state: &ApiState,
    node: &str,
    path: &str,
    method: Method,
    uri: Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    let agent_url = agent_url(state, node).await?;
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let mut request = state
        .http
        .request(method, format!("{agent_url}{path}{query}"))
        .bearer_auth(&state.agent_token);
    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        request = request.header(header::CONTENT_TYPE, content_type.clone());
    }
    let response = request
        .body(reqwest::Body::wrap_stream(body.into_data_stream()))
        .send()
        .await
        .map_err(|e| Error::agent_unreachable(node, e))?;
    let status =
        StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
    let mut builder = Response::builder().status(status);
    if let Some(content_type) = content_type {
        builder = builder.header(header::CONTENT_TYPE, content_type);
    }
    Ok(builder
        .body(Body::from_stream(response.bytes_stream()))
        .unwrap_or_default())
}

/// What a resource path names.
struct Target {
    kind: &'static ResourceKind,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

/// The kind a resource path names, if it names one.
pub(crate) fn kind_of_path(path: &str) -> Option<&'static ResourceKind> {
    parse_target(path).ok().map(|target| target.kind)
}

fn parse_target(path: &str) -> Result<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => {
            return Err(Error::NotFound {
                kind: "path".into(),
                name: path.into(),
            });
        }
    };
    let not_found = || Error::NotFound {
        kind: "path".into(),
        name: path.into(),
    };
    let namespaced = rest.len() >= 3
        && rest[0] == "namespaces"
        && ResourceKind::from_path(group, version, rest[2]).is_some_and(|k| k.namespaced);
    let (namespace, rest) = if namespaced {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    let (plural, name, subresource) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(*name), None),
        [plural, name, sub] => (*plural, Some(*name), Some(*sub)),
        _ => return Err(not_found()),
    };
    let kind = ResourceKind::from_path(group, version, plural).ok_or_else(not_found)?;
    Ok(Target {
        kind,
        namespace,
        name: name.map(str::to_string),
        subresource: subresource.map(str::to_string),
    })
}

async fn resource(
    State(state): Shared,
    method: Method,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let body = read_body(body, MAX_OBJECT_REQUEST_BYTES).await?;
    let target = parse_target(uri.path())?;
    let kind = target.kind;
    let name = target.name.clone();
    let writes = method != Method::GET;
    resource_request(state, method, uri, query, headers, body.clone(), target)
        .await
        .map_err(|error| {
            if !writes {
                return error;
            }
            // An invalid write names the object, as Kubernetes' Status does.
            let name = name.unwrap_or_else(|| {
                serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v["metadata"]["name"].as_str().map(str::to_string))
                    .unwrap_or_default()
            });
            invalid::for_object(error, kind, &name)
        })
}

async fn resource_request(
    state: Arc<ApiState>,
    method: Method,
    uri: Uri,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
    target: Target,
) -> Result<Response> {
    let kind = target.kind;
    let namespace = target.namespace.clone().unwrap_or_default();
    if kind.namespaced && target.name.is_some() && target.namespace.is_none() {
        return Err(Error::BadRequest(format!(
            "{} are namespaced: use /namespaces/NAMESPACE/{}/NAME",
            kind.plural, kind.plural
        )));
    }
    let parse_body = || -> Result<Value> {
        if headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/yaml"))
        {
            return Err(Error::BadRequest("send JSON (application/json)".into()));
        }
        serde_json::from_slice(&body)
            .map_err(|e| Error::BadRequest(format!("the body is not valid JSON: {e}")))
    };
    let table = table_request(&headers, &query)?;
    // A dry run (`kubectl apply --dry-run=server`, `kubectl diff`) takes
    // every step of the write over a store that keeps nothing.
    let options: &[u8] = if method == Method::DELETE { &body } else { b"" };
    let state = if method != Method::GET && crate::dry_run::requested(&query, options)? {
        Arc::new(crate::dry_run::state(&state))
    } else {
        state
    };
    let sub = target.subresource.as_deref();
    if let Some(sub) = sub
        && !kind.has_subresource(sub)
    {
        return Err(Error::NotFound {
            kind: "path".into(),
            name: uri.path().to_string(),
        });
    }
    match (&method, target.name.as_deref(), sub) {
        (&Method::GET, None, None) => {
            if query.get("watch").is_some_and(|w| w == "1" || w == "true") {
                watch(&state, kind, target.namespace.as_deref(), &query, table).await
            } else {
                list(&state, kind, target.namespace.as_deref(), &query, table).await
            }
        }
        (&Method::POST, None, None) => {
            if kind.namespaced && target.namespace.is_none() {
                return Err(Error::BadRequest(format!(
                    "create {} under /namespaces/NAMESPACE/{}",
                    kind.plural, kind.plural
                )));
            }
            let value = parse_body()?;
            let warnings = validate(kind, &value)?;
            let created = state.objects.create(kind, &namespace, value).await?;
            Ok(with_warnings(StatusCode::CREATED, created, warnings))
        }
        (&Method::GET, Some(name), None | Some("status" | "ephemeralcontainers")) => {
            let object = state.objects.get(kind, &namespace, name).await?;
            Ok(match table {
                Some(include) => axum::Json(as_table(kind, &object, include)),
                None => axum::Json(object),
            }
            .into_response())
        }
        (&Method::PUT, Some(name), None | Some("status")) => {
            let value = parse_body()?;
            let part = if sub == Some("status") {
                Part::Status
            } else {
                Part::Main
            };
            let warnings = match part {
                Part::Main => validate_update(kind, &value)?,
                Part::Status => Vec::new(),
            };
            let replaced = if part == Part::Main && kind.kind == "Pod" {
                // Judged against the version written over, in the write's
                // own retry loop: a PUT without resourceVersion must not
                // drop an ephemeral container added since it was read.
                state
                    .objects
                    .modify(kind, &namespace, name, part, |current| {
                        crate::ephemeral::unchanged(kind, current, &value)?;
                        Ok(value.clone())
                    })
                    .await?
            } else {
                state
                    .objects
                    .replace(kind, &namespace, name, value, part)
                    .await?
            };
            Ok(match part {
                Part::Main => with_warnings(StatusCode::OK, replaced, warnings),
                Part::Status => axum::Json(replaced).into_response(),
            })
        }
        (&Method::PATCH, Some(name), None) if is_apply_patch(&headers) => {
            let apply = ServerSideApply {
                body: &body,
                manager: query.get("fieldManager").map_or("", String::as_str),
                force: query.get("force").is_some_and(|f| f == "true"),
                api_version: kind.api_version(),
            };
            let (object, created, warnings) =
                server_side_apply(&state, kind, &namespace, name, &apply).await?;
            let code = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(with_warnings(code, object, warnings))
        }
        (&Method::PATCH, Some(name), None | Some("status")) => {
            let patch_type = patch::PatchType::from_content_type(content_type(&headers))?;
            let part = if sub == Some("status") {
                Part::Status
            } else {
                Part::Main
            };
            // The warnings of the version that was written (the last try).
            let warnings = Mutex::new(Vec::new());
            let patched = state
                .objects
                .modify(kind, &namespace, name, part, |current| {
                    let patched = patch::apply(patch_type, current, &body)?;
                    if part == Part::Main && kind.kind == "Pod" {
                        crate::ephemeral::unchanged(kind, current, &patched)?;
                    }
                    if part == Part::Main {
                        *warnings.lock().unwrap_or_else(PoisonError::into_inner) =
                            validate_update(kind, &patched)?;
                    }
                    Ok(patched)
                })
                .await?;
            let warnings = warnings
                .into_inner()
                .unwrap_or_else(PoisonError::into_inner);
            Ok(match part {
                Part::Main => with_warnings(StatusCode::OK, patched, warnings),
                Part::Status => axum::Json(patched).into_response(),
            })
        }
        (&Method::PUT | &Method::PATCH, Some(name), Some("ephemeralcontainers")) => {
            let patch_type = patch_type_of(&method, &headers)?;
            let updated = state
                .objects
                .modify(kind, &namespace, name, Part::Main, |current| {
                    let requested = sent(patch_type, current, &body, parse_body)?;
                    crate::ephemeral::with_ephemeral_containers(kind, current, &requested)
                })
                .await?;
            Ok(axum::Json(updated).into_response())
        }
        (&Method::GET, Some(name), Some("scale")) => {
            let object = state.objects.get(kind, &namespace, name).await?;
            Ok(axum::Json(scale_of(&object)).into_response())
        }
        (&Method::PUT | &Method::PATCH, Some(name), Some("scale")) => {
            let patch_type = patch_type_of(&method, &headers)?;
            let scaled = state
                .objects
                .modify(kind, &namespace, name, Part::Main, |current| {
                    let scale = sent(patch_type, &scale_of(current), &body, parse_body)?;
                    with_replicas(kind, current, &scale)
                })
                .await?;
            Ok(axum::Json(scale_of(&scaled)).into_response())
        }
        (&Method::DELETE, Some(name), None) => {
            let options = DeleteOptions::from_request(&query, &body)?;
            let deleted = state
                .objects
                .delete_with(kind, &namespace, name, &options)
                .await?;
            Ok(axum::Json(deleted.object).into_response())
        }
        (&Method::PUT, Some(name), Some("finalize")) if kind.kind == "Namespace" => {
            let namespace: Value = parse_body()?;
            Ok(axum::Json(finalize_namespace(&state, name, &namespace).await?).into_response())
        }
        (_, Some(_), Some(sub)) if sub != "status" => Err(Error::NotFound {
            kind: "path".into(),
            name: uri.path().to_string(),
        }),
        _ => Err(Error::MethodNotAllowed(format!(
            "{method} is not supported on {}",
            uri.path()
        ))),
    }
}

/// The patch type of a PATCH of a subresource; `None` for a PUT.
fn patch_type_of(method: &Method, headers: &HeaderMap) -> Result<Option<patch::PatchType>> {
    match *method {
        Method::PATCH => Ok(Some(patch::PatchType::from_content_type(content_type(
            headers,
        ))?)),
        _ => Ok(None),
    }
}

/// The subresource a PUT or PATCH asks for: the body as it is (read by
/// `parse_body`), or the patch applied to the subresource as it is
/// (`current`).
fn sent(
    patch_type: Option<patch::PatchType>,
    current: &Value,
    body: &[u8],
    parse_body: impl Fn() -> Result<Value>,
) -> Result<Value> {
    match patch_type {
        Some(patch_type) => patch::apply(patch_type, current, body),
        None => parse_body(),
    }
}

/// A written object as the answer, with a `Warning` header (which kubectl
/// prints as `Warning: ...`) for each of its fields c4m does not honour.
fn with_warnings(code: StatusCode, object: Value, warnings: Vec<String>) -> Response {
    let mut headers = Vec::with_capacity(warnings.len());
    for warning in warnings {
        // Each warning names the object (`Deployment web: FIELD ...`).
        let text = warning.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(value) = header::HeaderValue::from_str(&format!("299 - \"{text}\"")) {
            headers.push(value);
        }
    }
    let mut response = (code, axum::Json(object)).into_response();
    for value in headers {
        response.headers_mut().append(header::WARNING, value);
    }
    response
}

/// Whether a PATCH is a server-side apply.
fn is_apply_patch(headers: &HeaderMap) -> bool {
    patch::PatchType::from_content_type(content_type(headers))
        .is_ok_and(|t| t == patch::PatchType::Apply)
}

/// Server-side apply of the object `name`: created when absent (its
/// namespace must exist), else changed pinned to the revision read.
/// Returns the object, whether it was created, and its warnings.
async fn server_side_apply(
    state: &ApiState,
    kind: &'static ResourceKind,
    namespace: &str,
    name: &str,
    apply: &ServerSideApply<'_>,
) -> Result<(Value, bool, Vec<String>)> {
    let warnings = Mutex::new(Vec::new());
    let checked = |mut object: Value| -> Result<Value> {
        if object["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n != name)
        {
            return Err(Error::BadRequest(format!(
                "metadata.name: the name of the object ({}) does not match the name on the URL ({name})",
                object["metadata"]["name"]
            )));
        }
        crate::json::set_path(&mut object, &["metadata", "name"], json!(name))?;
        *warnings.lock().unwrap_or_else(PoisonError::into_inner) = validate_update(kind, &object)?;
        Ok(object)
    };
    let (object, created) = match state
        .objects
        .modify(kind, namespace, name, Part::Main, |current| {
            checked(apply.apply(Some(current))?)
        })
        .await
    {
        Err(Error::NotFound { .. }) => {
            let object = checked(apply.apply(None)?)?;
            (state.objects.create(kind, namespace, object).await?, true)
        }
        result => (result?, false),
    };
    let warnings = warnings
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    Ok((object, created, warnings))
}

/// A request's `Content-Type`, or `""`.
fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// A workload's `scale` subresource (`autoscaling/v1` Scale).
fn scale_of(object: &Value) -> Value {
    let meta = &object["metadata"];
    let selector: Vec<String> = object["spec"]["selector"]["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(key, value)| format!("{key}={}", value.as_str().unwrap_or_default()))
        .collect();
    json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
            "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": object["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {
            "replicas": object["status"]["replicas"].as_i64().unwrap_or(0),
            "selector": selector.join(","),
        },
    })
}

/// `current` with the replicas a Scale asks for (and the resourceVersion
/// it names, so a stale Scale is a Conflict).
fn with_replicas(kind: &ResourceKind, current: &Value, scale: &Value) -> Result<Value> {
    let replicas = scale["spec"]["replicas"]
        .as_i64()
        .filter(|r| *r >= 0)
        .ok_or_else(|| {
            Error::Invalid(format!(
                "spec.replicas: Invalid value: {}: must be a non-negative integer",
                scale["spec"]["replicas"]
            ))
        })?;
    let mut scaled = current.clone();
    crate::json::set_path(&mut scaled, &["spec", "replicas"], json!(replicas))?;
    if let Some(version) = scale["metadata"]["resourceVersion"]
        .as_str()
        .filter(|v| !v.is_empty())
    {
        crate::json::set_path(
            &mut scaled,
            &["metadata", "resourceVersion"],
            json!(version),
        )?;
    }
    validate_update(kind, &scaled)?;
    Ok(scaled)
}

/// Validates the new version of an object (PUT, PATCH, scale) as
/// [`validate`] does, without its status: an update leaves the status as
/// it is, and the manifest rules do not describe one.
fn validate_update(kind: &ResourceKind, value: &Value) -> Result<Vec<String>> {
    let mut value = value.clone();
    if let Some(object) = value.as_object_mut() {
        object.remove("status");
    }
    // A pod's ephemeral containers were judged when added (and may not
    // change here: `ephemeral::unchanged`).
    if kind.kind == "Pod"
        && let Some(spec) = value.get_mut("spec").and_then(Value::as_object_mut)
    {
        spec.remove("ephemeralContainers");
    }
    validate(kind, &value)
}

/// Validates an object sent to the API with the same rules as `c4m apply`;
/// its warnings (fields accepted but not honoured).
fn validate(kind: &ResourceKind, value: &Value) -> Result<Vec<String>> {
    let mut value = value.clone();
    if let Some(object) = value.as_object_mut() {
        object
            .entry("apiVersion")
            .or_insert_with(|| json!(kind.api_version()));
        object.entry("kind").or_insert_with(|| json!(kind.kind));
    }
    let document = c4m_core::Document {
        source: "request".into(),
        index: 1,
        value,
    };
    let name = document.value["metadata"]["name"]
        .as_str()
        .unwrap_or_default();
    let warnings = c4m_core::validate(&document)
        .map(|validated| validated.warnings)
        .map_err(|e| {
            invalid::invalid_field(kind, name, &e.path, &e.message, Some(&document.value))
        })?;
    // Routes are checked here: c4m-core has no route model.
    crate::controllers::edge::check(&document.value).map_err(|(field, message)| {
        invalid::invalid_field(kind, name, &field, &message, Some(&document.value))
    })?;
    // The schedule is parsed here: c4m-core has no cron parser.
    if kind.kind == "CronJob" {
        crate::controllers::cronjobs::check(&document.value).map_err(|e| {
            invalid::invalid_field(kind, name, e.field, &e.message, Some(&document.value))
        })?;
    }
    Ok(warnings)
}

/// `PUT namespaces/NAME/finalize`: replaces a namespace's
/// `spec.finalizers` (the only way to change them); a namespace being
/// deleted that is left with none goes.
async fn finalize_namespace(state: &ApiState, name: &str, body: &Value) -> Result<Value> {
    let namespaces = crate::objects::kind("namespaces");
    let finalizers = match &body["spec"]["finalizers"] {
        Value::Null => json!([]),
        Value::Array(list) if list.iter().all(Value::is_string) => json!(list),
        other => {
            return Err(Error::Invalid(format!(
                "spec.finalizers: Invalid value: {other}: must be a list of strings"
            )));
        }
    };
    state
        .objects
        .update_with(namespaces, "", name, |current| {
            current["spec"]["finalizers"] != finalizers
                && crate::json::set_path(current, &["spec", "finalizers"], finalizers.clone())
                    .is_ok()
        })
        .await?;
    let current = state.objects.get(namespaces, "", name).await?;
    if !crate::deletion::is_finished(&current) {
        return Ok(current);
    }
    match state
        .objects
        .delete_with(namespaces, "", name, &DeleteOptions::default())
        .await
    {
        Ok(deleted) => Ok(deleted.object),
        Err(Error::NotFound { .. }) => Ok(current),
        Err(e) => Err(e),
    }
}

/// Whether the client asks for a `meta.k8s.io` Table (kubectl's `get`
/// does, in its `Accept` header), and what its rows should carry.
fn table_request(
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<Option<IncludeObject>> {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let wants_table = accept.split(',').any(|media| {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        params.contains(&"as=Table") && params.contains(&"g=meta.k8s.io")
    });
    if !wants_table {
        return Ok(None);
    }
    match query.get("includeObject").map(String::as_str) {
        None | Some("Metadata") => Ok(Some(IncludeObject::Metadata)),
        Some("Object") => Ok(Some(IncludeObject::Object)),
        Some("None") => Ok(Some(IncludeObject::None)),
        Some(other) => Err(Error::BadRequest(format!(
            "includeObject: unsupported value {other:?} (None, Metadata or Object)"
        ))),
    }
}

/// One object as a `meta.k8s.io/v1` Table with the kind's columns.
fn as_table(kind: &ResourceKind, object: &Value, include: IncludeObject) -> Value {
    Table::new(
        kind,
        std::slice::from_ref(object),
        ListMeta::default(),
        include,
    )
    .to_value()
}

fn selectors(query: &HashMap<String, String>) -> Result<(Selector, Selector)> {
    let labels = Selector::parse(
        query
            .get("labelSelector")
            .map(String::as_str)
            .unwrap_or_default(),
    )?;
    let fields = Selector::parse(
        query
            .get("fieldSelector")
            .map(String::as_str)
            .unwrap_or_default(),
    )?;
    Ok((labels, fields))
}

fn selected(object: &Value, labels: &Selector, fields: &Selector) -> bool {
    labels.matches(&crate::pods::labels(object)) && fields.matches_fields(object)
}

async fn list(
    state: &ApiState,
    kind: &ResourceKind,
    namespace: Option<&str>,
    query: &HashMap<String, String>,
    table: Option<IncludeObject>,
) -> Result<Response> {
    let (labels, fields) = selectors(query)?;
    let paging = PageRequest::from_query(query)?;
    // The list a continue token must belong to.
    let scope = format!(
        "{}/{}?{}&{}",
        kind.plural,
        namespace.unwrap_or(""),
        query.get("labelSelector").map_or("", String::as_str),
        query.get("fieldSelector").map_or("", String::as_str)
    );
    let page = match &paging.continue_token {
        Some(token) => state.pages.resume(&scope, token, paging.limit)?,
        None => {
            let (items, revision) = state.objects.list(kind, namespace).await?;
            let items: Vec<Value> = if labels.is_empty() && fields.is_empty() {
                items
            } else {
                items
                    .into_iter()
                    .filter(|o| selected(o, &labels, &fields))
                    .collect()
            };
            state.pages.first(&scope, items, revision, paging.limit)
        }
    };
    // Written from the page's items as they are kept, without a copy.
    let body = match table {
        Some(include) => {
            serde_json::to_vec(&Table::new(kind, page.items(), page.list_meta(), include))
        }
        None => serde_json::to_vec(&List::new(kind, page.items(), page.list_meta())),
    };
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.unwrap_or_default(),
    )
        .into_response())
}

async fn watch(
    state: &ApiState,
    kind: &'static ResourceKind,
    namespace: Option<&str>,
    query: &HashMap<String, String>,
    table: Option<IncludeObject>,
) -> Result<Response> {
    let (labels, fields) = selectors(query)?;
    let options = WatchOptions::from_query(query)?;
    let requested = query
        .get("resourceVersion")
        .map(String::as_str)
        .unwrap_or("");
    let (initial, from) = match requested {
        // A WatchList starts with the objects as they are now (not older
        // than any resourceVersion it names), then a bookmark that says so.
        _ if options.send_initial_events || matches!(requested, "" | "0") => {
            let (items, revision) = state.objects.list(kind, namespace).await?;
            let mut events: Vec<Value> = items
                .into_iter()
                .filter(|o| selected(o, &labels, &fields))
                .map(|o| json!({"type": "ADDED", "object": o}))
                .collect();
            if options.send_initial_events {
                events.push(bookmarks::bookmark(kind, revision, true));
            }
            (events, revision)
        }
        rv => (
            Vec::new(),
            rv.parse()
                .map_err(|_| Error::BadRequest(format!("resourceVersion: invalid value {rv:?}")))?,
        ),
    };
    let events = state
        .objects
        .store()
        .watch(&prefix(kind, namespace), from)
        .await
        .map_err(Error::from)?;
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map_or(Duration::from_secs(30 * 60), Duration::from_secs);
    let live = events.filter_map(move |event| {
        let (labels, fields) = (labels.clone(), fields.clone());
        async move {
            let event = match event {
                Ok(event) => event,
                Err(e) => {
                    let error = Error::from(e);
                    let (code, reason) = error.http_status();
                    return Some(json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": error.to_string(), "reason": reason, "code": code}}));
                }
            };
            let (event_type, object) = match event.kind {
                EventKind::Put if event.kv.create_revision == event.kv.mod_revision => ("ADDED", decode(&event.kv).ok()?),
                EventKind::Put => ("MODIFIED", decode(&event.kv).ok()?),
                EventKind::Delete => {
                    let mut object = decode(event.prev.as_ref()?).ok()?;
                    crate::json::set_path(&mut object, &["metadata", "resourceVersion"], json!(event.kv.mod_revision.to_string())).ok()?;
                    ("DELETED", object)
                }
            };
            selected(&object, &labels, &fields).then(|| json!({"type": event_type, "object": object}))
        }
    });
    let live = if options.allow_bookmarks {
        bookmarks::with_bookmarks(live, kind, from, options.bookmark_interval).boxed()
    } else {
        live.boxed()
    };
    let stream = futures::stream::iter(initial)
        .chain(live)
        .map(move |mut event| {
            // A Table watch carries each object as a one-row Table.
            if let Some(include) = table
                && event["type"] != "ERROR"
                && event["type"] != "BOOKMARK"
            {
                let object = event["object"].take();
                event["object"] = as_table(kind, &object, include);
            }
            Ok::<_, std::io::Error>(Bytes::from(format!("{event}\n")))
        })
        .take_until(tokio::time::sleep(timeout))
        .take_until(state.shutdown.clone().cancelled_owned());
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_for_kubectl() {
        let mut headers = HeaderMap::new();
        let mut query = HashMap::new();
        assert_eq!(table_request(&headers, &query).unwrap(), None);
        headers.insert(
            header::ACCEPT,
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            table_request(&headers, &query).unwrap(),
            Some(IncludeObject::Metadata)
        );
        query.insert("includeObject".to_string(), "Object".to_string());
        assert_eq!(
            table_request(&headers, &query).unwrap(),
            Some(IncludeObject::Object)
        );
        query.insert("includeObject".to_string(), "All".to_string());
        assert!(table_request(&headers, &query).is_err());

        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": 2}, "status": {"readyReplicas": 1}});
        let kind = ResourceKind::from_name("deployments").unwrap();
        let table = as_table(kind, &deployment, IncludeObject::Metadata);
        assert_eq!(
            (&table["kind"], &table["apiVersion"]),
            (&json!("Table"), &json!("meta.k8s.io/v1"))
        );
        assert_eq!(table["rows"][0]["cells"][1], "1/2");
        assert_eq!(table["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        let table = as_table(kind, &deployment, IncludeObject::Object);
        assert_eq!(table["rows"][0]["object"], deployment);
        let table = as_table(kind, &deployment, IncludeObject::None);
        assert!(table["rows"][0].get("object").is_none());
    }

    /// A body without a declared length is read only up to the limit,
    /// however much more the client would send.
    #[tokio::test]
    async fn a_body_is_read_up_to_its_limit() {
        let endless = futures::stream::repeat_with(|| {
            Ok::<_, std::io::Error>(Bytes::from_static(&[b'x'; 4096]))
        });
        let error = read_body(Body::from_stream(endless), 1 << 20)
            .await
            .unwrap_err();
        assert!(matches!(error, Error::TooLarge(_)), "{error}");
        assert_eq!(error.http_status(), (413, "RequestEntityTooLarge"));
        let small = read_body(Body::from("{}"), 1 << 20).await.unwrap();
        assert_eq!(&small[..], b"{}");
        let known = Body::from(vec![b'x'; 8 << 20]);
        assert!(matches!(
            read_body(known, 1 << 20).await,
            Err(Error::TooLarge(_))
        ));
    }

    #[test]
    fn paths_resolve() {
        let t = parse_target("/api/v1/namespaces/default/pods/web-1/status").unwrap();
        assert_eq!(
            (
                t.kind.plural,
                t.namespace.as_deref(),
                t.name.as_deref(),
                t.subresource.as_deref()
            ),
            ("pods", Some("default"), Some("web-1"), Some("status"))
        );
        let t = parse_target("/api/v1/namespaces/default").unwrap();
        assert_eq!(
            (t.kind.plural, t.name.as_deref()),
            ("namespaces", Some("default"))
        );
        let t = parse_target("/apis/apps/v1/deployments").unwrap();
        assert_eq!((t.kind.plural, t.namespace), ("deployments", None));
        let t = parse_target("/apis/c4m.io/v1/namespaces/x/microservices").unwrap();
        assert_eq!(
            (t.kind.plural, t.namespace.as_deref()),
            ("microservices", Some("x"))
        );
        assert!(parse_target("/api/v1/widgets").is_err());
        assert!(parse_target("/apis/apps/v1/pods").is_err());
    }
}
