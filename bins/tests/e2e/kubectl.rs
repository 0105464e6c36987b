//! The real kubectl against a running c4m: a kubeconfig from
//! `c4m kubeconfig`, then discovery, tables, apply (create, then change and
//! re-apply), get (-o json/yaml, -l, -w), patch, scale and delete, each
//! command's exit code and output asserted. Instances run on hollow nodes.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use crate::common::kubectl::Kubectl;
use crate::common::{BOOKSHOP, Cluster, wait_for};
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
    let deployment = sleeping_deployment(
        "hello",
        replicas,
        "  labels: {app: hello}\n",
        &format!(
            "          env:\n            - {{name: GREETING, value: \"{greeting}\"}}\n\
             \x20         ports:\n            - {{name: http, containerPort: 8080}}\n\
             \x20         resources: {{requests: {{cpu: 100m, memory: 32Mi}}}}\n"
        ),
    );
    format!(
        r#"{deployment}---
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
#[ignore = "needs kubectl"]
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

    // explain: the kinds' schemas, with Kubernetes' descriptions.
    let explained = kubectl.ok(&["explain", "deployment.spec.replicas"]);
    assert!(
        explained.contains("KIND:       Deployment")
            && explained.contains("FIELD: replicas <integer>")
            && explained.contains("Number of desired pods"),
        "{explained}"
    );
    let explained = kubectl.ok(&["explain", "pods.spec.containers"]);
    assert!(
        explained.contains("FIELD: containers <[]Container>")
            && explained.contains("readinessProbe\t<Probe>"),
        "{explained}"
    );
    let missing = kubectl.fails(&["explain", "deployment.spec.nothing"]);
    assert!(
        missing.contains("field \"nothing\" does not exist"),
        "{missing}"
    );

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
    let service_rows = rows(&services);
    let hello = row(&service_rows, "hello");
    assert_eq!(hello[1], "ClusterIP");
    assert!(hello[2].starts_with("10.96."), "{services}");
    assert_eq!(hello[3..5], ["<none>", "80/TCP"]);
    let all = kubectl.ok(&["get", "deploy", "-A"]);
    assert_eq!(row(&rows(&all), "default")[1], "hello");

    // A server-side dry run answers as the write would, and writes nothing.
    std::fs::write(&path, manifest(5, "dry")).unwrap();
    let dry = kubectl.ok(&["apply", "--dry-run=server", "-f", file]);
    assert!(
        dry.contains("deployment.apps/hello configured (server dry run)"),
        "{dry}"
    );
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

    // Invalid values: a 422 whose causes kubectl prints field by field.
    let refused = kubectl.fails(&[
        "patch",
        "deployment",
        "hello",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"hello","command":["sleep"],"ports":[{"containerPort":70000}]}]}}}}"#,
    ]);
    assert_eq!(
        refused.trim(),
        "The Deployment \"hello\" is invalid: spec.template.spec.containers[0].ports[0].containerPort: \
         Invalid value: 70000: must be between 1 and 65535, found 70000",
    );
    std::fs::write(
        &typo,
        manifest(2, "hi").replace("replicas: 2", "replicas: -2"),
    )
    .unwrap();
    let refused = kubectl.fails(&["apply", "-f", typo.to_str().unwrap()]);
    assert!(
        refused.contains(
            "The Deployment \"hello\" is invalid: spec.replicas: Invalid value: -2: must not be negative"
        ),
        "{refused}"
    );

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
#[ignore = "needs kubectl"]
fn kubectl_without_the_token_is_refused() {
    let cluster = Cluster::start();
    let text = cluster.ok(&["kubeconfig"]);
    let config: Value = serde_yaml::from_str(&text).unwrap();
    let token = config["users"][0]["user"]["token"].as_str().unwrap();
    assert_eq!(
        token,
        format!(
            "{}.{}",
            crate::common::ACCESS_TOKEN,
            crate::common::SECRET_KEY
        )
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
        crate::common::http_get(&format!("127.0.0.1:{}", cluster.api), "/api/v1/pods").unwrap();
    assert_eq!(code, 401, "{body}");
    let wrong = Kubectl::with_config(&cluster, "wrong", &text.replace(token, "nope.nope"));
    let stderr = wrong.fails(&["get", "pods"]);
    assert!(stderr.contains("logged in"), "{stderr}");
}

/// A Deployment `name` of one container sleeping, selecting `app: NAME`;
/// `metadata` and `container` are extra YAML lines (already indented).
fn sleeping_deployment(name: &str, replicas: u32, metadata: &str, container: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
{metadata}spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
        - name: main
          command: ["sleep", "infinity"]
{container}"#
    )
}

fn web_deployment(replicas: u32, greeting: &str) -> String {
    sleeping_deployment(
        "web",
        replicas,
        &format!("  annotations: {{kubernetes.io/change-cause: \"greeting {greeting}\"}}\n"),
        &format!("          env:\n            - {{name: GREETING, value: \"{greeting}\"}}\n"),
    )
}

/// `kubectl rollout history`'s table, without its title line.
fn history_rows(history: &str) -> Vec<Vec<String>> {
    rows(history)
        .into_iter()
        .filter(|r| !r.is_empty())
        .skip(1)
        .collect()
}

/// `kubectl rollout history`'s rows for revisions and their greetings.
fn history_table(revisions: &[(&str, &str)]) -> Vec<Vec<String>> {
    std::iter::once(vec!["REVISION".to_string(), "CHANGE-CAUSE".to_string()])
        .chain(revisions.iter().map(|(revision, greeting)| {
            vec![
                revision.to_string(),
                "greeting".into(),
                greeting.to_string(),
            ]
        }))
        .collect()
}

/// The GREETING of the Deployment's template.
fn greeting(kubectl: &Kubectl) -> Value {
    kubectl.json(&["get", "deployment", "web"])["spec"]["template"]["spec"]["containers"][0]["env"]
        [0]["value"]
        .clone()
}

/// `kubectl rollout status` until the rollout is done.
fn rolled_out(kubectl: &Kubectl) {
    assert_eq!(
        kubectl
            .ok(&["rollout", "status", "deployment/web", "--timeout=30s"])
            .lines()
            .last(),
        Some("deployment \"web\" successfully rolled out")
    );
}

/// A cluster of `nodes` hollow nodes, kubectl for it, and the path of a
/// manifest file `name` in its directory.
fn hollow_cluster(nodes: usize, name: &str) -> (Cluster, Kubectl, PathBuf) {
    let mut cluster = Cluster::start();
    cluster.start_hollow_agents(&name[..1], nodes, "4", "4Gi");
    let kubectl = Kubectl::for_cluster(&cluster);
    let path = cluster.dir.path().join(name);
    (cluster, kubectl, path)
}

#[test]
#[ignore = "needs kubectl"]
fn kubectl_rolls_out_and_back() {
    let (cluster, kubectl, path) = hollow_cluster(2, "web.yaml");
    let file = path.to_str().unwrap();

    // Revision 1: one ReplicaSet, named and labelled by its template hash.
    std::fs::write(&path, web_deployment(2, "v1")).unwrap();
    kubectl.ok(&["apply", "-f", file]);
    rolled_out(&kubectl);
    let deployment = kubectl.json(&["get", "deployment", "web"]);
    assert_eq!(
        deployment["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    assert_eq!(
        deployment["status"]["observedGeneration"],
        deployment["metadata"]["generation"]
    );
    let replica_sets = kubectl.json(&["get", "rs", "-l", "app=web"]);
    let items = replica_sets["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{replica_sets}");
    let first = items[0]["metadata"]["name"].as_str().unwrap().to_string();
    let hash = items[0]["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap();
    assert_eq!(first, format!("web-{hash}"));
    assert_eq!(
        items[0]["metadata"]["ownerReferences"][0]["uid"],
        deployment["metadata"]["uid"]
    );
    let table = kubectl.ok(&["get", "rs"]);
    assert_eq!(
        header(&table),
        ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]
    );
    assert_eq!(row(&rows(&table), &first)[1..4], ["2", "2", "2"]);
    let pods = kubectl.ok(&[
        "get",
        "pods",
        "-l",
        &format!("pod-template-hash={hash}"),
        "-o",
        "name",
    ]);
    assert_eq!(pods.lines().count(), 2, "{pods}");
    assert!(
        pods.lines()
            .all(|p| p.starts_with(&format!("pod/{first}-"))),
        "{pods}"
    );

    // Revision 2: a changed template rolls to a second ReplicaSet.
    std::fs::write(&path, web_deployment(2, "v2")).unwrap();
    kubectl.ok(&["apply", "-f", file]);
    rolled_out(&kubectl);
    let table = wait_for("the old ReplicaSet to scale to 0", WAIT, || {
        let table = kubectl.ok(&["get", "rs"]);
        (rows(&table).len() == 3 && row(&rows(&table), &first)[1..4] == ["0", "0", "0"])
            .then_some(table)
    });
    let second = rows(&table)
        .into_iter()
        .skip(1)
        .find(|r| r[0] != first)
        .unwrap();
    assert_eq!(second[1..4], ["2", "2", "2"], "{table}");
    let second = second[0].clone();
    let history = kubectl.ok(&["rollout", "history", "deployment/web"]);
    assert_eq!(
        history_rows(&history),
        history_table(&[("1", "v1"), ("2", "v2")]),
        "{history}"
    );
    let revision_one = kubectl.ok(&["rollout", "history", "deployment/web", "--revision=1"]);
    assert!(
        revision_one.contains("GREETING:") && revision_one.contains("v1"),
        "{revision_one}"
    );
    let described = kubectl.ok(&["describe", "deployment", "web"]);
    let field = |name: &str| {
        described
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|rest| rest.split_whitespace().collect::<Vec<_>>().join(" "))
    };
    assert_eq!(
        field("NewReplicaSet:"),
        Some(format!("{second} (2/2 replicas created)")),
        "{described}"
    );
    assert_eq!(
        field("OldReplicaSets:"),
        Some(format!("{first} (0/0 replicas created)")),
        "{described}"
    );

    // undo: back to revision 1's template, whose ReplicaSet becomes revision 3.
    assert_eq!(
        kubectl.ok(&["rollout", "undo", "deployment/web"]),
        "deployment.apps/web rolled back\n"
    );
    rolled_out(&kubectl);
    assert_eq!(greeting(&kubectl), "v1");
    let history = wait_for("revision 3 in the history", WAIT, || {
        let history = kubectl.ok(&["rollout", "history", "deployment/web"]);
        history.contains("\n3 ").then_some(history)
    });
    assert_eq!(
        history_rows(&history),
        history_table(&[("2", "v2"), ("3", "v1")]),
        "{history}"
    );
    let table = kubectl.ok(&["get", "rs"]);
    assert_eq!(rows(&table).len(), 3, "no new ReplicaSet: {table}");
    assert_eq!(
        kubectl.json(&["get", "rs", &first])["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    cluster.wait_ready(&format!("pod-template-hash={hash}"), 2, WAIT);

    // undo to a named revision; an unknown one is an error.
    let unknown = kubectl.fails(&["rollout", "undo", "deployment/web", "--to-revision=9"]);
    assert!(
        unknown.contains("unable to find specified revision 9"),
        "{unknown}"
    );
    assert_eq!(
        kubectl.ok(&["rollout", "undo", "deployment/web", "--to-revision=2"]),
        "deployment.apps/web rolled back\n"
    );
    rolled_out(&kubectl);
    assert_eq!(greeting(&kubectl), "v2");

    // scale, then rollout status follows it.
    assert_eq!(
        kubectl.ok(&["scale", "deployment/web", "--replicas=3"]),
        "deployment.apps/web scaled\n"
    );
    rolled_out(&kubectl);
    assert_eq!(kubectl.json(&["get", "rs", &second])["spec"]["replicas"], 3);

    // pause and resume (their effect: deletion.rs).
    assert_eq!(
        kubectl.ok(&["rollout", "pause", "deployment/web"]),
        "deployment.apps/web paused\n"
    );
    kubectl.ok(&["rollout", "resume", "deployment/web"]);

    // Deleting the Deployment collects its ReplicaSets and instances.
    kubectl.ok(&["delete", "deployment", "web"]);
    cluster.wait_gone("app=web", WAIT);
    wait_for("the ReplicaSets to go", WAIT, || {
        kubectl.json(&["get", "rs"])["items"]
            .as_array()
            .is_some_and(Vec::is_empty)
            .then_some(())
    });
}

fn ssa_manifest(replicas: u32, labels: &str) -> String {
    sleeping_deployment("ssa", replicas, &format!("  labels: {{{labels}}}\n"), "")
}

#[test]
#[ignore = "needs kubectl"]
fn kubectl_server_side_apply() {
    let (cluster, kubectl, path) = hollow_cluster(1, "ssa.yaml");
    let file = path.to_str().unwrap();

    // Created by server-side apply, its fields owned by the manager "kubectl".
    std::fs::write(&path, ssa_manifest(2, "app: ssa, tier: web")).unwrap();
    assert_eq!(
        kubectl.ok(&["apply", "--server-side", "-f", file]),
        "deployment.apps/ssa serverside-applied\n"
    );
    cluster.wait_ready("app=ssa", 2, WAIT);
    let managed = kubectl.json(&["get", "deployment", "ssa", "--show-managed-fields"]);
    let entry = &managed["metadata"]["managedFields"][0];
    assert_eq!(entry["manager"], "kubectl", "{managed}");
    assert_eq!(entry["operation"], "Apply");
    assert_eq!(
        entry["fieldsV1"]["f:spec"]["f:replicas"],
        serde_json::json!({})
    );

    // Another manager changing spec.replicas: a conflict naming both.
    std::fs::write(&path, ssa_manifest(3, "app: ssa")).unwrap();
    let refused = kubectl.fails(&[
        "apply",
        "--server-side",
        "--field-manager=deployer",
        "-f",
        file,
    ]);
    assert!(
        refused.contains(
            "Apply failed with 1 conflict: conflict with \"kubectl\" using apps/v1: .spec.replicas"
        ),
        "{refused}"
    );
    assert_eq!(
        kubectl.json(&["get", "deployment", "ssa"])["spec"]["replicas"],
        2
    );
    // Forced, the field changes hands.
    assert_eq!(
        kubectl.ok(&[
            "apply",
            "--server-side",
            "--field-manager=deployer",
            "--force-conflicts",
            "-f",
            file
        ]),
        "deployment.apps/ssa serverside-applied\n"
    );
    cluster.wait_ready("app=ssa", 3, WAIT);
    let managed = kubectl.json(&["get", "deployment", "ssa", "--show-managed-fields"]);
    let managers: Vec<&str> = managed["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["manager"].as_str().unwrap())
        .collect();
    assert_eq!(managers, ["kubectl", "deployer"], "{managed}");

    // "kubectl" stops applying the label tier (which only it owns: it goes)
    // and spec.replicas (which "deployer" owns now: it stays).
    std::fs::write(
        &path,
        ssa_manifest(3, "app: ssa").replace("  replicas: 3\n", ""),
    )
    .unwrap();
    kubectl.ok(&["apply", "--server-side", "-f", file]);
    let deployment = kubectl.json(&["get", "deployment", "ssa"]);
    assert_eq!(
        deployment["metadata"]["labels"],
        serde_json::json!({"app": "ssa"})
    );
    assert_eq!(deployment["spec"]["replicas"], 3);
}

/// The environment of the running process whose command line is `command`.
fn process_environment(command: &[&str]) -> Option<std::collections::BTreeMap<String, String>> {
    let wanted: Vec<u8> = command.join("\0").into_bytes();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if !cmdline.starts_with(&wanted) {
            continue;
        }
        let environ = std::fs::read(entry.path().join("environ")).ok()?;
        return Some(
            environ
                .split(|b| *b == 0)
                .filter_map(|pair| {
                    let text = String::from_utf8_lossy(pair);
                    let (key, value) = text.split_once('=')?;
                    Some((key.to_string(), value.to_string()))
                })
                .collect(),
        );
    }
    None
}

/// `examples/k8s-realistic`, a dozen Deployments and Services written for
/// Kubernetes, applies unchanged: every object is created, every field c4m
/// does not honour is named in a warning, and every service rolls out with
/// its probes, resources and environment from ConfigMaps, Secrets and the
/// downward API.
#[test]
#[ignore = "needs kubectl"]
fn kubectl_applies_a_realistic_manifest_set() {
    let mut cluster = Cluster::start();
    cluster.start_agent("node-a", "8", "4Gi");
    let kubectl = Kubectl::for_cluster(&cluster);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/k8s-realistic");
    let output = kubectl.run(&["apply", "-f", dir.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");

    let services = BOOKSHOP;
    let mut expected: BTreeSet<String> = [
        "namespace/bookshop created",
        "configmap/bookshop-config created",
        "configmap/gateway-routes created",
        "secret/bookshop-db created",
        "secret/payments-keys created",
    ]
    .into_iter()
    .map(str::to_string)
    .collect();
    for account in ["gateway", "checkout", "payments", "accounts"] {
        expected.insert(format!("serviceaccount/{account} created"));
    }
    for service in services {
        expected.insert(format!("deployment.apps/{service} created"));
        expected.insert(format!("service/{service} created"));
    }
    let applied: BTreeSet<String> = stdout.lines().map(str::to_string).collect();
    assert_eq!(applied, expected, "{stdout}");

    // What c4m does not honour is reported, by object and field; nothing else.
    let ignored: BTreeSet<String> = ["gateway", "checkout", "payments", "accounts"]
        .iter()
        .map(|d| {
            format!(
                "Warning: Deployment {d}: spec.template.spec.serviceAccountName is accepted but has no effect"
            )
        })
        .collect();
    let warnings: BTreeSet<String> = stderr.lines().map(str::to_string).collect();
    assert_eq!(warnings, ignored, "{stderr}");

    for service in services {
        let status = kubectl.ok(&[
            "rollout",
            "status",
            &format!("deployment/{service}"),
            "-n",
            "bookshop",
            "--timeout=60s",
        ]);
        assert!(status.contains("successfully rolled out"), "{status}");
    }
    let pods = kubectl.ok(&["get", "pods", "-n", "bookshop", "--no-headers"]);
    assert_eq!(pods.lines().count(), 15, "{pods}");
    assert!(
        pods.lines()
            .all(|l| l.contains("1/1") && l.contains("Running")),
        "{pods}"
    );
    let endpoints = kubectl.json(&["get", "endpoints", "catalog", "-n", "bookshop"]);
    let addresses: usize = endpoints["subsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["addresses"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(addresses, 2, "{endpoints}");

    // The environment from a Secret (keyed and whole), a ConfigMap and the
    // downward API reached the process.
    let environment = process_environment(&["c4m-demo", "--name", "payments"])
        .expect("the payments process runs");
    assert_eq!(
        environment["PAYMENTS_API_KEY"],
        "sk_test_4eC39hqLyjWDarjtT1zdp7dc"
    );
    assert_eq!(
        environment["DATABASE_URL"],
        "postgres://bookshop:s3cret@postgres.bookshop:5432/bookshop"
    );
    assert_eq!(environment["LOG_LEVEL"], "info");
    assert!(
        environment["POD_NAME"].starts_with("payments-"),
        "{environment:?}"
    );
    let environment = process_environment(&["c4m-demo", "--name", "checkout"])
        .expect("the checkout process runs");
    assert_eq!(environment["DATABASE_PASSWORD"], "s3cret");
    let environment = process_environment(&["c4m-demo", "--name", "inventory"])
        .expect("the inventory process runs");
    assert_eq!(environment["CURRENCY"], "EUR");

    // Deleting the namespace: it stays, Terminating, while content remains
    // (a finalizer holds a ConfigMap here), and takes nothing new.
    let set_finalizers = |finalizers: &str| {
        let patch = format!(r#"{{"metadata":{{"finalizers":{finalizers}}}}}"#);
        let args = ["patch", "configmap", "bookshop-config", "-n", "bookshop"];
        kubectl.ok(&[&args[..], &["--type=merge", "-p", &patch]].concat());
    };
    set_finalizers(r#"["example.com/hold"]"#);
    assert_eq!(
        kubectl.ok(&["delete", "namespace", "bookshop", "--wait=false"]),
        "namespace \"bookshop\" deleted\n"
    );
    let refused = kubectl.fails(&["create", "configmap", "late", "-n", "bookshop"]);
    assert!(
        refused.contains(
            "configmaps \"late\" is forbidden: unable to create new content in namespace bookshop because it is being terminated"
        ),
        "{refused}"
    );
    let namespace = wait_for("the namespace to report what holds it", WAIT, || {
        let namespace = kubectl.json(&["get", "namespace", "bookshop"]);
        namespace["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "NamespaceFinalizersRemaining" && c["status"] == "True")
            .then_some(namespace)
    });
    assert_eq!(namespace["status"]["phase"], "Terminating", "{namespace}");
    let listed = kubectl.ok(&["get", "namespace", "bookshop"]);
    assert!(listed.contains("bookshop   Terminating"), "{listed}");
    set_finalizers("null");
    kubectl.ok(&[
        "wait",
        "--for=delete",
        "namespace/bookshop",
        "--timeout=60s",
    ]);
    let gone = kubectl.fails(&["get", "configmap", "bookshop-config", "-n", "bookshop"]);
    assert!(gone.contains("not found"), "{gone}");
    wait_for("the bookshop to stop", WAIT, || {
        process_environment(&["c4m-demo", "--name", "payments"])
            .is_none()
            .then_some(())
    });
}
