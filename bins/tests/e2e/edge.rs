//! The edge gateway as a user meets it: Ingresses and Gateway API routes
//! applied through the API, served by `c4m-agent --gateway` to `oci`
//! instances (busybox httpd) over HTTP and HTTPS with a certificate from a
//! Secret; rate limits, trace context and reloads under a steady client
//! (root, runc/crun, conmon, nftables, curl).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::common::kubectl::Kubectl;
use crate::common::oci::require_oci;
use crate::common::*;

const MINUTE: Duration = Duration::from_secs(60);
/// The instances' default VPC of each test (apart from each other's and
/// the other tests' ranges: the same range on one machine is one bridge).
const ROUTES_VPC: &str = "10.99.160.0/20";
const UPDATES_VPC: &str = "10.99.112.0/20";

/// A cluster of one node running the gateway, its instances in `vpc`,
/// with the busybox image `bb`.
struct Edge {
    cluster: Cluster,
    /// Where Ingresses are served over HTTP and HTTPS.
    ingress_http: u16,
    ingress_https: u16,
    /// The gateway's admin endpoint (`/metrics`, `/ready`).
    admin: u16,
}

fn start_edge(vpc: &str) -> Edge {
    require_oci();
    c4m_testkit::require_commands(&[("nft", "nftables"), ("curl", "curl")]);
    let mut cluster = Cluster::start();
    let (ingress_http, ingress_https, admin) = (free_port(), free_port(), free_port());
    let admin_addr = format!("127.0.0.1:{admin}");
    cluster.start_agent_with(
        "edge",
        "4",
        "4Gi",
        &[
            "--instance-network",
            "--default-vpc-cidr",
            vpc,
            "--gateway",
            "--gateway-http-port",
            &ingress_http.to_string(),
            "--gateway-https-port",
            &ingress_https.to_string(),
            "--gateway-admin",
            &admin_addr,
        ],
    );
    let tar = busybox_image_tar(cluster.dir.path());
    cluster.ok(&["image", "import", tar.to_str().unwrap(), "--name", "bb"]);
    Edge {
        cluster,
        ingress_http,
        ingress_https,
        admin,
    }
}

/// A Deployment `app` of busybox httpd answering `/APP/` with `APP POD`
/// and `/cgi-bin/trace` with the `traceparent` it was sent, and its
/// Service (port 80, named `http`, to 8080).
fn app(app: &str) -> String {
    let script = format!(
        "mkdir -p /www/{app} /www/cgi-bin && echo \"{app} $POD\" > /www/{app}/index.html && \
         printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho traceparent=$HTTP_TRACEPARENT\\n' \
         > /www/cgi-bin/trace && chmod +x /www/cgi-bin/trace && exec busybox httpd -f -p 8080 -h /www"
    );
    let deployment = deployment_of("oci", app, "bb:1", 1, None, &script, "");
    format!(
        "{deployment}---\napiVersion: v1\nkind: Service\nmetadata: {{name: {app}}}\nspec:\n  \
         selector: {{app: {app}}}\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n"
    )
}

/// A CA, and a Secret `edge-tls` with a certificate it issued for
/// `web.test` and `api.test`; the CA's PEM.
fn tls_secret() -> (String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "edge test CA");
    ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["web.test".into(), "api.test".into()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: edge-tls}}\ntype: kubernetes.io/tls\n\
         data:\n  tls.crt: {}\n  tls.key: {}\n",
        STANDARD.encode(leaf.pem()),
        STANDARD.encode(key.serialize_pem())
    );
    (secret, ca_cert.pem())
}

/// curl's answer to `url` for `host` resolved to 127.0.0.1 (trusting
/// `ca`, a PEM file): status and body; `headers` sent as given.
fn curl(host: &str, port: u16, url: &str, ca: &std::path::Path, headers: &[&str]) -> (u16, String) {
    let mut command = Command::new("curl");
    command
        .args(["-s", "--max-time", "5", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
        .args(["-w", "\n%{http_code}"]);
    for header in headers {
        command.args(["-H", header]);
    }
    let output = command.arg(url).output().expect("run curl");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// One plain HTTP/1.1 GET of `path` for `host` at 127.0.0.1:`port` on a
/// connection of its own: the status and the response head; None when
/// the connection failed.
fn get(port: u16, host: &str, path: &str) -> Option<(u16, String)> {
    get_with(port, host, path, "")
}

/// [`get`] with more header lines (each ending in CRLF).
fn get_with(port: u16, host: &str, path: &str, headers: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    Some((status, response))
}

/// The row of `c4m get KIND NAME`, under its header.
fn row(cluster: &Cluster, kind: &str, name: &str) -> String {
    let table = cluster.ok(&["get", kind, name]);
    table.lines().nth(1).unwrap_or_default().to_string()
}

#[test]
#[ignore = "needs root + runc + conmon + nftables + curl"]
fn ingresses_and_http_routes_serve_two_services_by_host_and_path_over_tls() {
    let edge = start_edge(ROUTES_VPC);
    let cluster = &edge.cluster;
    let (gateway_http, gateway_https) = (free_port(), free_port());
    let (secret, ca) = tls_secret();
    let ca_file = cluster.dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    cluster.apply(&secret);
    cluster.apply(&app("web"));
    cluster.apply(&app("api"));
    cluster.apply(&format!(
        r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: site}}
spec:
  tls: [{{hosts: [web.test], secretName: edge-tls}}]
  rules:
  - host: web.test
    http:
      paths:
      - {{path: /web, pathType: Prefix, backend: {{service: {{name: web, port: {{name: http}}}}}}}}
      - {{path: /api, pathType: Prefix, backend: {{service: {{name: api, port: {{number: 80}}}}}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: edge}}
spec:
  gatewayClassName: c4m
  listeners:
  - {{name: http, port: {gateway_http}, protocol: HTTP, allowedRoutes: {{namespaces: {{from: All}}}}}}
  - name: https
    port: {gateway_https}
    protocol: HTTPS
    tls: {{certificateRefs: [{{name: edge-tls}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: api}}
spec:
  parentRefs: [{{name: edge}}]
  hostnames: [api.test]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /api}}}}, {{path: {{type: PathPrefix, value: /cgi-bin}}}}]
    backendRefs: [{{name: api, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /web}}}}]
    backendRefs: [{{name: web, port: 80}}]
"#
    ));
    cluster.wait_ready("app=web", 1, MINUTE);
    cluster.wait_ready("app=api", 1, MINUTE);

    // The Ingress, over TLS with the Secret's certificate, by path.
    let https = edge.ingress_https;
    let web = wait_for("the Ingress to route to web", MINUTE, || {
        let answer = curl(
            "web.test",
            https,
            &format!("https://web.test:{https}/web/"),
            &ca_file,
            &[],
        );
        (answer.0 == 200).then_some(answer.1)
    });
    assert!(web.starts_with("web web-"), "{web}");
    let (code, body) = curl(
        "web.test",
        https,
        &format!("https://web.test:{https}/api/"),
        &ca_file,
        &[],
    );
    assert_eq!(code, 200);
    assert!(body.starts_with("api api-"), "{body}");
    // A path no rule of the host has.
    let (code, _) = curl(
        "web.test",
        https,
        &format!("https://web.test:{https}/other/"),
        &ca_file,
        &[],
    );
    assert_eq!(code, 404);
    // Plain HTTP to a TLS host is redirected.
    let (code, head) = get(edge.ingress_http, "web.test", "/web/").unwrap();
    assert_eq!(code, 308, "{head}");
    assert!(
        head.contains(&format!("https://web.test:{https}/web/")),
        "{head}"
    );

    // The HTTPRoute, on the Gateway's listeners, by host and path.
    let api = wait_for("the HTTPRoute to route to api", MINUTE, || {
        let url = format!("https://api.test:{gateway_https}/api/");
        let answer = curl("api.test", gateway_https, &url, &ca_file, &[]);
        (answer.0 == 200).then_some(answer.1)
    });
    assert!(api.starts_with("api api-"), "{api}");
    let url = format!("https://api.test:{gateway_https}/web/");
    let (code, body) = curl("api.test", gateway_https, &url, &ca_file, &[]);
    assert_eq!((code, body.starts_with("web web-")), (200, true), "{body}");
    assert_eq!(
        get(gateway_http, "web.test", "/web/").unwrap().0,
        404,
        "not its host"
    );

    // Trace context: a caller's trace goes on with a new parent; a request
    // without one starts one.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let sent = format!("traceparent: 00-{trace}-00f067aa0ba902b7-01");
    let url = format!("https://api.test:{gateway_https}/cgi-bin/trace");
    let (code, body) = curl("api.test", gateway_https, &url, &ca_file, &[&sent]);
    assert_eq!(code, 200, "{body}");
    let received = body.trim().strip_prefix("traceparent=").unwrap_or_default();
    assert!(received.starts_with(&format!("00-{trace}-")), "{body}");
    assert!(
        !received.contains("00f067aa0ba902b7"),
        "a new parent: {body}"
    );
    let (_, body) = curl("api.test", gateway_https, &url, &ca_file, &[]);
    assert_eq!(body.trim().len(), "traceparent=".len() + 55, "{body}");

    // Status, as kubectl shows it: the node's address, Programmed.
    let kubectl = Kubectl::for_cluster(cluster);
    let gateways = wait_for("the Gateway to be programmed", MINUTE, || {
        let table = kubectl.ok(&["get", "gateways"]);
        table.contains("True").then_some(table)
    });
    let words = |table: &str, line: usize| -> Vec<String> {
        let line = table.lines().nth(line).unwrap_or_default();
        line.split_whitespace().map(str::to_string).collect()
    };
    assert_eq!(
        words(&gateways, 0),
        ["NAME", "CLASS", "ADDRESS", "PROGRAMMED", "AGE"]
    );
    assert_eq!(
        words(&gateways, 1)[..4],
        ["edge", "c4m", "127.0.0.1", "True"]
    );
    let routes = kubectl.ok(&["get", "httproutes"]);
    assert_eq!(
        words(&routes, 1)[..2],
        ["api", r#"["api.test"]"#],
        "{routes}"
    );
    assert!(row(cluster, "ingresses", "site").contains("127.0.0.1"));
    let route = &cluster.list("httproutes")[0];
    let parent = &route["status"]["parents"][0];
    assert_eq!(parent["controllerName"], "c4m.io/gateway", "{route}");
    let conditions: Vec<(&str, &str)> = parent["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["type"].as_str().unwrap(), c["status"].as_str().unwrap()))
        .collect();
    assert_eq!(conditions, [("Accepted", "True"), ("ResolvedRefs", "True")]);

    // An invalid route is refused, naming the field, through c4m and
    // kubectl alike; nothing changes.
    let bad = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: bad}\n\
               spec:\n  rules: [{matches: [{path: {type: PathPrefix, value: api}}]}]\n";
    let refused = cluster.c4m_with_stdin(&["apply", "-f", "-"], bad);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("spec.rules[0].matches[0].path.value"),
        "{stderr}"
    );
    let file = cluster.dir.path().join("bad-route.yaml");
    std::fs::write(&file, bad).unwrap();
    let stderr = kubectl.fails(&["apply", "-f", file.to_str().unwrap()]);
    assert!(
        stderr.contains(r#"The HTTPRoute "bad" is invalid: spec.rules[0].matches[0].path.value"#),
        "{stderr}"
    );
    assert_eq!(cluster.list("httproutes").len(), 1);

    // A route of another namespace sending to Service default/api: its
    // share gets 500 and its status says RefNotPermitted until a
    // ReferenceGrant in `default` allows it.
    cluster.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n");
    cluster.apply(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {name: cross, namespace: shop}\nspec:\n  parentRefs: [{name: edge, namespace: default}]\n  \
         hostnames: [cross.test]\n  rules: [{backendRefs: [{name: api, namespace: default, port: 80}]}]\n",
    );
    let resolved = |expected: &str| {
        wait_for(&format!("ResolvedRefs {expected}"), MINUTE, || {
            let routes = cluster.list("httproutes");
            let cross = routes.iter().find(|r| r["metadata"]["name"] == "cross")?;
            let conditions = cross["status"]["parents"][0]["conditions"].as_array()?;
            let resolved = conditions.iter().find(|c| c["type"] == "ResolvedRefs")?;
            (resolved["reason"] == expected).then_some(())
        })
    };
    resolved("RefNotPermitted");
    assert_eq!(get(gateway_http, "cross.test", "/api/").unwrap().0, 500);
    cluster.apply(
        "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\n\
         metadata: {name: shop-routes}\nspec:\n  \
         from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: shop}]\n  \
         to: [{group: \"\", kind: Service}]\n",
    );
    resolved("ResolvedRefs");
    let answer = wait_for("the granted route to answer", MINUTE, || {
        get(gateway_http, "cross.test", "/api/").filter(|(code, _)| *code == 200)
    });
    assert!(answer.1.contains("api api-"), "{}", answer.1);
}

/// The HTTPRoute `api` on the Gateway `edge`'s plain listener, with
/// `annotations` (YAML flow map entries) and the response header
/// `x-version: VERSION`.
fn versioned_route(version: u32, annotations: &str) -> String {
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: api, annotations: {{{annotations}}}}}
spec:
  parentRefs: [{{name: edge}}]
  hostnames: [api.test]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /api}}}}]
    filters: [{{type: ResponseHeaderModifier, responseHeaderModifier: {{set: [{{name: x-version, value: "{version}"}}]}}}}]
    backendRefs: [{{name: api, port: 80}}]
"#
    )
}

#[test]
#[ignore = "needs root + runc + conmon + nftables + curl"]
fn route_updates_drop_no_request_and_a_rate_limit_holds_its_rate() {
    let edge = start_edge(UPDATES_VPC);
    let cluster = &edge.cluster;
    let port = free_port();
    cluster.apply(&app("api"));
    cluster.apply(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: edge}}\n\
         spec:\n  gatewayClassName: c4m\n  listeners: [{{name: http, port: {port}, protocol: HTTP}}]\n"
    ));
    cluster.apply(&versioned_route(0, ""));
    cluster.wait_ready("app=api", 1, MINUTE);
    wait_for("the route to answer", MINUTE, || {
        get(port, "api.test", "/api/").filter(|(code, _)| *code == 200)
    });

    // A steady client while the route changes twenty times.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let client = {
        let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                sent.fetch_add(1, Ordering::Relaxed);
                match get(port, "api.test", "/api/") {
                    Some((200, _)) => {}
                    other => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        failures.push(format!("{other:?}"));
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            failures
        })
    };
    for version in 1..=20 {
        cluster.apply(&versioned_route(version, ""));
        std::thread::sleep(Duration::from_millis(500));
    }
    wait_for("the last version to be served", MINUTE, || {
        get(port, "api.test", "/api/").filter(|(_, head)| head.contains("x-version: 20"))
    });
    stop.store(true, Ordering::Relaxed);
    let failures = client.join().unwrap();
    let sent = sent.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} of {sent} failed: {failures:?}",
        failures.len()
    );
    assert!(sent > 100, "only {sent} requests");

    // 20/s with a burst of 5, offered 50/s for 10 s: 429 with Retry-After
    // beyond the rate, and the rate held within 5%.
    cluster.apply(&versioned_route(
        21,
        r#""c4m.io/rate-limit": "20/s", "c4m.io/rate-limit-burst": "5""#,
    ));
    let limited = wait_for("the rate limit to apply", MINUTE, || {
        (0..20)
            .filter_map(|_| get(port, "api.test", "/api/"))
            .find(|(code, _)| *code == 429)
    });
    assert!(
        limited.1.to_lowercase().contains("retry-after: "),
        "{}",
        limited.1
    );
    let start = Instant::now();
    let (mut ok, mut refused) = (0u64, 0u64);
    let mut next = start;
    while start.elapsed() < Duration::from_secs(10) {
        match get(port, "api.test", "/api/") {
            Some((200, _)) => ok += 1,
            Some((429, _)) => refused += 1,
            other => panic!("neither 200 nor 429: {other:?}"),
        }
        next += Duration::from_millis(20);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let expected = 20.0 * elapsed;
    eprintln!(
        "rate limit 20/s: {ok} passed in {elapsed:.2} s ({:.2}/s), {refused} refused",
        ok as f64 / elapsed
    );
    assert!(
        refused > ok / 2,
        "the client offered more than the rate: {ok} ok, {refused} refused"
    );
    assert!(
        (ok as f64) >= expected * 0.95 && (ok as f64) <= expected * 1.05 + 5.0,
        "{ok} passed in {elapsed:.2} s ({:.2}/s), {refused} refused: not 20/s within 5%",
        ok as f64 / elapsed
    );

    // The admin endpoint serves the route's metrics to the cluster token only.
    let (code, _) = get(edge.admin, "admin", "/metrics").unwrap();
    assert_eq!(code, 401);
    let wrong = "Authorization: Bearer nope\r\n";
    assert_eq!(
        get_with(edge.admin, "admin", "/metrics", wrong).unwrap().0,
        401
    );
    let token = format!("Authorization: Bearer {ACCESS_TOKEN}.{SECRET_KEY}\r\n");
    let (code, metrics) = get_with(edge.admin, "admin", "/metrics", &token).unwrap();
    assert_eq!(code, 200, "{metrics}");
    assert!(
        metrics.contains(r#"c4m_proxy_requests_total{kind="HTTPRoute",namespace="default",name="api",code="429"}"#),
        "{metrics}"
    );
}
