//! Health checks: [`DefaultProber`] runs one attempt of a Kubernetes probe
//! (HTTP GET, TCP, exec, gRPC) as the kubelet does; the thresholds that turn
//! attempts into health are `c4m_core::ProbeTracker`'s.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use c4m_core::{
    ContainerRuntime, ContainerStatus, PortBinding, ProbeFailure, Prober, probe_timeout,
};
use http_body_util::Empty;
use hyper::header::{HOST, HeaderName, HeaderValue, USER_AGENT};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{GRPCAction, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::net::TcpStream;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The kubelet's prober: ports (by number or name) are the container's,
/// mapped to their host bindings; exec probes run through the driver.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultProber;

#[async_trait]
impl Prober for DefaultProber {
    async fn probe_once(
        &self,
        probe: &Probe,
        runtime: &dyn ContainerRuntime,
        status: &ContainerStatus,
    ) -> Result<(), ProbeFailure> {
        probe_once(probe, runtime, status)
            .await
            .map_err(ProbeFailure)
    }
}

/// Runs ONE attempt of `probe` against the container `status` describes,
/// bounded by the probe's `timeoutSeconds`. Ports (by number or name) are
/// the container's and are mapped to their host bindings. `Err` says what
/// failed, e.g. `HTTP GET http://127.0.0.1:40123/healthz: status 503`.
async fn probe_once(
    probe: &Probe,
    runtime: &dyn ContainerRuntime,
    status: &ContainerStatus,
) -> Result<(), String> {
    let timeout = probe_timeout(probe);
    let (what, attempt): (String, futures::future::BoxFuture<'_, Result<(), String>>) =
        if let Some(http) = &probe.http_get {
            let (url, attempt) = http_get(http, status)?;
            (format!("HTTP GET {url}"), Box::pin(attempt))
        } else if let Some(tcp) = &probe.tcp_socket {
            let binding = host_binding(status, &tcp.port)?;
            let host = tcp.host.clone().unwrap_or_else(|| binding.host_ip.clone());
            let port = binding.host_port;
            let what = format!("TCP connect {host}:{port}");
            let attempt = async move {
                TcpStream::connect((host.as_str(), port))
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            };
            (what, Box::pin(attempt))
        } else if let Some(exec) = &probe.exec {
            let command = exec.command.clone().unwrap_or_default();
            let what = format!("exec {command:?}");
            let attempt = async move {
                let output = runtime
                    .exec(&status.id, &command, timeout)
                    .await
                    .map_err(|e| e.to_string())?;
                if output.exit_code == 0 {
                    return Ok(());
                }
                let mut message = format!("exit code {}", output.exit_code);
                let detail = if output.stderr.is_empty() {
                    &output.stdout
                } else {
                    &output.stderr
                };
                let detail = String::from_utf8_lossy(detail);
                if !detail.trim().is_empty() {
                    message = format!("{message}: {}", detail.trim());
                }
                Err(message)
            };
            (what, Box::pin(attempt))
        } else if let Some(grpc) = &probe.grpc {
            let (target, attempt) = grpc_check(grpc, status, timeout)?;
            (format!("gRPC health check {target}"), Box::pin(attempt))
        } else {
            return Err("probe has no httpGet, tcpSocket, exec or grpc action".into());
        };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(reason)) => Err(format!("{what}: {reason}")),
        Err(_) => Err(format!("{what}: timed out after {timeout:?}")),
    }
}

/// The host binding of a container port given by number or name.
fn host_binding<'a>(
    status: &'a ContainerStatus,
    port: &IntOrString,
) -> Result<&'a PortBinding, String> {
    let binding = match port {
        IntOrString::Int(number) => status
            .ports
            .iter()
            .find(|b| i32::from(b.container_port) == *number),
        IntOrString::String(name) => match name.parse::<i32>() {
            // Kubernetes accepts a number in string form too.
            Ok(number) => return host_binding(status, &IntOrString::Int(number)),
            Err(_) => status.ports.iter().find(|b| &b.name == name),
        },
    };
    binding.ok_or_else(|| {
        let port = match port {
            IntOrString::Int(n) => n.to_string(),
            IntOrString::String(s) => format!("{s:?}"),
        };
        format!(
            "container {} declares no port {port} (the process driver can only probe declared ports)",
            status.id
        )
    })
}

/// The URL an httpGet probe requests, and the attempt.
fn http_get<'a>(
    http: &'a HTTPGetAction,
    status: &'a ContainerStatus,
) -> Result<(String, impl Future<Output = Result<(), String>> + Send + 'a), String> {
    let binding = host_binding(status, &http.port)?;
    let scheme = http.scheme.as_deref().unwrap_or("HTTP");
    let host = http.host.as_deref().unwrap_or(&binding.host_ip).to_string();
    let port = binding.host_port;
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let path = match http.path.as_deref() {
        None | Some("") => "/".to_string(),
        Some(p) if p.starts_with('/') => p.to_string(),
        Some(p) => format!("/{p}"),
    };
    let url = format!("{}://{authority}{path}", scheme.to_ascii_lowercase());
    if !scheme.eq_ignore_ascii_case("HTTP") {
        return Err(format!(
            "HTTP GET {url}: scheme {scheme} is not supported (only HTTP)"
        ));
    }
    let attempt = async move {
        let mut request = hyper::Request::get(path.as_str())
            .header(HOST, authority.as_str())
            .header(USER_AGENT, concat!("c4m-probe/", env!("CARGO_PKG_VERSION")))
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("build request: {e}"))?;
        for header in http.http_headers.iter().flatten() {
            let name = HeaderName::from_bytes(header.name.as_bytes())
                .map_err(|e| format!("header name {:?}: {e}", header.name))?;
            let value = HeaderValue::from_str(&header.value)
                .map_err(|e| format!("header {:?} value: {e}", header.name))?;
            // A Host header replaces ours; others add to what is there.
            if name == HOST {
                request.headers_mut().insert(name, value);
            } else {
                request.headers_mut().append(name, value);
            }
        }
        let stream = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        // The connection is driven here, not in a spawned task, so nothing
        // outlives the attempt.
        let response = sender.send_request(request);
        tokio::pin!(connection, response);
        let response = tokio::select! {
            biased;
            response = &mut response => response,
            // A server that closes right after answering ends the connection
            // with the response already delivered.
            ended = &mut connection => match ended {
                Ok(()) => response.await,
                Err(e) => return Err(e.to_string()),
            },
        }
        .map_err(|e| e.to_string())?;
        let code = response.status();
        if (200..400).contains(&code.as_u16()) {
            Ok(())
        } else {
            Err(format!("status {}", code.as_u16()))
        }
    };
    Ok((url, attempt))
}

/// The gRPC health check of a grpc probe: target and attempt.
fn grpc_check<'a>(
    grpc: &'a GRPCAction,
    status: &'a ContainerStatus,
    timeout: Duration,
) -> Result<(String, impl Future<Output = Result<(), String>> + Send + 'a), String> {
    let binding = host_binding(status, &IntOrString::Int(grpc.port))?;
    let host = &binding.host_ip;
    let endpoint = if host.contains(':') {
        format!("http://[{host}]:{}", binding.host_port)
    } else {
        format!("http://{host}:{}", binding.host_port)
    };
    let service = grpc.service.clone().unwrap_or_default();
    let target = format!("{endpoint} service {service:?}");
    let attempt = async move {
        let channel = tonic::transport::Endpoint::from_shared(endpoint)
            .map_err(|e| e.to_string())?
            .connect_timeout(timeout)
            .timeout(timeout)
            .connect()
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let response = HealthClient::new(channel)
            .check(HealthCheckRequest { service })
            .await
            .map_err(|e| format!("{}: {}", e.code(), e.message()))?;
        let serving = response.into_inner().status();
        if serving == ServingStatus::Serving {
            Ok(())
        } else {
            Err(format!("status {}", serving.as_str_name()))
        }
    };
    Ok((target, attempt))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use k8s_openapi::api::core::v1::{ExecAction, HTTPHeader, TCPSocketAction};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use c4m_core::{ContainerSpec, ContainerState};

    use crate::ProcessRuntime;

    fn runtime(state: &tempfile::TempDir) -> ProcessRuntime {
        ProcessRuntime::new(state.path().to_path_buf(), Ipv4Addr::LOCALHOST.into()).unwrap()
    }

    /// A container status whose port `container_port` (named `name`) is
    /// bound to `host_port` on 127.0.0.1.
    fn status_with_port(container_port: u16, name: &str, host_port: u16) -> ContainerStatus {
        let spec = ContainerSpec {
            id: "probed".into(),
            image: None,
            command: vec!["true".into()],
            args: vec![],
            env: vec![],
            working_dir: None,
            user: None,
            group: None,
            ports: vec![],
            resources: Default::default(),
            network_namespace: None,
            privileged: false,
            read_only_root_filesystem: false,
            ..ContainerSpec::default()
        };
        ContainerStatus {
            id: spec.id.clone(),
            spec,
            state: ContainerState::Running {
                pid: 1,
                started_at: std::time::SystemTime::now(),
            },
            ports: vec![PortBinding {
                name: name.into(),
                container_port,
                host_ip: "127.0.0.1".into(),
                host_port,
                protocol: "TCP".into(),
            }],
        }
    }

    /// Answers `/healthz` with 200 when the `x-probe: yes` header is sent,
    /// `/slow` never, anything else with 503.
    async fn http_server() -> (u16, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let request = String::from_utf8_lossy(&request).to_ascii_lowercase();
                    if request.starts_with("get /slow ") {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                    let ok = request.starts_with("get /healthz ")
                        && request.contains("\r\nx-probe: yes\r\n")
                        && request.contains("\r\nhost: 127.0.0.1:");
                    let status = if ok {
                        "200 OK"
                    } else {
                        "503 Service Unavailable"
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                });
            }
        });
        (port, task)
    }

    fn http_probe(port: IntOrString, path: &str) -> Probe {
        Probe {
            http_get: Some(HTTPGetAction {
                port,
                path: Some(path.into()),
                http_headers: Some(vec![HTTPHeader {
                    name: "X-Probe".into(),
                    value: "yes".into(),
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn http_get() {
        let state = tempfile::tempdir().unwrap();
        let runtime = runtime(&state);
        let (port, server) = http_server().await;
        let status = status_with_port(8080, "http", port);

        let by_number = http_probe(IntOrString::Int(8080), "/healthz");
        assert_eq!(probe_once(&by_number, &runtime, &status).await, Ok(()));
        let by_name = http_probe(IntOrString::String("http".into()), "healthz");
        assert_eq!(probe_once(&by_name, &runtime, &status).await, Ok(()));

        let failing = http_probe(IntOrString::Int(8080), "/other");
        assert_eq!(
            probe_once(&failing, &runtime, &status).await,
            Err(format!(
                "HTTP GET http://127.0.0.1:{port}/other: status 503"
            ))
        );
        let slow = http_probe(IntOrString::Int(8080), "/slow");
        let error = probe_once(&slow, &runtime, &status).await.unwrap_err();
        assert!(error.ends_with("timed out after 1s"), "{error}");

        let undeclared = http_probe(IntOrString::Int(9999), "/healthz");
        let error = probe_once(&undeclared, &runtime, &status)
            .await
            .unwrap_err();
        assert!(error.contains("declares no port 9999"), "{error}");
        let mut https = http_probe(IntOrString::Int(8080), "/healthz");
        https.http_get.as_mut().unwrap().scheme = Some("HTTPS".into());
        let error = probe_once(&https, &runtime, &status).await.unwrap_err();
        assert!(error.contains("not supported"), "{error}");
        server.abort();
    }

    #[tokio::test]
    async fn tcp_socket() {
        let state = tempfile::tempdir().unwrap();
        let runtime = runtime(&state);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let probe = Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(5432),
                host: None,
            }),
            ..Default::default()
        };
        let status = status_with_port(5432, "", port);
        assert_eq!(probe_once(&probe, &runtime, &status).await, Ok(()));
        drop(listener);
        let error = probe_once(&probe, &runtime, &status).await.unwrap_err();
        assert!(
            error.starts_with(&format!("TCP connect 127.0.0.1:{port}: ")),
            "{error}"
        );
    }

    #[tokio::test]
    async fn exec_in_a_real_container() {
        let state = tempfile::tempdir().unwrap();
        let runtime = runtime(&state);
        let spec = ContainerSpec {
            id: format!("probe-exec-{}", std::process::id()),
            image: None,
            command: vec!["sleep".into()],
            args: vec!["30".into()],
            env: vec![("READY".into(), "yes".into())],
            working_dir: None,
            user: None,
            group: None,
            ports: vec![],
            resources: Default::default(),
            network_namespace: None,
            privileged: false,
            read_only_root_filesystem: false,
            ..ContainerSpec::default()
        };
        let status = runtime.start(&spec).await.unwrap();
        let exec = |script: &str| Probe {
            exec: Some(ExecAction {
                command: Some(vec!["sh".into(), "-c".into(), script.into()]),
            }),
            ..Default::default()
        };
        let ok = probe_once(&exec(r#"test "$READY" = yes"#), &runtime, &status).await;
        let failed = probe_once(&exec("echo not ready >&2; exit 2"), &runtime, &status).await;
        let slow = probe_once(&exec("sleep 5"), &runtime, &status).await;
        runtime.remove(&spec.id).await.unwrap();
        assert_eq!(ok, Ok(()));
        assert_eq!(
            failed,
            Err(
                r#"exec ["sh", "-c", "echo not ready >&2; exit 2"]: exit code 2: not ready"#.into()
            )
        );
        let slow = slow.unwrap_err();
        assert!(slow.contains("timed out"), "{slow}");
    }

    #[tokio::test]
    async fn grpc_health() {
        use tokio_stream::wrappers::TcpListenerStream;
        let state = tempfile::tempdir().unwrap();
        let runtime = runtime(&state);
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("up", tonic_health::ServingStatus::Serving)
            .await;
        reporter
            .set_service_status("down", tonic_health::ServingStatus::NotServing)
            .await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        let status = status_with_port(50051, "grpc", port);
        let probe = |service: Option<&str>| Probe {
            grpc: Some(GRPCAction {
                port: 50051,
                service: service.map(str::to_string),
            }),
            ..Default::default()
        };
        // The empty service is the server as a whole.
        assert_eq!(probe_once(&probe(None), &runtime, &status).await, Ok(()));
        assert_eq!(
            probe_once(&probe(Some("up")), &runtime, &status).await,
            Ok(())
        );
        let down = probe_once(&probe(Some("down")), &runtime, &status).await;
        assert_eq!(
            down,
            Err(format!(
                "gRPC health check http://127.0.0.1:{port} service \"down\": status NOT_SERVING"
            ))
        );
        let unknown = probe_once(&probe(Some("nope")), &runtime, &status)
            .await
            .unwrap_err();
        assert!(
            unknown.contains("NotFound")
                || unknown.contains("not found")
                || unknown.contains("Not found"),
            "{unknown}"
        );
        server.abort();
    }
}
