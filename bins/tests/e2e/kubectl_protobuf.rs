//! kubectl's `create` commands, which send built-in kinds as Kubernetes
//! protobuf (`application/vnd.kubernetes.protobuf`) and ask for protobuf
//! back, against `c4m up`: each command's exit code and output, then the
//! stored objects read back as JSON.

use base64::Engine as _;

use crate::common::Cluster;
use crate::common::kubectl::Kubectl;

#[test]
#[ignore = "needs kubectl"]
fn kubectl_creates_built_in_kinds_over_protobuf() {
    let mut cluster = Cluster::start();
    cluster.start_hollow_agents("p", 1, "4", "4Gi");
    let kubectl = Kubectl::for_cluster(&cluster);

    // kubectl -v=8 logs the headers: the body went as protobuf and the
    // answer came back as protobuf.
    let output = kubectl.run(&["create", "namespace", "shop", "-v=8"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "namespace/shop created"
    );
    assert!(
        stderr.contains("Content-Type: application/vnd.kubernetes.protobuf"),
        "the request or answer was not protobuf:\n{stderr}"
    );
    let namespace = kubectl.json(&["get", "namespace", "shop"]);
    assert_eq!(namespace["metadata"]["name"], "shop");

    assert_eq!(
        kubectl
            .ok(&[
                "create",
                "configmap",
                "settings",
                "-n",
                "shop",
                "--from-literal=color=blue",
                "--from-literal=size=3",
            ])
            .trim(),
        "configmap/settings created"
    );
    let settings = kubectl.json(&["get", "configmap", "settings", "-n", "shop"]);
    assert_eq!(settings["data"]["color"], "blue");
    assert_eq!(settings["data"]["size"], "3");

    // Secret data is bytes in protobuf and base64 in JSON.
    assert_eq!(
        kubectl
            .ok(&[
                "create",
                "secret",
                "generic",
                "login",
                "-n",
                "shop",
                "--from-literal=password=s3cr3t!",
            ])
            .trim(),
        "secret/login created"
    );
    let login = kubectl.json(&["get", "secret", "login", "-n", "shop"]);
    let password = base64::engine::general_purpose::STANDARD
        .decode(login["data"]["password"].as_str().unwrap())
        .unwrap();
    assert_eq!(password, b"s3cr3t!");
    // The API server's default: kubectl sends no type.
    assert_eq!(login["type"], "Opaque");

    assert_eq!(
        kubectl
            .ok(&[
                "create",
                "deployment",
                "web",
                "-n",
                "shop",
                "--image=busybox:1.36",
                "--replicas=2",
                "--port=8080",
                "--",
                "sleep",
                "infinity",
            ])
            .trim(),
        "deployment.apps/web created"
    );
    let web = kubectl.json(&["get", "deployment", "web", "-n", "shop"]);
    assert_eq!(web["spec"]["replicas"], 2);
    let container = &web["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "busybox:1.36");
    assert_eq!(
        container["command"],
        serde_json::json!(["sleep", "infinity"])
    );
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    assert_eq!(web["spec"]["selector"]["matchLabels"]["app"], "web");

    // Creating one again is refused as Kubernetes refuses it (the error
    // comes back as a protobuf Status).
    let stderr = kubectl.fails(&["create", "namespace", "shop"]);
    assert!(
        stderr.contains("namespaces \"shop\" already exists"),
        "{stderr}"
    );

    // Reading over protobuf: `kubectl get` of one object with -o json asks
    // for protobuf first.
    let output = kubectl.run(&[
        "get",
        "configmap",
        "settings",
        "-n",
        "shop",
        "-o",
        "name",
        "-v=8",
    ]);
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "configmap/settings"
    );
}

/// Lists in chunks: `kubectl get --chunk-size` walks every page, and the
/// raw pages carry `continue` and `remainingItemCount`.
#[test]
#[ignore = "needs kubectl"]
fn kubectl_lists_in_chunks() {
    let cluster = Cluster::start();
    let kubectl = Kubectl::for_cluster(&cluster);
    for index in 0..7 {
        let name = format!("settings-{index}");
        let out = kubectl.ok(&["create", "configmap", &name, "--from-literal=a=1"]);
        assert_eq!(out.trim(), format!("configmap/{name} created"));
    }
    let names = kubectl.ok(&["get", "configmaps", "--chunk-size=3", "-o", "name"]);
    let names: Vec<&str> = names.lines().collect();
    let expected: Vec<String> = (0..7).map(|i| format!("configmap/settings-{i}")).collect();
    assert_eq!(names, expected);
    let table = kubectl.ok(&["get", "configmaps", "--chunk-size=2", "--no-headers"]);
    assert_eq!(table.lines().count(), 7, "{table}");

    let path = "/api/v1/namespaces/default/configmaps?limit=3";
    let first: serde_json::Value =
        serde_json::from_str(&kubectl.ok(&["get", "--raw", path])).unwrap();
    assert_eq!(first["items"].as_array().unwrap().len(), 3);
    assert_eq!(first["metadata"]["remainingItemCount"], 4);
    let token = first["metadata"]["continue"].as_str().unwrap();
    let second: serde_json::Value =
        serde_json::from_str(&kubectl.ok(&["get", "--raw", &format!("{path}&continue={token}")]))
            .unwrap();
    assert_eq!(second["items"][0]["metadata"]["name"], "settings-3");
    assert_eq!(
        second["metadata"]["resourceVersion"],
        first["metadata"]["resourceVersion"]
    );
    let stderr = kubectl.fails(&["get", "--raw", &format!("{path}&continue=garbage")]);
    assert!(stderr.contains("continue"), "{stderr}");
}
