use super::*;

fn objects(yaml: &str) -> BTreeMap<String, Vec<Arc<Value>>> {
    let mut by_plural: BTreeMap<String, Vec<Arc<Value>>> = BTreeMap::new();
    for doc in c4m_core::parse_documents("test", yaml).unwrap() {
        let value = doc.value;
        let kind = c4m_core::ResourceKind::from_type(
            value["apiVersion"].as_str().unwrap(),
            value["kind"].as_str().unwrap(),
        )
        .unwrap();
        by_plural
            .entry(kind.plural.to_owned())
            .or_default()
            .push(Arc::new(value));
    }
    by_plural
}

const CLUSTER: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: c4m, generation: 1}
spec: {controllerName: c4m.io/gateway}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: theirs}
spec: {controllerName: example.com/else}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: infra, generation: 3}
spec:
  gatewayClassName: c4m
  listeners:
  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
  - name: https
    port: 443
    protocol: HTTPS
    tls: {certificateRefs: [{name: cert, namespace: secrets}]}
  - {name: tcp, port: 9000, protocol: TCP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: other, namespace: infra}
spec:
  gatewayClassName: theirs
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: shop, generation: 2}
spec:
  parentRefs: [{name: edge, namespace: infra}, {name: edge, namespace: infra, sectionName: nope}, {name: other, namespace: infra}]
  rules:
  - backendRefs: [{name: web, port: 80}, {name: api, namespace: infra, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: missing, namespace: shop}
spec:
  parentRefs: [{name: edge, namespace: infra}]
  rules: [{backendRefs: [{name: gone, port: 80}]}]
status:
  parents:
  - parentRef: {name: other, namespace: infra}
    controllerName: example.com/else
    conditions: [{type: Accepted, status: "True", reason: Accepted, message: "", lastTransitionTime: "2026-01-01T00:00:00Z"}]
---
apiVersion: v1
kind: Secret
metadata: {name: cert, namespace: secrets}
type: kubernetes.io/tls
data: {tls.crt: Y2VydA==, tls.key: a2V5}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: c4m, annotations: {ingressclass.kubernetes.io/is-default-class: "true"}}
spec: {controller: c4m.io/ingress}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: shop}
spec:
  rules: [{host: a.test, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: nginx, namespace: shop}
spec:
  ingressClassName: nginx
  rules: [{http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]
"#;

fn statuses(yaml: &str, addresses: &[&str]) -> BTreeMap<String, Value> {
    let objects = objects(yaml);
    let world = World::new(&|plural| objects.get(plural).cloned().unwrap_or_default());
    let translation = world.translate();
    let addresses: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
    let exists = |namespace: &str, name: &str| (namespace, name) == ("shop", "web");
    world
        .statuses(&translation, &addresses, &exists)
        .into_iter()
        .map(|(plural, object, status)| {
            let name = format!("{plural}/{}", object["metadata"]["name"].as_str().unwrap());
            (name, status)
        })
        .collect()
}

/// `(type, status, reason)` of each condition.
fn conditions(conditions: &Value) -> Vec<(String, String, String)> {
    conditions
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (text(&c["type"]), text(&c["status"]), text(&c["reason"])))
        .collect()
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

fn triples(list: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    list.iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect()
}

#[test]
fn classes_gateways_routes_and_ingresses_get_gateway_api_statuses() {
    let statuses = statuses(CLUSTER, &["10.0.0.2", "10.0.0.1"]);
    assert_eq!(
        statuses.keys().collect::<Vec<_>>(),
        [
            "gatewayclasses/c4m",
            "gateways/edge",
            "httproutes/missing",
            "httproutes/shop",
            "ingresses/web"
        ],
        "nothing of another controller"
    );
    assert_eq!(
        conditions(&statuses["gatewayclasses/c4m"]["conditions"]),
        triples(&[("Accepted", "True", "Accepted")])
    );
    assert_eq!(
        statuses["gatewayclasses/c4m"]["conditions"][0]["observedGeneration"],
        1
    );

    let gateway = &statuses["gateways/edge"];
    assert_eq!(
        gateway["addresses"],
        json!([{"type": "IPAddress", "value": "10.0.0.2"}, {"type": "IPAddress", "value": "10.0.0.1"}])
    );
    assert_eq!(
        conditions(&gateway["conditions"]),
        triples(&[
            ("Accepted", "True", "ListenersNotValid"),
            ("Programmed", "True", "Programmed")
        ])
    );
    let listeners = gateway["listeners"].as_array().unwrap();
    assert_eq!(listeners.len(), 3);
    assert_eq!(listeners[0]["attachedRoutes"], 2, "shop and missing");
    assert_eq!(
        listeners[1]["attachedRoutes"], 0,
        "shop namespace not allowed"
    );
    assert_eq!(listeners[0]["supportedKinds"][0]["kind"], "HTTPRoute");
    // The Secret is in another namespace and no ReferenceGrant allows it.
    assert_eq!(
        conditions(&listeners[1]["conditions"]),
        triples(&[
            ("Accepted", "True", "Accepted"),
            ("Programmed", "False", "Invalid"),
            ("ResolvedRefs", "False", "RefNotPermitted"),
            ("Conflicted", "False", "NoConflicts")
        ])
    );
    assert_eq!(
        conditions(&listeners[2]["conditions"])[0],
        (
            "Accepted".into(),
            "False".into(),
            "UnsupportedProtocol".into()
        )
    );
    assert_eq!(listeners[2]["supportedKinds"], json!([]));
    assert_eq!(listeners[2]["conditions"][0]["observedGeneration"], 3);

    let shop = statuses["httproutes/shop"]["parents"].as_array().unwrap();
    assert_eq!(shop.len(), 2, "not the parent of another controller");
    assert_eq!(
        shop[0]["parentRef"],
        json!({"name": "edge", "namespace": "infra"})
    );
    assert_eq!(shop[0]["controllerName"], "c4m.io/gateway");
    assert_eq!(
        conditions(&shop[0]["conditions"]),
        triples(&[
            ("Accepted", "True", "Accepted"),
            ("ResolvedRefs", "False", "RefNotPermitted")
        ])
    );
    assert_eq!(
        conditions(&shop[1]["conditions"])[0],
        ("Accepted".into(), "False".into(), "NoMatchingParent".into())
    );
    let missing = statuses["httproutes/missing"]["parents"]
        .as_array()
        .unwrap();
    assert_eq!(missing.len(), 2, "another controller's entry is kept");
    assert_eq!(missing[0]["controllerName"], "example.com/else");
    assert_eq!(
        conditions(&missing[1]["conditions"])[1],
        (
            "ResolvedRefs".into(),
            "False".into(),
            "BackendNotFound".into()
        )
    );

    assert_eq!(
        statuses["ingresses/web"],
        json!({"loadBalancer": {"ingress": [{"ip": "10.0.0.2"}, {"ip": "10.0.0.1"}]}})
    );
}

#[test]
fn without_gateway_nodes_nothing_is_programmed_and_times_stay_put() {
    let statuses_now = statuses(CLUSTER, &[]);
    let gateway = &statuses_now["gateways/edge"];
    assert_eq!(
        conditions(&gateway["conditions"])[1],
        (
            "Programmed".into(),
            "False".into(),
            "AddressNotAssigned".into()
        )
    );
    assert_eq!(gateway["addresses"], json!([]));
    // Once stored, the same conditions keep their transition time.
    let stored = CLUSTER.replace(
        "metadata: {name: edge, namespace: infra, generation: 3}",
        &format!(
            "metadata: {{name: edge, namespace: infra, generation: 3}}\nstatus: {}",
            serde_json::to_string(&gateway).unwrap()
        ),
    );
    let mut earlier = gateway.clone();
    for c in earlier["conditions"].as_array_mut().unwrap() {
        c["lastTransitionTime"] = json!("2026-01-01T00:00:00Z");
    }
    let stored = stored.replace(
        &serde_json::to_string(&gateway).unwrap(),
        &serde_json::to_string(&earlier).unwrap(),
    );
    let again = statuses(&stored, &[]);
    assert_eq!(
        again["gateways/edge"]["conditions"], earlier["conditions"],
        "unchanged, so nothing to write"
    );
}

#[test]
fn admission_names_the_field() {
    let route = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"rules": [{"matches": [{"path": {"type": "Exact", "value": "api"}}]}]}});
    let (field, message) = check(&route).unwrap_err();
    assert_eq!(field, "spec.rules[0].matches[0].path.value");
    assert!(message.contains("must start with"), "{message}");
    assert!(check(&json!({"kind": "ConfigMap"})).is_ok());
}

#[tokio::test]
async fn ingresses_naming_no_class_get_the_default_one() {
    let (_dir, _store, objects) = crate::test_support::store_with_default_namespace().await;
    let ingress = |spec: Value, annotations: Value| {
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"generateName": "web-", "annotations": annotations}, "spec": spec})
    };
    let create = |object: Value| {
        let objects = objects.clone();
        async move {
            objects
                .create(kind("ingresses"), "default", object)
                .await
                .unwrap()
        }
    };
    let before = create(ingress(json!({}), json!({}))).await;
    assert!(before["spec"]["ingressClassName"].is_null(), "no class yet");
    ensure_default_classes(&objects).await.unwrap();
    ensure_default_classes(&objects).await.unwrap(); // again: no error
    let defaulted = create(ingress(json!({}), json!({}))).await;
    assert_eq!(defaulted["spec"]["ingressClassName"], "c4m");
    let named = create(ingress(json!({"ingressClassName": "nginx"}), json!({}))).await;
    assert_eq!(named["spec"]["ingressClassName"], "nginx");
    let legacy = create(ingress(
        json!({}),
        json!({"kubernetes.io/ingress.class": "nginx"}),
    ))
    .await;
    assert!(legacy["spec"]["ingressClassName"].is_null());
}
