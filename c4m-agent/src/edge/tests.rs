use c4m_api::agent::{ObjectChanges, WatchedObject};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::objects::NodeObjects;

/// The set the mirror holds after one whole batch of `objects`.
fn set_of(objects: &[Value]) -> Arc<ObjectSet> {
    let mut node = NodeObjects::new();
    let set = node.subscribe(&kinds());
    let objects = objects
        .iter()
        .map(|o| {
            let plural = match o["kind"].as_str().unwrap() {
                // Not necessarily served by this build yet.
                "EndpointSlice" => "endpointslices",
                kind => {
                    c4m_core::ResourceKind::from_type(o["apiVersion"].as_str().unwrap(), kind)
                        .unwrap()
                        .plural
                }
            };
            let name = o["metadata"]["name"].as_str().unwrap();
            let key = match o["metadata"]["namespace"].as_str() {
                Some(namespace) => format!("{plural}/{namespace}/{name}"),
                None => format!("{plural}/{name}"),
            };
            WatchedObject {
                key,
                json: serde_json::to_vec(o).unwrap(),
                revision: 1,
            }
        })
        .collect();
    let changes = ObjectChanges {
        full: true,
        objects,
        removed: Vec::new(),
        more: false,
    };
    node.receive(&mut None, &changes);
    set.borrow().clone().unwrap()
}

fn service(name: &str, ports: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "shop"}, "spec": {"ports": ports}})
}

fn slice(name: &str, service: &str, ports: Value, endpoints: Value) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "shop",
            "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4", "ports": ports, "endpoints": endpoints})
}

fn endpoint(ip: &str, ready: Value) -> Value {
    json!({"addresses": [ip], "conditions": {"ready": ready}})
}

fn port_ref(name: &str, port: ServicePort) -> ServiceRef {
    ServiceRef {
        namespace: "shop".into(),
        name: name.into(),
        port,
    }
}

#[test]
fn ready_endpoints_of_each_service_port_come_from_its_slices() {
    let objects = [
        service(
            "web",
            json!([{"name": "http", "port": 80, "appProtocol": "kubernetes.io/h2c"},
                {"name": "admin", "port": 9000}]),
        ),
        service("plain", json!([{"port": 8080}])),
        slice(
            "web-a",
            "web",
            json!([{"name": "http", "port": 8080}, {"name": "admin", "port": 9001}]),
            json!([
                endpoint("10.0.0.1", json!(true)),
                endpoint("10.0.0.2", json!(false)),
                endpoint("10.0.0.3", Value::Null)
            ]),
        ),
        slice(
            "web-b",
            "web",
            json!([{"name": "http", "port": 8080}]),
            json!([endpoint("10.0.1.1", json!(true))]),
        ),
        slice(
            "plain-a",
            "plain",
            json!([{"port": 3000}]),
            json!([endpoint("10.0.2.1", json!(true))]),
        ),
        slice(
            "orphan",
            "gone",
            json!([{"port": 1}]),
            json!([endpoint("10.0.3.1", json!(true))]),
        ),
    ];
    let endpoints = service_endpoints(&set_of(&objects));
    let addrs = |service: &str, port| -> Vec<String> {
        endpoints[&port_ref(service, port)]
            .addrs
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    let http = ["10.0.0.1:8080", "10.0.0.3:8080", "10.0.1.1:8080"];
    assert_eq!(addrs("web", ServicePort::Number(80)), http);
    assert_eq!(addrs("web", ServicePort::Name("http".into())), http);
    assert_eq!(
        endpoints[&port_ref("web", ServicePort::Number(80))].protocol,
        AppProtocol::H2c
    );
    assert_eq!(
        addrs("web", ServicePort::Number(9000)),
        ["10.0.0.1:9001", "10.0.0.3:9001"]
    );
    assert_eq!(addrs("plain", ServicePort::Number(8080)), ["10.0.2.1:3000"]);
    assert_eq!(endpoints.len(), 5, "nothing of a Service that is gone");
}

/// A server answering every request `ok` (HTTP/1.1, one per connection).
async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    addr
}

/// The status line and body of a GET of `path` on `host` through `gateway`.
async fn get(gateway: SocketAddr, host: &str, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(gateway).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response.lines().next().unwrap_or_default().to_owned();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn ingresses_and_endpoints_follow_the_object_sets() {
    let backend = upstream().await;
    let class = json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": "c4m",
            "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
        "spec": {"controller": "c4m.io/ingress"}});
    let ingress = |path: &str| {
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"rules": [{"host": "a.test", "http": {"paths": [{"path": path,
                "pathType": "Prefix",
                "backend": {"service": {"name": "web", "port": {"name": "http"}}}}]}}]}})
    };
    let web = service("web", json!([{"name": "http", "port": 80}]));
    let slice_of = |ready: bool| {
        slice(
            "web-a",
            "web",
            json!([{"name": "http", "port": backend.port()}]),
            json!([endpoint("127.0.0.1", json!(ready))]),
        )
    };
    let shutdown = CancellationToken::new();
    let options = GatewayOptions {
        bind_overrides: [(80, "127.0.0.1:0".parse().unwrap())].into(),
        ..GatewayOptions::default()
    };
    let mut edge = EdgeGateway::new(IngressPorts::default(), options, shutdown.clone());

    edge.update(&set_of(&[
        class.clone(),
        ingress("/"),
        web.clone(),
        slice_of(true),
    ]));
    let gateway = edge.gateway.clone().expect("started");
    let addr = gateway.local_addr(80).unwrap();
    assert_eq!(
        get(addr, "a.test", "/x").await,
        ("HTTP/1.1 200 OK".into(), "ok".into())
    );
    assert_eq!(get(addr, "b.test", "/x").await.0, "HTTP/1.1 404 Not Found");

    // The endpoint turns unready: no endpoint left.
    edge.update(&set_of(&[
        class.clone(),
        ingress("/"),
        web.clone(),
        slice_of(false),
    ]));
    assert_eq!(
        get(addr, "a.test", "/x").await.0,
        "HTTP/1.1 503 Service Unavailable"
    );

    // A new path: reloaded on the same port.
    edge.update(&set_of(&[class, ingress("/api"), web, slice_of(true)]));
    assert_eq!(get(addr, "a.test", "/x").await.0, "HTTP/1.1 404 Not Found");
    assert_eq!(get(addr, "a.test", "/api/x").await.1, "ok");
    shutdown.cancel();
    gateway.stopped().await;
}
