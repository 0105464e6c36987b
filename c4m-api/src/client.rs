//! A client for the control plane's HTTP/JSON API.

use bytes::Bytes;
use c4m_core::ResourceKind;
use futures::{Stream, StreamExt, TryStreamExt};
use reqwest::{Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{ApplyRequest, ApplyResponse, Error, Result, ServiceEndpoints, Status};

/// The credentials the API accepts: an access token and its secret key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// Access token (`C4M_ACCESS_TOKEN`).
    pub access_token: String,
    /// Secret key (`C4M_SECRET_KEY`); may be empty.
    pub secret_key: String,
}

impl Credentials {
    /// The bearer token sent in `Authorization`.
    pub fn bearer(&self) -> String {
        if self.secret_key.is_empty() {
            self.access_token.clone()
        } else {
            format!("{}.{}", self.access_token, self.secret_key)
        }
    }
}

/// Whether an `Authorization` header value presents `token` as a bearer
/// token. Compares in constant time so a wrong token leaks nothing through
/// timing.
pub fn bearer_matches(authorization: Option<&str>, token: &str) -> bool {
    let Some(presented) = authorization.and_then(|v| v.strip_prefix("Bearer ")) else {
        return false;
    };
    presented.len() == token.len()
        && presented
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// URL path of the scheduler policy (`GET` it, `PUT` a `SchedulerPolicy`
/// object whose `spec` is the policy).
pub const SCHEDULER_POLICY_PATH: &str = "/c4m/v1/scheduler/policy";

/// URL path of the API's TLS certificate (PEM), for kubeconfigs to trust.
pub const TLS_CERTIFICATE_PATH: &str = "/c4m/v1/tls/certificate";

/// URL path of the scheduler policy's change history.
pub const SCHEDULER_POLICY_HISTORY_PATH: &str = "/c4m/v1/scheduler/policy/history";

/// URL path of a kind's collection or of one object of it.
pub fn object_path(kind: &ResourceKind, namespace: Option<&str>, name: Option<&str>) -> String {
    let mut path = if kind.group.is_empty() {
        format!("/api/{}", kind.version)
    } else {
        format!("/apis/{}/{}", kind.group, kind.version)
    };
    if let (true, Some(ns)) = (kind.namespaced, namespace) {
        path.push_str("/namespaces/");
        path.push_str(ns);
    }
    path.push('/');
    path.push_str(kind.plural);
    if let Some(name) = name {
        path.push('/');
        path.push_str(name);
    }
    path
}

/// What a log request asks for (Kubernetes' `pods/log` parameters).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// Keep streaming new output.
    pub follow: bool,
    /// Only the last N lines.
    pub tail_lines: Option<usize>,
    /// Start each line with the time it was written.
    pub timestamps: bool,
    /// Only lines written in the last N seconds.
    pub since_seconds: Option<u64>,
}

/// The largest `sinceSeconds`: the longest whole-seconds duration that
/// fits a signed 64-bit count of nanoseconds, as Kubernetes holds one
/// (about 292 years).
const MAX_SINCE_SECONDS: u64 = i64::MAX as u64 / 1_000_000_000;

/// The time a log request's `sinceSeconds` names: that many seconds before
/// `now`. Kubernetes takes an integer of at least 1 that its duration
/// type can hold; anything else (`0`, `9223372036854775807`) is refused
/// here with the reason, so the control plane and the agent answer it
/// alike (400).
pub fn log_since_seconds(
    value: &str,
    now: std::time::SystemTime,
) -> std::result::Result<std::time::SystemTime, String> {
    value
        .parse::<u64>()
        .ok()
        .filter(|seconds| (1..=MAX_SINCE_SECONDS).contains(seconds))
        .and_then(|seconds| now.checked_sub(std::time::Duration::from_secs(seconds)))
        .ok_or_else(|| {
            format!("sinceSeconds must be an integer from 1 to {MAX_SINCE_SECONDS}, not {value:?}")
        })
}

/// A client for one control plane.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoint: String,
    bearer: Option<String>,
}

impl Client {
    /// A client for the control plane at `endpoint` (`http://HOST:PORT`).
    pub fn new(endpoint: &str, credentials: Option<&Credentials>) -> Result<Self> {
        let endpoint = endpoint.trim_end_matches('/').to_string();
        if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
            return Err(Error::Endpoint(endpoint));
        }
        Ok(Client {
            http: reqwest::Client::new(),
            endpoint,
            bearer: credentials.map(Credentials::bearer),
        })
    }

    /// Opens a WebSocket stream (exec, port-forward) on `path_and_query`
    /// offering `protocols`; returns it with the protocol chosen.
    pub async fn stream(
        &self,
        path_and_query: &str,
        protocols: &[&str],
    ) -> Result<(crate::stream::Connection, String)> {
        crate::stream::connect(
            &format!("{}{path_and_query}", self.endpoint),
            self.bearer.as_deref(),
            protocols,
        )
        .await
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self
            .http
            .request(method, format!("{}{}", self.endpoint, path));
        match &self.bearer {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn send(&self, request: RequestBuilder) -> Result<Response> {
        let response = request.send().await.map_err(|source| Error::Transport {
            endpoint: self.endpoint.clone(),
            source,
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let code = response.status().as_u16();
        let body = response.bytes().await.unwrap_or_default();
        Err(match serde_json::from_slice::<Status>(&body) {
            Ok(status) if !status.message.is_empty() => Error::Api {
                code,
                reason: status.reason,
                message: status.message,
            },
            _ => Error::Api {
                code,
                reason: String::new(),
                message: format!("HTTP {code}: {}", String::from_utf8_lossy(&body).trim()),
            },
        })
    }

    async fn json<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T> {
        let response = self.send(request).await?;
        let body = response.bytes().await.map_err(|source| Error::Transport {
            endpoint: self.endpoint.clone(),
            source,
        })?;
        serde_json::from_slice(&body).map_err(Error::Decode)
    }

    /// `GET` of any API path, decoded as JSON.
    pub async fn get_path<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.json(self.request(Method::GET, path)).await
    }

    /// `GET` of any API path asking for `accept` (a Table is
    /// `application/json;as=Table;v=v1;g=meta.k8s.io`), decoded as JSON.
    pub async fn get_path_as<T: DeserializeOwned>(&self, path: &str, accept: &str) -> Result<T> {
        let request = self
            .request(Method::GET, path)
            .header(reqwest::header::ACCEPT, accept);
        self.json(request).await
    }

    /// Lists objects of a kind (all namespaces when `namespace` is None),
    /// optionally filtered by a label selector. Returns the Kubernetes List.
    pub async fn list(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        label_selector: Option<&str>,
    ) -> Result<Value> {
        let mut request = self.request(Method::GET, &object_path(kind, namespace, None));
        if let Some(selector) = label_selector {
            request = request.query(&[("labelSelector", selector)]);
        }
        self.json(request).await
    }

    /// [`Client::list`] over Kubernetes' protobuf: the same List, asked for
    /// and answered as `application/vnd.kubernetes.protobuf` (built-in
    /// kinds only; others are answered with 406).
    #[cfg(feature = "protobuf")]
    pub async fn list_protobuf(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        label_selector: Option<&str>,
    ) -> Result<Value> {
        let mut request = self
            .request(Method::GET, &object_path(kind, namespace, None))
            .header(reqwest::header::ACCEPT, crate::protobuf::MEDIA_TYPE);
        if let Some(selector) = label_selector {
            request = request.query(&[("labelSelector", selector)]);
        }
        let response = self.send(request).await?;
        let body = response.bytes().await.map_err(|source| Error::Transport {
            endpoint: self.endpoint.clone(),
            source,
        })?;
        crate::protobuf::decode_object(&body).map_err(Error::Protobuf)
    }

    /// Reads one object.
    pub async fn get(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value> {
        self.get_path(&object_path(kind, namespace, Some(name)))
            .await
    }

    /// Creates an object.
    pub async fn create(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        object: &Value,
    ) -> Result<Value> {
        let request = self
            .request(Method::POST, &object_path(kind, namespace, None))
            .json(object);
        self.json(request).await
    }

    /// Replaces an object (compare-and-swap when it carries a resourceVersion).
    pub async fn replace(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        name: &str,
        object: &Value,
    ) -> Result<Value> {
        let request = self
            .request(Method::PUT, &object_path(kind, namespace, Some(name)))
            .json(object);
        self.json(request).await
    }

    /// Deletes an object; objects it owns are deleted after it.
    pub async fn delete(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value> {
        self.json(self.request(Method::DELETE, &object_path(kind, namespace, Some(name))))
            .await
    }

    /// Creates or updates many objects in one all-or-nothing write.
    pub async fn apply(&self, request: &ApplyRequest) -> Result<ApplyResponse> {
        self.json(self.request(Method::POST, "/c4m/v1/apply").json(request))
            .await
    }

    /// The registry's ready endpoints of a service.
    pub async fn endpoints(&self, namespace: &str, service: &str) -> Result<ServiceEndpoints> {
        self.get_path(&format!(
            "/c4m/v1/namespaces/{namespace}/services/{service}/endpoints"
        ))
        .await
    }

    /// The scheduler policy object (`SchedulerPolicy`, the policy in its
    /// `spec`; resourceVersion `0` while none was set).
    pub async fn scheduler_policy(&self) -> Result<Value> {
        self.get_path(SCHEDULER_POLICY_PATH).await
    }

    /// Replaces the scheduler policy with `object`'s `spec`; when `object`
    /// carries a resourceVersion, only if the policy is still at it.
    pub async fn set_scheduler_policy(&self, object: &Value) -> Result<Value> {
        self.json(
            self.request(Method::PUT, SCHEDULER_POLICY_PATH)
                .json(object),
        )
        .await
    }

    /// Every accepted change of the scheduler policy, oldest first (a
    /// `SchedulerPolicyChangeList`: `user`, `time`, `revision`, `oldPolicy`,
    /// `newPolicy`).
    pub async fn scheduler_policy_history(&self) -> Result<Value> {
        self.get_path(SCHEDULER_POLICY_HISTORY_PATH).await
    }

    /// The API's TLS certificate (PEM); None when it serves only HTTP.
    pub async fn tls_certificate(&self) -> Result<Option<String>> {
        let response = match self
            .send(self.request(Method::GET, TLS_CERTIFICATE_PATH))
            .await
        {
            Ok(response) => response,
            Err(e) if e.code() == Some(404) => return Ok(None),
            Err(e) => return Err(e),
        };
        let text = response.text().await.map_err(|source| Error::Transport {
            endpoint: self.endpoint.clone(),
            source,
        })?;
        Ok(Some(text))
    }

    /// Current CPU and memory usage of an instance (a `PodMetrics` object).
    pub async fn instance_metrics(&self, namespace: &str, name: &str) -> Result<Value> {
        self.get_path(&format!(
            "/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods/{name}"
        ))
        .await
    }

    /// An instance's output, streamed; with `follow` the stream stays open
    /// while the instance runs.
    pub async fn logs(
        &self,
        namespace: &str,
        name: &str,
        query: &LogQuery,
    ) -> Result<impl Stream<Item = Result<Bytes>> + use<>> {
        let mut request = self
            .request(
                Method::GET,
                &format!("/api/v1/namespaces/{namespace}/pods/{name}/log"),
            )
            .query(&[("follow", query.follow), ("timestamps", query.timestamps)]);
        if let Some(tail) = query.tail_lines {
            request = request.query(&[("tailLines", tail)]);
        }
        if let Some(since) = query.since_seconds {
            request = request.query(&[("sinceSeconds", since)]);
        }
        let endpoint = self.endpoint.clone();
        let response = self.send(request).await?;
        Ok(response
            .bytes_stream()
            .map_err(move |source| Error::Transport {
                endpoint: endpoint.clone(),
                source,
            }))
    }

    /// The images in `node`'s image store.
    pub async fn node_images(&self, node: &str) -> Result<Vec<c4m_core::Image>> {
        self.get_path(&format!("/c4m/v1/nodes/{node}/images")).await
    }

    /// Imports an image archive (OCI layout tar or docker archive), streamed
    /// from `body`, into `node`'s image store; a bare tag in the archive gets
    /// the repository `name`.
    pub async fn import_image(
        &self,
        node: &str,
        name: &str,
        body: reqwest::Body,
    ) -> Result<Vec<c4m_core::Image>> {
        let path = format!("/c4m/v1/nodes/{node}/images/import");
        self.json(
            self.request(Method::POST, &path)
                .query(&[("name", name)])
                .body(body),
        )
        .await
    }

    /// Has `node`'s agent pull `reference` from its registry (with
    /// `credentials` as user name and password, if given).
    pub async fn pull_image(
        &self,
        node: &str,
        reference: &str,
        credentials: Option<(&str, &str)>,
    ) -> Result<c4m_core::Image> {
        let path = format!("/c4m/v1/nodes/{node}/images/pull");
        let mut body = serde_json::json!({"reference": reference});
        if let Some((username, password)) = credentials {
            body["username"] = username.into();
            body["password"] = password.into();
        }
        self.json(self.request(Method::POST, &path).json(&body))
            .await
    }

    /// Removes `reference` from `node`'s image store (untags a name; a
    /// digest removes the image) and collects unused blobs and layers.
    pub async fn remove_image(&self, node: &str, reference: &str) -> Result<c4m_core::Image> {
        let path = format!("/c4m/v1/nodes/{node}/images");
        self.json(
            self.request(Method::DELETE, &path)
                .query(&[("ref", reference)]),
        )
        .await
    }

    /// Streams watch events of a kind after `resource_version`.
    pub async fn watch(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        resource_version: &str,
    ) -> Result<impl Stream<Item = Result<crate::WatchEvent>> + use<>> {
        let request = self
            .request(Method::GET, &object_path(kind, namespace, None))
            .query(&[("watch", "1"), ("resourceVersion", resource_version)]);
        let response = self.send(request).await?;
        let endpoint = self.endpoint.clone();
        let lines = response
            .bytes_stream()
            .map_err(move |source| Error::Transport {
                endpoint: endpoint.clone(),
                source,
            });
        Ok(split_lines(lines)
            .map(|line| line.and_then(|line| serde_json::from_slice(&line).map_err(Error::Decode))))
    }
}

/// Re-chunks a byte stream into newline-terminated lines.
fn split_lines(
    input: impl Stream<Item = Result<Bytes>> + Send + 'static,
) -> impl Stream<Item = Result<Vec<u8>>> + Send + 'static {
    futures::stream::unfold(
        (Box::pin(input), Vec::new(), false),
        |(mut input, mut buffer, mut done)| async move {
            loop {
                if let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=end).collect();
                    if line.len() > 1 {
                        return Some((Ok(line), (input, buffer, done)));
                    }
                    continue;
                }
                if done {
                    return None;
                }
                match input.next().await {
                    Some(Ok(chunk)) => buffer.extend_from_slice(&chunk),
                    Some(Err(e)) => return Some((Err(e), (input, buffer, true))),
                    None => {
                        done = true;
                        if !buffer.is_empty() {
                            buffer.push(b'\n');
                        }
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_compare() {
        assert!(bearer_matches(Some("Bearer abc.def"), "abc.def"));
        assert!(!bearer_matches(Some("Bearer abc.deg"), "abc.def"));
        assert!(!bearer_matches(Some("Bearer abc"), "abc.def"));
        assert!(!bearer_matches(Some("abc.def"), "abc.def"));
        assert!(!bearer_matches(None, "abc.def"));
    }

    #[test]
    fn paths() {
        let pods = ResourceKind::from_name("pods").unwrap();
        assert_eq!(
            object_path(pods, Some("ns"), Some("a")),
            "/api/v1/namespaces/ns/pods/a"
        );
        let deployments = ResourceKind::from_name("deployments").unwrap();
        assert_eq!(
            object_path(deployments, None, None),
            "/apis/apps/v1/deployments"
        );
        let nodes = ResourceKind::from_name("nodes").unwrap();
        assert_eq!(
            object_path(nodes, Some("ignored"), Some("n1")),
            "/api/v1/nodes/n1"
        );
    }
}
