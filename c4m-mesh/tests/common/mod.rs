//! Test fixtures: upstream servers, certificates, clients and a gateway on
//! loopback, all real (hyper, rustls, rcgen).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use bytes::Bytes;
use c4m_mesh::gateway::{Gateway, GatewayOptions};
use c4m_mesh::proxy::api::{GatewayClass, GrpcRoute, HttpRoute, ReferenceGrant};
use c4m_mesh::proxy::routes::{Inputs, RouteConfig, ServicePort, ServiceRef, translate};
use c4m_mesh::proxy::{ServiceEndpoints, StaticEndpoints};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub(crate) const CONTROLLER: &str = "c4m.io/gateway";

/// What an upstream saw of one request.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub method: Method,
    pub uri: String,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// An HTTP/1.1 + h2c server on loopback answering with its name.
/// `/slow/<ms>` waits before answering; `/status/<code>` answers that code.
#[derive(Clone)]
pub(crate) struct Upstream {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub(crate) async fn start(name: &'static str, shutdown: &CancellationToken) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = Upstream {
            name,
            addr: listener.local_addr().unwrap(),
            connections: Arc::default(),
            seen: Arc::default(),
        };
        let server = upstream.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    accepted = listener.accept() => accepted.unwrap(),
                    () = shutdown.cancelled() => return,
                };
                server.connections.fetch_add(1, Ordering::SeqCst);
                let server = server.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |request| server.clone().answer(request));
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    tokio::select! {
                        _ = builder.serve_connection(TokioIo::new(stream), service) => {}
                        () = shutdown.cancelled() => {}
                    }
                });
            }
        });
        upstream
    }

    async fn answer(self, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
        let (parts, body) = request.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let path = parts.uri.path().to_owned();
        self.seen.lock().unwrap().push(Seen {
            method: parts.method,
            uri: parts.uri.to_string(),
            version: parts.version,
            headers: parts.headers,
            body,
        });
        let mut status = StatusCode::OK;
        if let Some(ms) = path.strip_prefix("/slow/") {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(100))).await;
        }
        if let Some(code) = path.strip_prefix("/status/") {
            status = StatusCode::from_u16(code.parse().unwrap_or(500)).unwrap();
        }
        let mut response = Response::new(Full::new(Bytes::from(self.name)));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert("x-upstream", self.name.parse().unwrap());
        Ok(response)
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub(crate) fn last(&self) -> Seen {
        self.seen().pop().expect("the upstream saw a request")
    }
}

pub(crate) fn service(namespace: &str, name: &str, port: u16) -> ServiceRef {
    ServiceRef {
        namespace: namespace.into(),
        name: name.into(),
        port: ServicePort::Number(port),
    }
}

/// Publishes `upstreams` as the ready endpoints of `namespace/name:port`.
pub(crate) fn publish(
    endpoints: &StaticEndpoints,
    namespace: &str,
    name: &str,
    port: u16,
    upstreams: &[&Upstream],
) {
    endpoints.set(
        service(namespace, name, port),
        ServiceEndpoints::http1(upstreams.iter().map(|u| u.addr)),
    );
}

pub(crate) fn tls_secret(namespace: &str, name: &str, cert: &Leaf) -> Secret {
    Secret {
        metadata: ObjectMeta {
            namespace: Some(namespace.into()),
            name: Some(name.into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            (
                "tls.crt".to_owned(),
                ByteString(cert.chain_pem.clone().into_bytes()),
            ),
            (
                "tls.key".to_owned(),
                ByteString(cert.key_pem.clone().into_bytes()),
            ),
        ])),
        ..Default::default()
    }
}

/// Translates a multi-document YAML of Gateway API and Ingress objects;
/// every object must be accepted.
pub(crate) fn translate_yaml(yaml: &str, secrets: &[Secret]) -> RouteConfig {
    let mut classes: Vec<GatewayClass> = Vec::new();
    let mut gateways: Vec<c4m_mesh::proxy::api::Gateway> = Vec::new();
    let mut http_routes: Vec<HttpRoute> = Vec::new();
    let mut grpc_routes: Vec<GrpcRoute> = Vec::new();
    let mut grants: Vec<ReferenceGrant> = Vec::new();
    let mut ingress_classes: Vec<IngressClass> = Vec::new();
    let mut ingresses: Vec<Ingress> = Vec::new();
    for doc in yaml.split("\n---\n").filter(|d| !d.trim().is_empty()) {
        let value: serde_yaml::Value = serde_yaml::from_str(doc).unwrap();
        let kind = value["kind"]
            .as_str()
            .expect("every object has a kind")
            .to_owned();
        match kind.as_str() {
            "GatewayClass" => classes.push(serde_yaml::from_value(value).unwrap()),
            "Gateway" => gateways.push(serde_yaml::from_value(value).unwrap()),
            "HTTPRoute" => http_routes.push(serde_yaml::from_value(value).unwrap()),
            "GRPCRoute" => grpc_routes.push(serde_yaml::from_value(value).unwrap()),
            "ReferenceGrant" => grants.push(serde_yaml::from_value(value).unwrap()),
            "IngressClass" => ingress_classes.push(serde_yaml::from_value(value).unwrap()),
            "Ingress" => ingresses.push(serde_yaml::from_value(value).unwrap()),
            other => panic!("unexpected kind {other}"),
        }
    }
    let inputs = Inputs {
        gateway_classes: &classes,
        gateways: &gateways,
        http_routes: &http_routes,
        grpc_routes: &grpc_routes,
        reference_grants: &grants,
        ingress_classes: &ingress_classes,
        ingresses: &ingresses,
        secrets,
        ..Inputs::new(CONTROLLER)
    };
    let translation = translate(&inputs);
    assert!(
        translation.errors.is_empty(),
        "translation errors: {:?}",
        translation.errors
    );
    translation.config
}

/// The GatewayClass and a Gateway `infra/edge` with an HTTP listener on 80
/// admitting routes from every namespace.
pub(crate) const EDGE_HTTP: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: c4m}
spec: {controllerName: c4m.io/gateway}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: infra}
spec:
  gatewayClassName: c4m
  listeners:
  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
"#;

/// Upstreams and endpoints for one test, stopped when dropped.
pub(crate) struct Scenario {
    pub stop: CancellationToken,
    pub endpoints: Arc<StaticEndpoints>,
}

impl Scenario {
    pub(crate) fn new() -> Scenario {
        Scenario {
            stop: CancellationToken::new(),
            endpoints: StaticEndpoints::new(),
        }
    }

    pub(crate) async fn upstream(&self, name: &'static str) -> Upstream {
        Upstream::start(name, &self.stop).await
    }

    /// Publishes `upstreams` as the endpoints of `namespace/name:port`.
    pub(crate) fn publish(&self, namespace: &str, name: &str, port: u16, upstreams: &[&Upstream]) {
        publish(&self.endpoints, namespace, name, port, upstreams);
    }

    /// A gateway serving `EDGE_HTTP` and `routes` on port 80.
    pub(crate) async fn gateway(&self, routes: &str) -> TestGateway {
        let config = translate_yaml(&format!("{EDGE_HTTP}{routes}"), &[]);
        TestGateway::start(config, self.endpoints.clone(), &[80]).await
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A running gateway with its listeners on loopback ports.
pub(crate) struct TestGateway {
    pub gateway: Gateway,
    pub shutdown: CancellationToken,
}

impl TestGateway {
    pub(crate) async fn start(
        config: RouteConfig,
        endpoints: Arc<StaticEndpoints>,
        ports: &[u16],
    ) -> TestGateway {
        Self::start_with(config, endpoints, ports, GatewayOptions::default()).await
    }

    pub(crate) async fn start_with(
        config: RouteConfig,
        endpoints: Arc<StaticEndpoints>,
        ports: &[u16],
        mut options: GatewayOptions,
    ) -> TestGateway {
        for port in ports {
            options
                .bind_overrides
                .insert(*port, "127.0.0.1:0".parse().unwrap());
        }
        let shutdown = CancellationToken::new();
        let (gateway, report) =
            Gateway::start(config, endpoints, options, shutdown.clone()).expect("gateway starts");
        assert!(
            report.rejected_certificates.is_empty(),
            "{:?}",
            report.rejected_certificates
        );
        TestGateway { gateway, shutdown }
    }

    pub(crate) fn addr(&self, port: u16) -> SocketAddr {
        self.gateway
            .local_addr(port)
            .expect("the port is listened on")
    }

    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.gateway.stopped())
            .await
            .expect("the gateway stops");
    }
}

/// A response read whole.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub version: Version,
}

impl Answer {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub(crate) async fn read(response: Response<Incoming>) -> Result<Answer> {
        let (parts, body) = response.into_parts();
        let body = body.collect().await.context("reading the body")?.to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
            version: parts.version,
        })
    }
}

/// An HTTP/1.1 keep-alive connection.
pub(crate) struct H1 {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl H1 {
    pub(crate) async fn connect(addr: SocketAddr) -> Result<H1> {
        let stream = TcpStream::connect(addr).await?;
        Self::over(TokioIo::new(stream)).await
    }

    pub(crate) async fn over<I>(io: I) -> Result<H1>
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (sender, connection) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        });
        Ok(H1 { sender })
    }

    pub(crate) async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<Answer> {
        self.sender.ready().await?;
        Answer::read(self.sender.send_request(request).await?).await
    }

    pub(crate) async fn get(&mut self, host: &str, path: &str) -> Result<Answer> {
        self.send(
            Request::builder()
                .uri(path)
                .header("host", host)
                .body(Full::default())?,
        )
        .await
    }
}

/// One request on a new HTTP/1.1 connection.
pub(crate) async fn get(addr: SocketAddr, host: &str, path: &str) -> Result<Answer> {
    H1::connect(addr).await?.get(host, path).await
}

/// An HTTP/2 connection (prior knowledge, or over TLS).
#[derive(Clone)]
pub(crate) struct H2 {
    sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
}

impl H2 {
    pub(crate) async fn connect(addr: SocketAddr) -> Result<H2> {
        let stream = TcpStream::connect(addr).await?;
        Self::over(TokioIo::new(stream)).await
    }

    pub(crate) async fn over<I>(io: I) -> Result<H2>
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(connection);
        Ok(H2 { sender })
    }

    pub(crate) async fn get(&self, authority: &str, path: &str) -> Result<Answer> {
        let request = Request::builder()
            .uri(format!("http://{authority}{path}"))
            .body(Full::default())?;
        let mut sender = self.sender.clone();
        sender.ready().await?;
        Answer::read(sender.send_request(request).await?).await
    }
}

/// A CA and the leaf certificates it signs.
pub(crate) struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub cert_pem: String,
    pub cert_der: CertificateDer<'static>,
}

/// A leaf certificate and its key.
pub(crate) struct Leaf {
    pub chain_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl Ca {
    pub(crate) fn new(name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let cert = params.self_signed(&key).unwrap();
        Ca {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    fn issue(&self, names: &[&str], usage: rcgen::ExtendedKeyUsagePurpose) -> Leaf {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    pub(crate) fn server(&self, names: &[&str]) -> Leaf {
        self.issue(names, rcgen::ExtendedKeyUsagePurpose::ServerAuth)
    }

    pub(crate) fn client(&self, name: &str) -> Leaf {
        self.issue(&[name], rcgen::ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A TLS client trusting this CA, offering `alpn`, optionally with a
    /// client certificate.
    pub(crate) fn client_config(
        &self,
        alpn: &[&[u8]],
        identity: Option<&Leaf>,
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert_der.clone()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let mut config = match identity {
            Some(leaf) => {
                let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes())
                    .unwrap();
                builder
                    .with_client_auth_cert(vec![leaf.der.clone()], key)
                    .unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

/// A TLS connection to `addr` asking for `sni`.
pub(crate) async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let stream = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_owned())?;
    Ok(tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await?)
}
