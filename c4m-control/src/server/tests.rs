//! A control plane run in-process, fed what a hostile or careless client
//! sends: each request is refused with a Kubernetes `Status` naming what is
//! wrong, nothing is stored, and the control plane keeps serving.

use std::sync::Arc;
use std::time::Duration;

use c4m_plugin::ControlPlaneExtensions;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{ControlPlane, ControlPlaneConfig};
use crate::objects::{Objects, kind};

/// A running control plane and a client for its API.
struct Running {
    url: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
    run: tokio::task::JoinHandle<crate::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Running {
    /// Starts a control plane over `store` (in `dir`), nodes turning
    /// NotReady and being evicted quickly.
    async fn start(dir: tempfile::TempDir, store: Arc<dyn c4m_state::Store>) -> Running {
        let config = ControlPlaneConfig {
            api_addr: ([127, 0, 0, 1], 0).into(),
            grpc_addr: ([127, 0, 0, 1], 0).into(),
            dns_addr: None,
            node_grace: Duration::from_millis(100),
            eviction_delay: Duration::from_millis(100),
            ..ControlPlaneConfig::default()
        };
        let control = ControlPlane::bind(config, ControlPlaneExtensions::new(store))
            .await
            .unwrap();
        let url = format!("http://{}", control.api_addr());
        let shutdown = CancellationToken::new();
        let run = tokio::spawn(control.run(shutdown.clone()));
        Running {
            url,
            http: reqwest::Client::new(),
            shutdown,
            run,
            _dir: dir,
        }
    }

    async fn fresh() -> Running {
        let (dir, store) = store();
        Running::start(dir, store).await
    }

    /// `method path` with a JSON body (or `content_type` and raw bytes):
    /// the status code and the JSON answer (null when it is not JSON).
    async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(body) = body {
            request = request.json(body);
        }
        answer(request).await
    }

    async fn send_bytes(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .header("content-type", content_type)
            .body(body);
        answer(request).await
    }

    /// What the API answers a POST to `path` that declares a JSON body of
    /// `length` bytes and sends none of it.
    async fn declared_body_answer(&self, path: &str, length: usize) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let address = self.url.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
             Content-Length: {length}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        // Up to the end of the Status (a connection whose body was not
        // read is closed after the answer).
        let mut answer = Vec::new();
        let mut chunk = vec![0; 4096];
        while !answer.ends_with(b"}") {
            match stream.read(&mut chunk).await.unwrap() {
                0 => break,
                read => answer.extend_from_slice(&chunk[..read]),
            }
        }
        String::from_utf8_lossy(&answer).into_owned()
    }

    /// The control plane is still running and answering.
    async fn assert_serving(&self) {
        assert!(!self.run.is_finished(), "the control plane stopped");
        let health = self
            .http
            .get(format!("{}/healthz", self.url))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), StatusCode::OK);
        let (code, list) = self.send(Method::GET, "/api/v1/namespaces", None).await;
        assert_eq!(code, StatusCode::OK, "{list}");
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.run.await.unwrap().unwrap();
    }
}

fn store() -> (tempfile::TempDir, Arc<dyn c4m_state::Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn c4m_state::Store> =
        Arc::new(c4m_state::RedbStore::open(&dir.path().join("store.redb")).unwrap());
    (dir, store)
}

async fn answer(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.unwrap();
    let code = response.status();
    let body = response.bytes().await.unwrap();
    (code, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// `object` without its resourceVersion: a write of it is not refused as
/// stale (the scheduler and controllers write objects too) and gets as far
/// as its validation.
fn unpinned(mut object: Value) -> Value {
    if let Some(metadata) = object["metadata"].as_object_mut() {
        metadata.remove("resourceVersion");
    }
    object
}

/// The one cause of a 422 `Status`: its field and message.
fn cause(status: &Value) -> (&str, &str) {
    assert_eq!(status["reason"], "Invalid", "{status}");
    let causes = status["details"]["causes"].as_array().expect("causes");
    assert_eq!(causes.len(), 1, "{status}");
    (
        causes[0]["field"].as_str().unwrap_or_default(),
        causes[0]["message"].as_str().unwrap_or_default(),
    )
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
}

const PODS: &str = "/api/v1/namespaces/default/pods";

/// `PUT pods/X/status {"status":"boom"}` was stored, and the node
/// controller panicked on it: now it, a field of the wrong type and a
/// wrong PATCH are refused with 422 naming the field, and nothing changes.
#[tokio::test]
async fn status_writes_are_checked_against_the_typed_status() {
    let api = Running::fresh().await;
    let (code, created) = api.send(Method::POST, PODS, Some(&pod("web"))).await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    let created = unpinned(created);
    let status_path = format!("{PODS}/web/status");
    for (status, field, quoted) in [
        (json!("boom"), "status", "Invalid value: \"boom\""),
        (json!({"phase": 5}), "status.phase", "Invalid value: 5"),
        (
            json!({"conditions": "x"}),
            "status.conditions",
            "Invalid value: \"x\"",
        ),
        (
            json!({"conditions": [{"type": 1}]}),
            "status.conditions[0].type",
            "Invalid value: 1",
        ),
    ] {
        let mut body = created.clone();
        body["status"] = status.clone();
        let (code, refused) = api.send(Method::PUT, &status_path, Some(&body)).await;
        assert_eq!(
            code,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{status}: {refused}"
        );
        let (cause_field, message) = cause(&refused);
        assert_eq!(cause_field, field, "{refused}");
        assert!(message.starts_with(quoted), "{refused}");
        assert_eq!(refused["details"]["kind"], "Pod");
        assert_eq!(refused["details"]["name"], "web");
    }
    let (code, refused) = api
        .send_bytes(
            Method::PATCH,
            &status_path,
            "application/merge-patch+json",
            br#"{"status": {"phase": ["Running"]}}"#.to_vec(),
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(cause(&refused).0, "status.phase");
    let (_, stored) = api.send(Method::GET, &format!("{PODS}/web"), None).await;
    assert_eq!(stored["status"]["phase"], "Pending", "{stored}");

    // Other kinds with a status are held to theirs.
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
    let deployments = "/apis/apps/v1/namespaces/default/deployments";
    let (code, created) = api.send(Method::POST, deployments, Some(&deployment)).await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    let mut body = unpinned(created);
    body["status"] = json!({"replicas": "three"});
    let (code, refused) = api
        .send(
            Method::PUT,
            &format!("{deployments}/web/status"),
            Some(&body),
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(cause(&refused).0, "status.replicas");
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}});
    let (code, created) = api.send(Method::POST, "/api/v1/nodes", Some(&node)).await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    let mut body = unpinned(created);
    body["status"] = json!({"conditions": 7});
    let (code, refused) = api
        .send(Method::PUT, "/api/v1/nodes/n/status", Some(&body))
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(cause(&refused).0, "status.conditions");

    // A status of the right types is written.
    let (_, body) = api.send(Method::GET, &format!("{PODS}/web"), None).await;
    let mut body = unpinned(body);
    body["status"] =
        json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]});
    let (code, written) = api.send(Method::PUT, &status_path, Some(&body)).await;
    assert_eq!(code, StatusCode::OK, "{written}");
    assert_eq!(written["status"]["phase"], "Running");
    api.assert_serving().await;
    api.stop().await;
}

/// A status stored before status writes were checked (`"boom"`, on an
/// instance of a node that goes silent) made the node controller panic,
/// and the control plane crash-loop on restart: now the instance is
/// evicted as any other, and the control plane keeps serving.
#[tokio::test]
async fn a_bad_stored_status_neither_panics_nor_stops_the_control_plane() {
    let (dir, store) = store();
    let objects = Objects::new(Arc::clone(&store));
    crate::test_support::create_default_namespace(&objects).await;
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "lost"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    objects.create(kind("nodes"), "", node).await.unwrap();
    let mut bad = pod("orphan");
    bad["spec"]["nodeName"] = json!("lost");
    bad["status"] = json!("boom");
    let created = objects.create(kind("pods"), "default", bad).await.unwrap();
    assert_eq!(
        created["status"], "boom",
        "stored as an older c4m stored it"
    );

    let api = Running::start(dir, store).await;
    let evicted = async {
        loop {
            let (_, pod) = api.send(Method::GET, &format!("{PODS}/orphan"), None).await;
            if pod["status"]["phase"] == "Failed" {
                return pod;
            }
            assert!(!api.run.is_finished(), "the control plane stopped");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let evicted = tokio::time::timeout(Duration::from_secs(60), evicted)
        .await
        .expect("the instance of the lost node was not evicted");
    assert_eq!(evicted["status"]["reason"], "NodeLost");
    api.assert_serving().await;
    api.stop().await;
}

/// Server-side apply of a configuration whose `metadata` (or the object
/// itself) is not an object panicked the handler: now a 422 or 400 naming
/// it.
#[tokio::test]
async fn server_side_apply_of_non_objects_is_refused() {
    let api = Running::fresh().await;
    let path = "/api/v1/namespaces/default/configmaps/cm?fieldManager=t";
    for (body, code, field) in [
        (
            r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": 5}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("metadata"),
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: [a]\n",
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("metadata"),
        ),
        (
            r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": "x"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("data"),
        ),
        (r#"["a"]"#, StatusCode::BAD_REQUEST, None),
        (r#""boom""#, StatusCode::BAD_REQUEST, None),
    ] {
        let (answered, status) = api
            .send_bytes(
                Method::PATCH,
                path,
                "application/apply-patch+yaml",
                body.as_bytes().to_vec(),
            )
            .await;
        assert_eq!(answered, code, "{body}: {status}");
        assert_eq!(status["kind"], "Status", "{body}: {status}");
        if let Some(field) = field {
            assert_eq!(cause(&status).0, field, "{body}: {status}");
        }
    }
    // Once created, the same again, over the stored object.
    let (code, created) = api
        .send_bytes(
            Method::PATCH,
            path,
            "application/apply-patch+yaml",
            b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata: {a: b}\n".to_vec(),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    let (code, status) = api
        .send_bytes(
            Method::PATCH,
            path,
            "application/apply-patch+yaml",
            br#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": "cm"}"#.to_vec(),
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{status}");
    assert_eq!(cause(&status).0, "metadata");
    api.assert_serving().await;
    api.stop().await;
}

/// `sinceSeconds` that overflows the clock is a 400 from the control
/// plane's log proxy, before any agent is asked.
#[tokio::test]
async fn an_overflowing_since_seconds_is_a_bad_request() {
    let api = Running::fresh().await;
    let (code, created) = api.send(Method::POST, PODS, Some(&pod("web"))).await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    for since in ["9223372036854775807", "18446744073709551616", "0", "x"] {
        let (code, status) = api
            .send(
                Method::GET,
                &format!("{PODS}/web/log?sinceSeconds={since}"),
                None,
            )
            .await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{since}: {status}");
        assert!(
            status["message"].as_str().unwrap().contains("sinceSeconds"),
            "{status}"
        );
    }
    api.assert_serving().await;
    api.stop().await;
}

/// Kubernetes' size limits: an object of at most 1.5 MiB, a body of at
/// most 3 MiB (413 either way), annotations of at most 256 KiB in all
/// (422 naming them), label keys and values as Kubernetes takes them.
#[tokio::test]
async fn objects_and_bodies_have_kubernetes_size_limits() {
    let api = Running::fresh().await;
    let config_maps = "/api/v1/namespaces/default/configmaps";
    let config_map = |name: &str, bytes: usize| {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
            "data": {"big": "x".repeat(bytes)}})
    };
    let (code, created) = api
        .send(
            Method::POST,
            config_maps,
            Some(&config_map("fits", 1 << 20)),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{}", created["message"]);
    let (code, status) = api
        .send(
            Method::POST,
            config_maps,
            Some(&config_map("big", 1_600_000)),
        )
        .await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE, "{}", status["message"]);
    assert_eq!(status["reason"], "RequestEntityTooLarge");
    // Grown past the limit by a patch: refused too, and left as it was.
    let patch = json!({"data": {"more": "y".repeat(700_000)}});
    let (code, status) = api
        .send_bytes(
            Method::PATCH,
            &format!("{config_maps}/fits"),
            "application/merge-patch+json",
            patch.to_string().into_bytes(),
        )
        .await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE, "{}", status["message"]);
    let (_, stored) = api
        .send(Method::GET, &format!("{config_maps}/fits"), None)
        .await;
    assert!(stored["data"].get("more").is_none());
    // A body declared over 3 MiB is refused before any of it is read: the
    // answer comes while the client has sent nothing but its headers.
    let answer = api.declared_body_answer(config_maps, 4 << 20).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("RequestEntityTooLarge"), "{answer}");
    let (code, status) = api
        .send_bytes(
            Method::POST,
            "/c4m/v1/apply",
            "application/json",
            json!({"objects": [{"source": "big.yaml", "document": 1,
                "object": config_map("applied", 1_600_000)}]})
            .to_string()
            .into_bytes(),
        )
        .await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE, "{}", status["message"]);

    let annotated = |annotations: Value| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "annotated", "annotations": annotations}})
    };
    let (code, status) = api
        .send(
            Method::POST,
            config_maps,
            Some(&annotated(json!({"a": "x".repeat(300 << 10)}))),
        )
        .await;
    assert_eq!(
        code,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        status["message"]
    );
    assert_eq!(cause(&status).0, "metadata.annotations");
    let (code, status) = api
        .send(
            Method::POST,
            config_maps,
            Some(&annotated(json!({"not a key!": "x"}))),
        )
        .await;
    assert_eq!(
        code,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        status["message"]
    );
    assert_eq!(cause(&status).0, "metadata.annotations");
    let (code, created) = api
        .send(
            Method::POST,
            config_maps,
            Some(&annotated(
                json!({"example.com/note": "x".repeat(200 << 10)}),
            )),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{}", created["message"]);
    let labelled = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "labelled", "labels": {"a": "x".repeat(64)}}});
    let (code, status) = api.send(Method::POST, config_maps, Some(&labelled)).await;
    assert_eq!(
        code,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        status["message"]
    );
    assert_eq!(cause(&status).0, "metadata.labels.a");
    api.assert_serving().await;
    api.stop().await;
}
