//! The real kubectl against a running c4m: a kubeconfig from
//! `c4m kubeconfig`, then discovery, tables, apply (create, then change and
//! re-apply), get (-o json/yaml, -l, -w), patch, scale and delete, each
//! command's exit code and output asserted. Instances run on hollow nodes.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::kubectl::Kubectl;
use common::{Cluster, wait_for};
use serde_json::Value;

/// A table's rows, each split into its cells.
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .map(|line| line.split_whitespace().map(str::to_string).collect())
        .collect()
}

fn header(table: &str) -> Vec<String> {
    rows(table).into_iter().next().unwrap_or_default()
}

fn row<'a>(rows: &'a [Vec<String>], name: &str) -> &'a Vec<String> {
    rows.iter()
        .find(|r| r.first().is_some_and(|n| n == name))
        .unwrap_or_else(|| panic!("no row {name} in {rows:?}"))
}

fn manifest(replicas: u32, greeting: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: hello
  labels: {{app: hello}}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: hello}}
  template:
    metadata:
      labels: {{app: hello}}
    spec:
      containers:
        - name: hello
          command: ["sleep", "infinity"]
          env:
            - {{name: GREETING, value: "{greeting}"}}
          ports:
            - {{name: http, containerPort: 8080}}
          resources: {{requests: {{cpu: 100m, memory: 32Mi}}}}
---
apiVersion: v1
kind: Service
metadata:
  name: hello
spec:
  selector: {{app: hello}}
  ports:
    - {{port: 80, targetPort: 8080}}
---
apiVersion: c4m.io/v1
kind: Microservice
metadata:
  name: notes
  labels: {{app: notes}}
spec:
  replicas: 1
  command: ["sleep", "infinity"]
  resources:
    requests: {{cpu: 100m, memory: 32Mi}}
"#
    )
}

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn kubectl_drives_c4m() {
    let mut cluster = Cluster::start();
    cluster.start_hollow_agents("h", 2, "4", "4Gi");
    let kubectl = Kubectl::for_cluster(&cluster);

    // Discovery.
    let version = kubectl.json(&["version"]);
    assert!(
        version["serverVersion"]["gitVersion"]
            .as_str()
            .is_some_and(|v| v.contains("c4m")),
        "{version}"
    );
    let resources = rows(&kubectl.ok(&["api-resources"]));
    assert_eq!(
        resources[0],
        ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    );
    assert_eq!(
        row(&resources, "microservices")[1..],
        ["ms", "c4m.io/v1", "true", "Microservice"]
    );
    assert_eq!(
        row(&resources, "deployments")[1..],
        ["deploy", "apps/v1", "true", "Deployment"]
    );
    assert_eq!(row(&resources, "nodes")[1..], ["no", "v1", "false", "Node"]);
    assert!(row(&resources, "pods")[1].split(',').any(|s| s == "po"));

    // Nodes as a table.
    let nodes = kubectl.ok(&["get", "nodes"]);
    assert_eq!(
        header(&nodes),
        ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    );
    assert_eq!(row(&rows(&nodes), "h-0")[1], "Ready");

    // apply: create.
    let path = cluster.dir.path().join("hello.yaml");
    std::fs::write(&path, manifest(2, "hi")).unwrap();
    let file = path.to_str().unwrap();
    assert_eq!(
        kubectl.ok(&["apply", "-f", file]),
        "deployment.apps/hello created\nservice/hello created\nmicroservice.c4m.io/notes created\n"
    );
    cluster.wait_ready("app=hello", 2, WAIT);
    cluster.wait_ready("app=notes", 1, WAIT);

    let pods = kubectl.ok(&["get", "pods"]);
    assert_eq!(
        header(&pods),
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    );
    let pod_rows = rows(&pods);
    assert_eq!(pod_rows.len(), 4, "{pods}");
    assert!(
        pod_rows[1..]
            .iter()
            .all(|r| r[1] == "1/1" && r[2] == "Running" && r[3] == "0"),
        "{pods}"
    );
    let wide = kubectl.ok(&["get", "pods", "-o", "wide"]);
    assert!(header(&wide).contains(&"NODE".to_string()), "{wide}");
    let deployments = wait_for("the deployment to report 2/2", WAIT, || {
        let table = kubectl.ok(&["get", "deployments"]);
        (row(&rows(&table), "hello")[1] == "2/2").then_some(table)
    });
    assert_eq!(
        header(&deployments),
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    );
    assert_eq!(row(&rows(&deployments), "hello")[1..4], ["2/2", "2", "2"]);
    let microservices = kubectl.ok(&["get", "microservices"]);
    assert_eq!(header(&microservices), ["NAME", "REPLICAS", "READY", "AGE"]);
    assert_eq!(row(&rows(&microservices), "notes")[1], "1");
    let services = kubectl.ok(&["get", "svc", "hello"]);
    assert_eq!(
        row(&rows(&services), "hello")[1..3],
        ["ClusterIP", "80/TCP"]
    );
    let all = kubectl.ok(&["get", "deploy", "-A"]);
    assert_eq!(row(&rows(&all), "default")[1], "hello");

    // A server-side dry run is refused, and writes nothing.
    std::fs::write(&path, manifest(5, "dry")).unwrap();
    let refused = kubectl.fails(&["apply", "--dry-run=server", "-f", file]);
    assert!(refused.contains("dryRun is not supported"), "{refused}");
    assert_eq!(
        kubectl.json(&["get", "deployment", "hello"])["spec"]["replicas"],
        2
    );
    std::fs::write(&path, manifest(2, "hi")).unwrap();

    // apply: unchanged, then changed (replicas, env) and re-applied.
    assert_eq!(
        kubectl.ok(&["apply", "-f", file]),
        "deployment.apps/hello unchanged\nservice/hello unchanged\nmicroservice.c4m.io/notes unchanged\n"
    );
    std::fs::write(
        &path,
        manifest(3, "hello").replace("replicas: 1", "replicas: 2"),
    )
    .unwrap();
    assert_eq!(
        kubectl.ok(&["apply", "-f", file]),
        "deployment.apps/hello configured\nservice/hello unchanged\nmicroservice.c4m.io/notes configured\n"
    );
    cluster.wait_ready("app=hello", 3, WAIT);
    cluster.wait_ready("app=notes", 2, WAIT);

    // get -o json / yaml: the object kubectl applied is the one c4m shows.
    let deployment = kubectl.json(&["get", "deployment", "hello"]);
    assert_eq!(deployment["kind"], "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["env"],
        serde_json::json!([{"name": "GREETING", "value": "hello"}])
    );
    assert!(
        deployment["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );
    let shown: Value =
        serde_json::from_str(&cluster.ok(&["get", "deployment", "hello", "-o", "json"])).unwrap();
    assert_eq!(shown["metadata"]["uid"], deployment["metadata"]["uid"]);
    assert_eq!(shown["spec"]["replicas"], 3);
    let yaml = kubectl.ok(&["get", "svc", "hello", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: Service") && yaml.contains("port: 80"),
        "{yaml}"
    );

    // -l selectors.
    let selected = kubectl.ok(&["get", "pods", "-l", "app=hello", "-o", "name"]);
    assert_eq!(selected.lines().count(), 3, "{selected}");
    assert!(selected.lines().all(|l| l.starts_with("pod/hello-")));
    let list = kubectl.json(&["get", "pods", "-l", "app in (notes)"]);
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    let none = kubectl.run(&["get", "pods", "-l", "app=nothing"]);
    assert!(none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("No resources found"));

    // -w: the current rows, then changes as they happen.
    let mut watch = kubectl
        .command(&["get", "deployments", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    kubectl.ok(&["label", "deployment", "hello", "tier=web"]);
    std::thread::sleep(Duration::from_secs(2));
    watch.kill().unwrap();
    let watched = String::from_utf8(watch.wait_with_output().unwrap().stdout).unwrap();
    assert_eq!(
        header(&watched),
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{watched}"
    );
    assert!(
        rows(&watched).iter().filter(|r| r[0] == "hello").count() >= 2,
        "the label change should show as a second row: {watched}"
    );

    // patch: merge and JSON patch; a failing JSON patch changes nothing.
    assert_eq!(
        kubectl.ok(&[
            "patch",
            "deployment",
            "hello",
            "--type",
            "merge",
            "-p",
            r#"{"metadata":{"labels":{"tier":"front"}}}"#
        ]),
        "deployment.apps/hello patched\n"
    );
    let failed = kubectl.fails(&[
        "patch",
        "deployment",
        "hello",
        "--type",
        "json",
        "-p",
        r#"[{"op":"test","path":"/spec/replicas","value":7},{"op":"replace","path":"/spec/replicas","value":9}]"#,
    ]);
    assert!(failed.contains("JSON patch"), "{failed}");
    let deployment = kubectl.json(&["get", "deployment", "hello"]);
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert_eq!(deployment["metadata"]["labels"]["tier"], "front");

    // The status subresource takes patches too, and leaves the spec alone.
    let patched: Value = serde_json::from_str(&kubectl.ok(&[
        "patch",
        "deployment",
        "hello",
        "--subresource",
        "status",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"replicas":9},"status":{"observedGeneration":99}}"#,
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(patched["status"]["observedGeneration"], 99);
    assert_eq!(patched["spec"]["replicas"], 3);

    // A manifest with a misspelt field is refused, naming it; nothing is written.
    let typo = cluster.dir.path().join("typo.yaml");
    std::fs::write(
        &typo,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: typo}\ndatta: {a: b}\n",
    )
    .unwrap();
    let refused = kubectl.fails(&["apply", "-f", typo.to_str().unwrap()]);
    assert!(refused.contains("datta"), "{refused}");
    let missing = kubectl.fails(&["get", "configmap", "typo"]);
    assert!(missing.contains("not found"), "{missing}");

    // scale.
    assert_eq!(
        kubectl.ok(&["scale", "deployment", "hello", "--replicas", "1"]),
        "deployment.apps/hello scaled\n"
    );
    cluster.wait_ready("app=hello", 1, WAIT);

    // delete: the objects and the instances go.
    assert_eq!(
        kubectl.ok(&["delete", "-f", file]),
        "deployment.apps \"hello\" deleted\nservice \"hello\" deleted\nmicroservice.c4m.io \"notes\" deleted\n"
    );
    cluster.wait_gone("app=hello", WAIT);
    cluster.wait_gone("app=notes", WAIT);
    let stderr = kubectl.fails(&["get", "deployment", "hello"]);
    assert!(
        stderr.contains("NotFound") || stderr.contains("not found"),
        "{stderr}"
    );
}

#[test]
fn kubectl_without_the_token_is_refused() {
    let cluster = Cluster::start();
    let text = cluster.ok(&["kubeconfig"]);
    let config: Value = serde_yaml::from_str(&text).unwrap();
    let token = config["users"][0]["user"]["token"].as_str().unwrap();
    assert_eq!(
        token,
        format!("{}.{}", common::ACCESS_TOKEN, common::SECRET_KEY)
    );
    assert!(
        config["clusters"][0]["cluster"]["server"]
            .as_str()
            .unwrap()
            .starts_with("https://")
    );
    // Without a token kubectl asks for a user name on a 401, and stdin is
    // empty: either way it gets nothing.
    let anonymous = Kubectl::with_config(&cluster, "anonymous", &text.replace(token, ""));
    let stderr = anonymous.fails(&["get", "pods"]);
    assert!(
        ["Unauthorized", "logged in", "EOF"]
            .iter()
            .any(|s| stderr.contains(s)),
        "{stderr}"
    );
    let (code, body) =
        common::http_get(&format!("127.0.0.1:{}", cluster.api), "/api/v1/pods").unwrap();
    assert_eq!(code, 401, "{body}");
    let wrong = Kubectl::with_config(&cluster, "wrong", &text.replace(token, "nope.nope"));
    let stderr = wrong.fails(&["get", "pods"]);
    assert!(stderr.contains("logged in"), "{stderr}");
}
