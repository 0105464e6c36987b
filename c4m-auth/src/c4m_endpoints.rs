//! c4m's own HTTP endpoints (outside Kubernetes' `/api` and `/apis`) as
//! resources of API group [`C4M_API_GROUP`], so RBAC rules grant them like
//! any other resource. The paths are those of `c4m-control`'s router.

/// The API group of c4m's own kinds and endpoints.
pub const C4M_API_GROUP: &str = "c4m.io";

/// One of c4m's own endpoints and the resource request it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct C4mEndpoint {
    /// The HTTP method (`HEAD` is read as `GET`).
    pub method: &'static str,
    /// The path; the segments `{namespace}` and `{name}` match any segment
    /// and become the request's namespace and name.
    pub path: &'static str,
    /// The verb rules must grant.
    pub verb: &'static str,
    /// The resource rules must name.
    pub resource: &'static str,
    /// Its subresource, or empty.
    pub subresource: &'static str,
}

const fn endpoint(
    method: &'static str,
    path: &'static str,
    verb: &'static str,
    resource: &'static str,
    subresource: &'static str,
) -> C4mEndpoint {
    C4mEndpoint {
        method,
        path,
        verb,
        resource,
        subresource,
    }
}

/// Every c4m endpoint that is not a Kubernetes path. The health, version
/// and discovery paths are non-resource requests, as in Kubernetes.
pub static C4M_ENDPOINTS: &[C4mEndpoint] = &[
    // A batch of manifests: reaching the endpoint is all this grants; the
    // API then authorizes each object as the create or patch it is.
    endpoint("POST", "/c4m/v1/apply", "create", "applies", ""),
    // The service registry: a Service's ready endpoints.
    endpoint(
        "GET",
        "/c4m/v1/namespaces/{namespace}/services/{name}/endpoints",
        "get",
        "services",
        "endpoints",
    ),
    // A node's image store, proxied to its agent.
    endpoint(
        "GET",
        "/c4m/v1/nodes/{name}/images",
        "get",
        "nodes",
        "images",
    ),
    endpoint(
        "DELETE",
        "/c4m/v1/nodes/{name}/images",
        "delete",
        "nodes",
        "images",
    ),
    endpoint(
        "POST",
        "/c4m/v1/nodes/{name}/images/import",
        "create",
        "nodes",
        "images",
    ),
    endpoint(
        "POST",
        "/c4m/v1/nodes/{name}/images/pull",
        "create",
        "nodes",
        "images",
    ),
    // The scheduler policy, a cluster-wide singleton, and its history.
    endpoint(
        "GET",
        "/c4m/v1/scheduler/policy",
        "get",
        "schedulerpolicy",
        "",
    ),
    endpoint(
        "PUT",
        "/c4m/v1/scheduler/policy",
        "update",
        "schedulerpolicy",
        "",
    ),
    endpoint(
        "GET",
        "/c4m/v1/scheduler/policy/history",
        "get",
        "schedulerpolicy",
        "history",
    ),
    // The API's serving certificate (public: every TLS handshake shows it).
    endpoint(
        "GET",
        "/c4m/v1/tls/certificate",
        "get",
        "tlscertificate",
        "",
    ),
];
