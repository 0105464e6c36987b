//! The edge gateway end to end on loopback: real hyper clients and
//! servers, a tonic gRPC service, tokio-tungstenite WebSockets, rustls with
//! rcgen certificates. No root, no daemons.

mod common;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;
use c4m_mesh::gateway::{AdminOptions, AdminTls, GatewayError, GatewayOptions};
use c4m_mesh::proxy::routes::ObjectRef;
use c4m_mesh::proxy::{AppProtocol, ServiceEndpoints, TraceParent};
use common::*;
use futures::{SinkExt, StreamExt};
use http::{Request, StatusCode, Version};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const SHOP_ROUTES: &str = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{name: edge, namespace: infra}]
  hostnames: [shop.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api}}]
    backendRefs: [{name: api, port: 80}]
  - backendRefs: [{name: web, port: 80}]
"#;

#[tokio::test]
async fn http1_and_h2c_route_by_host_and_path_over_pooled_connections() -> Result<()> {
    let s = Scenario::new();
    let (api, web) = (s.upstream("api").await, s.upstream("web").await);
    s.publish("shop", "api", 80, &[&api]);
    s.publish("shop", "web", 80, &[&web]);
    let config = translate_yaml(&format!("{EDGE_HTTP}{SHOP_ROUTES}"), &[]);
    let gw = TestGateway::start(config, s.endpoints.clone(), &[80]).await;
    let addr = gw.addr(80);

    let mut client = H1::connect(addr).await?;
    for _ in 0..20 {
        let answer = client.get("shop.example.com", "/api/items?x=1").await?;
        assert_eq!(
            (answer.status, answer.text().as_str()),
            (StatusCode::OK, "api")
        );
    }
    assert_eq!(
        api.connections.load(Ordering::SeqCst),
        1,
        "20 requests in a row reuse one upstream connection"
    );
    let seen = api.last();
    assert_eq!(seen.uri, "/api/items?x=1");
    assert_eq!(seen.headers["host"], "shop.example.com");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(
        client
            .get("Shop.Example.com:80", "/index.html")
            .await?
            .text(),
        "web"
    );
    assert_eq!(
        client.get("other.example.com", "/api").await?.status,
        StatusCode::NOT_FOUND
    );

    // HTTP/2 with prior knowledge on the same port; the backend gets HTTP/1.1.
    let h2 = H2::connect(addr).await?;
    let answer = h2.get("shop.example.com", "/api/h2").await?;
    assert_eq!(
        (answer.status, answer.version, answer.text().as_str()),
        (StatusCode::OK, Version::HTTP_2, "api")
    );
    let seen = api.last();
    assert_eq!(
        (seen.version, seen.uri.as_str()),
        (Version::HTTP_11, "/api/h2")
    );
    assert_eq!(seen.headers["host"], "shop.example.com");
    assert_eq!(api.connections.load(Ordering::SeqCst), 1);

    let metrics = gw
        .gateway
        .proxy()
        .metrics()
        .route(&ObjectRef::new("HTTPRoute", "shop", "web"))
        .unwrap();
    assert_eq!(metrics.count_of(StatusCode::OK), 22);
    gw.stop().await;
    Ok(())
}

#[tokio::test]
async fn trace_context_is_propagated_with_a_new_span_or_started() -> Result<()> {
    let s = Scenario::new();
    let (api, web) = (s.upstream("api").await, s.upstream("web").await);
    s.publish("shop", "api", 80, &[&api]);
    s.publish("shop", "web", 80, &[&web]);
    let gw = s.gateway(SHOP_ROUTES).await;
    let mut client = H1::connect(gw.addr(80)).await?;

    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let request = Request::builder()
        .uri("/api")
        .header("host", "shop.example.com")
        .header("traceparent", incoming)
        .header("tracestate", "congo=t61rcWkgMzE")
        .body(Full::default())?;
    client.send(request).await?;
    let seen = api.last();
    let forwarded = TraceParent::parse(seen.headers["traceparent"].as_bytes())
        .expect("a valid traceparent upstream");
    let original = TraceParent::parse(incoming.as_bytes()).unwrap();
    assert_eq!(
        (forwarded.trace_id, forwarded.flags),
        (original.trace_id, original.flags)
    );
    assert_ne!(
        forwarded.parent_id, original.parent_id,
        "a new span id for this hop"
    );
    assert_eq!(seen.headers["tracestate"], "congo=t61rcWkgMzE");

    client.get("shop.example.com", "/api").await?;
    let started = TraceParent::parse(api.last().headers["traceparent"].as_bytes())
        .expect("a trace is started");
    assert_ne!(started.trace_id, original.trace_id);
    gw.stop().await;
    Ok(())
}

#[tokio::test]
async fn endpoint_changes_apply_to_the_next_requests() -> Result<()> {
    let s = Scenario::new();
    let (a, b, web) = (
        s.upstream("a").await,
        s.upstream("b").await,
        s.upstream("web").await,
    );
    s.publish("shop", "api", 80, &[&a, &b]);
    s.publish("shop", "web", 80, &[&web]);
    let gw = s.gateway(SHOP_ROUTES).await;
    let mut client = H1::connect(gw.addr(80)).await?;
    let mut names = std::collections::BTreeSet::new();
    for _ in 0..40 {
        names.insert(client.get("shop.example.com", "/api").await?.text());
    }
    assert_eq!(names.len(), 2, "both endpoints serve: {names:?}");

    s.publish("shop", "api", 80, &[&b]);
    for _ in 0..40 {
        assert_eq!(
            client.get("shop.example.com", "/api").await?.text(),
            "b",
            "no new request goes to an endpoint that left"
        );
    }
    s.endpoints.clear(&service("shop", "api", 80));
    assert_eq!(
        client.get("shop.example.com", "/api").await?.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    gw.stop().await;
    Ok(())
}

#[tokio::test]
async fn weighted_backends_split_requests() -> Result<()> {
    let s = Scenario::new();
    let (stable, canary) = (s.upstream("stable").await, s.upstream("canary").await);
    s.publish("shop", "stable", 80, &[&stable]);
    s.publish("shop", "canary", 80, &[&canary]);
    let routes = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: split, namespace: shop}
spec:
  parentRefs: [{name: edge, namespace: infra}]
  rules:
  - backendRefs: [{name: stable, port: 80, weight: 90}, {name: canary, port: 80, weight: 10}]
"#;
    let gw = s.gateway(routes).await;
    let mut client = H1::connect(gw.addr(80)).await?;
    let n = 1000;
    let mut to_canary = 0;
    for _ in 0..n {
        if client.get("any", "/").await?.text() == "canary" {
            to_canary += 1;
        }
    }
    // 10% of 1,000: the standard deviation is 0.95 points; allow 3.5.
    let share = f64::from(to_canary) / f64::from(n);
    assert!(
        (share - 0.10).abs() < 0.035,
        "canary got {to_canary} of {n}"
    );
    gw.stop().await;
    Ok(())
}

#[tokio::test]
async fn redirects_rewrites_and_header_filters() -> Result<()> {
    let s = Scenario::new();
    let api = s.upstream("api").await;
    s.publish("shop", "api", 80, &[&api]);
    let routes = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: filters, namespace: shop}
spec:
  parentRefs: [{name: edge, namespace: infra}]
  hostnames: [shop.example.com]
  rules:
  - matches: [{path: {type: Exact, value: /old}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https, statusCode: 301}}]
  - matches: [{path: {value: /moved}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}, port: 8080}
  - matches: [{path: {value: /api}}]
    filters:
    - type: URLRewrite
      urlRewrite: {hostname: internal.example.com, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-env, value: prod}], add: [{name: x-tag, value: two}], remove: [x-drop]}
    - type: ResponseHeaderModifier
      responseHeaderModifier: {add: [{name: x-served-by, value: c4m}], remove: [x-upstream]}
    backendRefs: [{name: api, port: 80}]
  - matches: [{path: {type: Exact, value: /full}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /replaced}}}]
    backendRefs: [{name: api, port: 80}]
"#;
    let gw = s.gateway(routes).await;
    let mut client = H1::connect(gw.addr(80)).await?;

    let answer = client.get("shop.example.com", "/old").await?;
    assert_eq!(answer.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(answer.headers["location"], "https://shop.example.com/old");
    let answer = client.get("shop.example.com", "/moved/x?q=1").await?;
    assert_eq!(answer.status, StatusCode::FOUND);
    assert_eq!(
        answer.headers["location"],
        "http://shop.example.com:8080/new/x?q=1"
    );
    assert!(api.seen().is_empty(), "redirects never reach the backend");

    let request = Request::builder()
        .uri("/api/items?q=1")
        .header("host", "shop.example.com")
        .header("x-drop", "secret")
        .header("x-tag", "one")
        .body(Full::default())?;
    let answer = client.send(request).await?;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers["x-served-by"], "c4m");
    assert!(!answer.headers.contains_key("x-upstream"));
    let seen = api.last();
    assert_eq!(seen.uri, "/v2/items?q=1");
    assert_eq!(seen.headers["host"], "internal.example.com");
    assert_eq!(seen.headers["x-env"], "prod");
    let tags: Vec<_> = seen
        .headers
        .get_all("x-tag")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(tags, ["one", "two"]);
    assert!(!seen.headers.contains_key("x-drop"));

    client.get("shop.example.com", "/full").await?;
    assert_eq!(api.last().uri, "/replaced");
    gw.stop().await;
    Ok(())
}

#[tokio::test]
async fn request_mirror_sends_a_copy_with_its_body() -> Result<()> {
    let s = Scenario::new();
    let (primary, shadow) = (s.upstream("primary").await, s.upstream("shadow").await);
    s.publish("shop", "primary", 80, &[&primary]);
    s.publish("shop", "shadow", 80, &[&shadow]);
    let routes = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mirrored, namespace: shop}
spec:
  parentRefs: [{name: edge, namespace: infra}]
  rules:
  - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 80}}}]
    backendRefs: [{name: primary, port: 80}]
"#;
    let gw = s.gateway(routes).await;
    let mut client = H1::connect(gw.addr(80)).await?;
    let request = Request::post("/orders")
        .header("host", "shop.example.com")
        .body(Full::new(Bytes::from_static(b"{\"id\":7}")))?;
    assert_eq!(client.send(request).await?.text(), "primary");
    let deadline = Instant::now() + Duration::from_secs(5);
    while shadow.seen().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let copy = shadow.last();
    assert_eq!(
        (copy.method.as_str(), copy.uri.as_str()),
        ("POST", "/orders")
    );
    assert_eq!(copy.body, Bytes::from_static(b"{\"id\":7}"));
    assert_eq!(primary.last().body, copy.body);
    gw.stop().await;
    Ok(())
}

#[tokio::test]
async fn timeouts_and_unusable_backends_answer_5xx() -> Result<()> {
    let s = Scenario::new();
    let slow = s.upstream("slow").await;
    s.publish("shop", "slow", 80, &[&slow]);
    let routes = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: edge-cases, namespace: shop}
spec:
  parentRefs: [{name: edge, namespace: infra}]
  rules:
  - matches: [{path: {value: /slow}}]
    timeouts: {request: 200ms}
    backendRefs: [{name: slow, port: 80}]
  - matches: [{path: {value: /empty}}]
    backendRefs: [{name: nobody-home, port: 80}]
  - matches: [{path: {value: /zero}}]
    backendRefs: [{name: slow, port: 80, weight: 0}]
"#;
    let gw = s.gateway(routes).await;
    let addr = gw.addr(80);
    let started = Instant::now();
    assert_eq!(
        get(addr, "h", "/slow/3000").await?.status,
        StatusCode::GATEWAY_TIMEOUT
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the timeout fired at {:?}",
        started.elapsed()
    );
    assert_eq!(get(addr, "h", "/slow/1").await?.status, StatusCode::OK);
    assert_eq!(
        get(addr, "h", "/empty").await?.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        get(addr, "h", "/zero").await?.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    gw.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_rate_limit_answers_429_with_retry_after() -> Result<()> {
    let s = Scenario::new();
    let api = s.upstream("api").await;
    s.publish("shop", "api", 80, &[&api]);
    let routes = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: limited, namespace: shop, annotations: {c4m.io/rate-limit: 1/m, c4m.io/rate-limit-burst: "2"}}
spec:
  parentRefs: [{name: edge, namespace: infra}]
  rules: [{backendRefs: [{name: api, port: 80}]}]
"#;
    let gw = s.gateway(routes).await;
    let mut client = H1::connect(gw.addr(80)).await?;
    assert_eq!(client.get("h", "/").await?.status, StatusCode::OK);
    assert_eq!(client.get("h", "/").await?.status, StatusCode::OK);
    let refused = client.get("h", "/").await?;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = refused.headers["retry-after"].to_str()?.parse()?;
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(api.seen().len(), 2);
    gw.stop().await;
    Ok(())
}

/// Issue 14: "a rate limit gives 429 beyond the set rate, measured over a
/// window of at least 10 s, within ±5%".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: 10 s window"]
async fn a_rate_limit_holds_within_five_percent_over_ten_seconds() -> Result<()> {
    let s = Scenario::new();
    let api = s.upstream("api").await;
    s.publish("shop", "api", 80, &[&api]);
    let routes = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: limited, namespace: shop, annotations: {c4m.io/rate-limit: 100/s, c4m.io/rate-limit-burst: "10"}}
spec:
  parentRefs: [{name: edge, namespace: infra}]
  rules: [{backendRefs: [{name: api, port: 80}]}]
"#;
    let gw = s.gateway(routes).await;
    let addr = gw.addr(80);
    let window = Duration::from_secs(10);
    let started = Instant::now();
    let (allowed, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (allowed, refused) = (allowed.clone(), refused.clone());
        clients.push(tokio::spawn(async move {
            // Each client offers 100 requests/s, paced (a client looping as
            // fast as it can would starve the gateway of CPU on a small
            // machine and measure the scheduler, not the limiter).
            let mut client = H1::connect(addr).await?;
            let mut pace = tokio::time::interval(Duration::from_millis(10));
            while started.elapsed() < window {
                pace.tick().await;
                let answer = client.get("h", "/").await?;
                match answer.status {
                    StatusCode::OK => allowed.fetch_add(1, Ordering::Relaxed),
                    StatusCode::TOO_MANY_REQUESTS => {
                        assert!(answer.headers.contains_key("retry-after"));
                        refused.fetch_add(1, Ordering::Relaxed)
                    }
                    other => anyhow::bail!("unexpected {other}"),
                };
            }
            anyhow::Ok(())
        }));
    }
    for client in clients {
        client.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let allowed = allowed.load(Ordering::Relaxed) as f64;
    let refused = refused.load(Ordering::Relaxed);
    // The rate over the window, plus the burst the limiter starts with.
    let expected = 100.0 * elapsed + 10.0;
    println!("allowed {allowed} in {elapsed:.2} s (expected {expected:.0}), refused {refused}");
    assert!(
        refused as f64 > allowed,
        "the offered load (4x the limit) must exceed it for the test to mean anything"
    );
    assert!(
        (allowed - expected).abs() / expected <= 0.05,
        "allowed {allowed}, expected {expected:.0} ±5%"
    );
    gw.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_drop_no_request_under_steady_load() -> Result<()> {
    let s = Scenario::new();
    let (blue, green) = (s.upstream("blue").await, s.upstream("green").await);
    s.publish("shop", "blue", 80, &[&blue]);
    s.publish("shop", "green", 80, &[&green]);
    let route = |backend: &str, header: &str| {
        translate_yaml(
            &format!(
                r#"{EDGE_HTTP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: live, namespace: shop}}
spec:
  parentRefs: [{{name: edge, namespace: infra}}]
  rules:
  - filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: x-config, value: {header}}}]}}}}]
    backendRefs: [{{name: {backend}, port: 80}}]
"#
            ),
            &[],
        )
    };
    let (to_blue, to_green) = (route("blue", "a"), route("green", "b"));
    let gw = TestGateway::start(to_blue.clone(), s.endpoints.clone(), &[80]).await;
    let addr = gw.addr(80);

    let running = Arc::new(AtomicBool::new(true));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for i in 0..3 {
        let (running, ok, failed) = (running.clone(), ok.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            // Two HTTP/1.1 keep-alive clients and one HTTP/2 client, each on
            // one connection for the whole test: a dropped connection fails.
            let mut h1 = if i < 2 {
                Some(H1::connect(addr).await?)
            } else {
                None
            };
            let h2 = if i == 2 {
                Some(H2::connect(addr).await?)
            } else {
                None
            };
            while running.load(Ordering::Relaxed) {
                let answer = match (&mut h1, &h2) {
                    (Some(h1), _) => h1.get("shop.example.com", "/").await,
                    (None, Some(h2)) => h2.get("shop.example.com", "/").await,
                    _ => unreachable!(),
                };
                match answer {
                    Ok(answer) if answer.status == StatusCode::OK => {
                        ok.fetch_add(1, Ordering::Relaxed)
                    }
                    other => {
                        eprintln!("client {i}: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
            anyhow::Ok(())
        }));
    }
    let reloads = 200;
    for n in 0..reloads {
        let config = if n % 2 == 0 {
            to_green.clone()
        } else {
            to_blue.clone()
        };
        gw.gateway.reload(config)?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    running.store(false, Ordering::Relaxed);
    for client in clients {
        client.await??;
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("{ok} requests across {reloads} reloads, {failed} failed");
    assert_eq!(failed, 0, "no request may fail across reloads");
    assert!(ok > 200, "the clients kept sending ({ok} requests)");
    assert!(
        !blue.seen().is_empty() && !green.seen().is_empty(),
        "both configurations served"
    );
    // Each request saw one configuration whole: its header matches its backend.
    for seen in blue.seen() {
        assert_eq!(seen.headers["x-config"], "a");
    }
    for seen in green.seen() {
        assert_eq!(seen.headers["x-config"], "b");
    }
    gw.stop().await;
    Ok(())
}

#[tokio::test]
async fn shutdown_drains_requests_in_flight() -> Result<()> {
    let s = Scenario::new();
    let slow = s.upstream("slow").await;
    s.publish("shop", "api", 80, &[&slow]);
    s.publish("shop", "web", 80, &[&slow]);
    let gw = s.gateway(SHOP_ROUTES).await;
    let addr = gw.addr(80);
    let mut client = H1::connect(addr).await?;
    let in_flight = tokio::spawn(async move { client.get("shop.example.com", "/slow/600").await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    gw.shutdown.cancel();
    let answer = in_flight.await??;
    assert_eq!(
        (answer.status, answer.text().as_str()),
        (StatusCode::OK, "slow"),
        "the request in flight finished"
    );
    tokio::time::timeout(Duration::from_secs(5), gw.gateway.stopped()).await?;
    assert!(
        get(addr, "shop.example.com", "/").await.is_err(),
        "no new connection after shutdown"
    );
    Ok(())
}

#[tokio::test]
async fn tls_certificates_are_chosen_by_sni_with_h2_by_alpn() -> Result<()> {
    let s = Scenario::new();
    let api = s.upstream("api").await;
    s.publish("shop", "api", 80, &[&api]);
    let ca = Ca::new("test CA");
    let (cert_a, cert_b) = (
        ca.server(&["a.example.com"]),
        ca.server(&["*.b.example.com"]),
    );
    let secrets = [
        tls_secret("infra", "cert-a", &cert_a),
        tls_secret("shop", "cert-b", &cert_b),
    ];
    let yaml = r#"
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
  - name: a
    port: 443
    protocol: HTTPS
    hostname: a.example.com
    tls: {certificateRefs: [{name: cert-a}]}
    allowedRoutes: {namespaces: {from: All}}
  - name: b
    port: 443
    protocol: HTTPS
    hostname: "*.b.example.com"
    tls: {certificateRefs: [{name: cert-b, namespace: shop}]}
    allowedRoutes: {namespaces: {from: All}}
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: gateway-certs, namespace: shop}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: infra}]
  to: [{group: "", kind: Secret}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: secure, namespace: shop}
spec:
  parentRefs: [{name: edge, namespace: infra}]
  rules: [{backendRefs: [{name: api, port: 80}]}]
"#;
    let gw = TestGateway::start(translate_yaml(yaml, &secrets), s.endpoints.clone(), &[443]).await;
    let addr = gw.addr(443);

    let h1_config = ca.client_config(&[b"http/1.1"], None);
    let stream = tls_connect(addr, "a.example.com", h1_config.clone()).await?;
    assert_eq!(
        stream.get_ref().1.peer_certificates().unwrap()[0],
        cert_a.der,
        "SNI a gets certificate a"
    );
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let answer = H1::over(TokioIo::new(stream))
        .await?
        .get("a.example.com", "/")
        .await?;
    assert_eq!(
        (answer.status, answer.text().as_str()),
        (StatusCode::OK, "api")
    );
    assert_eq!(api.last().headers["x-forwarded-proto"], "https");

    let h2_config = ca.client_config(&[b"h2", b"http/1.1"], None);
    let stream = tls_connect(addr, "x.b.example.com", h2_config).await?;
    assert_eq!(
        stream.get_ref().1.peer_certificates().unwrap()[0],
        cert_b.der,
        "SNI x.b gets certificate b"
    );
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let answer = H2::over(TokioIo::new(stream))
        .await?
        .get("x.b.example.com", "/")
        .await?;
    assert_eq!(
        (answer.status, answer.version),
        (StatusCode::OK, Version::HTTP_2)
    );

    // A name no listener serves has no certificate: the handshake fails.
    assert!(tls_connect(addr, "c.example.com", h1_config).await.is_err());
    gw.stop().await;
    Ok(())
}

#[tokio::test]
async fn ingress_routes_over_tls_and_redirects_plain_http() -> Result<()> {
    let s = Scenario::new();
    let (shop, blog) = (s.upstream("shop").await, s.upstream("blog").await);
    s.publish("web", "shop", 8080, &[&shop]);
    s.publish("web", "blog", 8080, &[&blog]);
    let ca = Ca::new("test CA");
    let secrets = [tls_secret(
        "web",
        "site-tls",
        &ca.server(&["shop.example.com", "blog.example.com"]),
    )];
    let yaml = r#"
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: c4m, annotations: {ingressclass.kubernetes.io/is-default-class: "true"}}
spec: {controller: c4m.io/gateway}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: site, namespace: web}
spec:
  tls: [{hosts: [shop.example.com, blog.example.com], secretName: site-tls}]
  rules:
  - host: shop.example.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: shop, port: {number: 8080}}}}]}
  - host: blog.example.com
    http: {paths: [{path: /posts, pathType: Prefix, backend: {service: {name: blog, port: {number: 8080}}}}]}
"#;
    let gw = TestGateway::start(
        translate_yaml(yaml, &secrets),
        s.endpoints.clone(),
        &[80, 443],
    )
    .await;
    let config = ca.client_config(&[b"http/1.1"], None);
    for (host, path, name) in [
        ("shop.example.com", "/cart", "shop"),
        ("blog.example.com", "/posts/1", "blog"),
    ] {
        let stream = tls_connect(gw.addr(443), host, config.clone()).await?;
        let answer = H1::over(TokioIo::new(stream))
            .await?
            .get(host, path)
            .await?;
        assert_eq!(
            (answer.status, answer.text().as_str()),
            (StatusCode::OK, name)
        );
    }
    let answer = get(gw.addr(80), "shop.example.com", "/cart?x=1").await?;
    assert_eq!(answer.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        answer.headers["location"],
        "https://shop.example.com/cart?x=1"
    );
    gw.stop().await;
    Ok(())
}

#[tokio::test]
async fn websocket_upgrades_pass_through() -> Result<()> {
    let s = Scenario::new();
    // A WebSocket echo server.
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let ws_addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_text() || message.is_binary() {
                        ws.send(message).await.unwrap();
                    }
                }
            });
        }
    });
    s.endpoints.set(
        service("chat", "ws", 80),
        ServiceEndpoints::http1([ws_addr]),
    );
    let routes = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: chat, namespace: chat}
spec:
  parentRefs: [{name: edge, namespace: infra}]
  hostnames: [chat.example.com]
  rules: [{backendRefs: [{name: ws, port: 80}]}]
"#;
    let gw = s.gateway(routes).await;
    let stream = tokio::net::TcpStream::connect(gw.addr(80)).await?;
    let (mut ws, response) =
        tokio_tungstenite::client_async("ws://chat.example.com/socket", stream).await?;
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    for i in 0..5 {
        ws.send(tokio_tungstenite::tungstenite::Message::text(format!(
            "hello {i}"
        )))
        .await?;
        let echo = ws.next().await.expect("an echo")?;
        assert_eq!(echo.into_text()?.as_str(), format!("hello {i}"));
    }
    ws.close(None).await?;
    // The tunnel lasts as long as the client's connection; a drain waits for it.
    drop(ws);
    gw.stop().await;
    Ok(())
}

// A gRPC echo service written against tonic's server API directly (no
// code generation, so no protoc).
#[derive(Clone, PartialEq, prost::Message)]
struct Echo {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(uint32, tag = "2")]
    count: u32,
}

#[derive(Clone)]
struct EchoServer;

struct Say;
impl tonic::server::UnaryService<Echo> for Say {
    type Response = Echo;
    type Future = std::future::Ready<Result<tonic::Response<Echo>, tonic::Status>>;
    fn call(&mut self, request: tonic::Request<Echo>) -> Self::Future {
        let message = request.into_inner();
        std::future::ready(if message.text == "fail" {
            Err(tonic::Status::not_found("no such echo"))
        } else {
            Ok(tonic::Response::new(Echo {
                text: format!("echo: {}", message.text),
                count: 1,
            }))
        })
    }
}

struct Repeat;
impl tonic::server::ServerStreamingService<Echo> for Repeat {
    type Response = Echo;
    type ResponseStream = futures::stream::Iter<std::vec::IntoIter<Result<Echo, tonic::Status>>>;
    type Future = std::future::Ready<Result<tonic::Response<Self::ResponseStream>, tonic::Status>>;
    fn call(&mut self, request: tonic::Request<Echo>) -> Self::Future {
        let message = request.into_inner();
        let items: Vec<_> = (0..message.count)
            .map(|i| {
                Ok(Echo {
                    text: format!("{} {i}", message.text),
                    count: i,
                })
            })
            .collect();
        std::future::ready(Ok(tonic::Response::new(futures::stream::iter(items))))
    }
}

type Codec = tonic_prost::ProstCodec<Echo, Echo>;

impl<B> tower::Service<Request<B>> for EchoServer
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(Codec::default());
            Ok(match request.uri().path() {
                "/echo.Echo/Say" => grpc.unary(Say, request).await,
                "/echo.Echo/Repeat" => grpc.server_streaming(Repeat, request).await,
                _ => tonic::Status::unimplemented("no such method").into_http(),
            })
        })
    }
}

#[tokio::test]
async fn grpc_unary_streaming_and_errors_keep_their_trailers() -> Result<()> {
    let s = Scenario::new();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let grpc_addr = listener.local_addr()?;
    let server_stop = s.stop.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => accepted.unwrap(),
                () = server_stop.cancelled() => return,
            };
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder
                    .serve_connection(
                        TokioIo::new(stream),
                        hyper_util::service::TowerToHyperService::new(EchoServer),
                    )
                    .await;
            });
        }
    });
    // appProtocol is not set: a GRPCRoute's backends get HTTP/2 regardless.
    s.endpoints.set(
        service("rpc", "echo", 50051),
        ServiceEndpoints {
            addrs: vec![grpc_addr],
            protocol: AppProtocol::Http1,
        },
    );
    let routes = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo, namespace: rpc}
spec:
  parentRefs: [{name: edge, namespace: infra}]
  rules:
  - matches: [{method: {service: echo.Echo}}]
    backendRefs: [{name: echo, port: 50051}]
"#;
    let gw = s.gateway(routes).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", gw.addr(80)))?
        .connect()
        .await?;
    let mut client = tonic::client::Grpc::new(channel);

    client.ready().await?;
    let path = http::uri::PathAndQuery::from_static("/echo.Echo/Say");
    let reply = client
        .unary(
            tonic::Request::new(Echo {
                text: "hi".into(),
                count: 0,
            }),
            path.clone(),
            Codec::default(),
        )
        .await?;
    assert_eq!(reply.into_inner().text, "echo: hi");

    client.ready().await?;
    let status = client
        .unary(
            tonic::Request::new(Echo {
                text: "fail".into(),
                count: 0,
            }),
            path,
            Codec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (tonic::Code::NotFound, "no such echo"),
        "grpc-status came through"
    );

    client.ready().await?;
    let path = http::uri::PathAndQuery::from_static("/echo.Echo/Repeat");
    let mut stream = client
        .server_streaming(
            tonic::Request::new(Echo {
                text: "n".into(),
                count: 5,
            }),
            path,
            Codec::default(),
        )
        .await?
        .into_inner();
    let mut got = Vec::new();
    while let Some(message) = stream.message().await? {
        got.push(message.text);
    }
    assert_eq!(
        got,
        ["n 0", "n 1", "n 2", "n 3", "n 4"],
        "the stream ended with its trailers, status OK"
    );

    client.ready().await?;
    let path = http::uri::PathAndQuery::from_static("/echo.Other/Say");
    let status = client
        .unary(tonic::Request::new(Echo::default()), path, Codec::default())
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        tonic::Code::Unimplemented,
        "no route: the gateway's 404 is read as unimplemented: {status:?}"
    );
    gw.stop().await;
    Ok(())
}

#[tokio::test]
async fn the_admin_endpoint_serves_only_authenticated_callers() -> Result<()> {
    let s = Scenario::new();
    let api = s.upstream("api").await;
    s.publish("shop", "api", 80, &[&api]);
    s.publish("shop", "web", 80, &[&api]);
    let config = translate_yaml(&format!("{EDGE_HTTP}{SHOP_ROUTES}"), &[]);

    // Bearer token.
    let options = GatewayOptions {
        admin: Some(AdminOptions {
            addr: "127.0.0.1:0".parse()?,
            bearer_token: Some("s3cret".into()),
            tls: None,
        }),
        ..Default::default()
    };
    let gw = TestGateway::start_with(config.clone(), s.endpoints.clone(), &[80], options).await;
    get(gw.addr(80), "shop.example.com", "/api").await?;
    let admin = gw.gateway.admin_addr().unwrap();
    let metrics = |token: Option<&'static str>| async move {
        let mut request = Request::builder().uri("/metrics").header("host", "admin");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        H1::connect(admin)
            .await?
            .send(request.body(Full::default())?)
            .await
    };
    assert_eq!(metrics(None).await?.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        metrics(Some("wrong")).await?.status,
        StatusCode::UNAUTHORIZED
    );
    let answer = metrics(Some("s3cret")).await?;
    assert_eq!(answer.status, StatusCode::OK);
    let text = answer.text();
    assert!(text.contains("c4m_proxy_requests_total{kind=\"HTTPRoute\",namespace=\"shop\",name=\"web\",code=\"200\"} 1"), "{text}");
    assert!(text.contains("c4m_proxy_request_duration_seconds_count{kind=\"HTTPRoute\",namespace=\"shop\",name=\"web\"} 1"), "{text}");
    assert!(text.contains("c4m_gateway_connections_total "), "{text}");
    gw.stop().await;

    // Client certificates of the admin CA, over TLS; no token.
    let ca = Ca::new("admin CA");
    let server = ca.server(&["admin.local"]);
    let options = GatewayOptions {
        admin: Some(AdminOptions {
            addr: "127.0.0.1:0".parse()?,
            bearer_token: None,
            tls: Some(AdminTls {
                chain_pem: server.chain_pem.clone().into_bytes(),
                key_pem: server.key_pem.clone().into_bytes(),
                client_ca_pem: Some(ca.cert_pem.clone().into_bytes()),
            }),
        }),
        ..Default::default()
    };
    let gw = TestGateway::start_with(config.clone(), s.endpoints.clone(), &[80], options).await;
    let admin = gw.gateway.admin_addr().unwrap();
    let scraper = ca.client("prometheus");
    let with_cert =
        tls_connect(admin, "admin.local", ca.client_config(&[], Some(&scraper))).await?;
    assert_eq!(
        H1::over(TokioIo::new(with_cert))
            .await?
            .get("admin.local", "/metrics")
            .await?
            .status,
        StatusCode::OK
    );
    let without = tls_connect(admin, "admin.local", ca.client_config(&[], None)).await?;
    assert_eq!(
        H1::over(TokioIo::new(without))
            .await?
            .get("admin.local", "/metrics")
            .await?
            .status,
        StatusCode::UNAUTHORIZED
    );
    let stranger = Ca::new("other CA").client("intruder");
    assert!(
        async {
            H1::over(TokioIo::new(
                tls_connect(admin, "admin.local", ca.client_config(&[], Some(&stranger))).await?,
            ))
            .await?
            .get("admin.local", "/metrics")
            .await
        }
        .await
        .is_err(),
        "a certificate of another CA fails the handshake"
    );
    gw.stop().await;

    // Neither: refused at start.
    let mut options = GatewayOptions {
        admin: Some(AdminOptions {
            addr: "127.0.0.1:0".parse()?,
            bearer_token: None,
            tls: None,
        }),
        ..Default::default()
    };
    options.bind_overrides.insert(80, "127.0.0.1:0".parse()?);
    let error = c4m_mesh::gateway::Gateway::start(
        config,
        s.endpoints.clone(),
        options,
        CancellationToken::new(),
    )
    .unwrap_err();
    assert!(
        matches!(error, GatewayError::AdminUnauthenticated),
        "{error}"
    );
    Ok(())
}
