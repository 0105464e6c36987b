//! The `oci` driver end to end: a real control plane and agent (as root,
//! with runc/crun and conmon), an image built here from busybox and
//! imported with `c4m image import`, instances that pick the driver with
//! `runtimeClassName: oci`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::oci::require_oci;
use crate::common::*;
use c4m_testkit::Registry;
use serde_json::Value;

const MINUTE: Duration = Duration::from_secs(60);

fn deployment(name: &str, image: &str, script: &str) -> String {
    driver_deployment("oci", name, image, script, None)
}

#[test]
#[ignore = "needs root + runc + conmon + docker-registry + skopeo"]
fn instances_run_in_oci_containers_from_imported_images() {
    require_oci();
    let mut cluster = Cluster::start();
    cluster.start_agent("n1", "4", "4Gi");
    cluster.offered_driver("oci");

    let tar = busybox_image_tar(cluster.dir.path());
    let imported = cluster.ok(&["image", "import", tar.to_str().unwrap(), "--name", "bb"]);
    assert!(imported.contains("docker.io/library/bb:1"), "{imported}");
    let listed = cluster.ok(&["image", "ls"]);
    assert!(listed.contains("docker.io/library/bb:1"), "{listed}");

    cluster.apply(&deployment(
        "box",
        "bb:1",
        "echo hello-from-oci; cat /etc/marker; exec sleep 1000",
    ));
    let pods = cluster.wait_ready("app=box", 1, MINUTE);
    let name = pods[0]["metadata"]["name"].as_str().unwrap().to_string();
    let logs = wait_for("the instance's output", MINUTE, || {
        let text = cluster.ok(&["logs", &name]);
        text.contains("from-image").then_some(text)
    });
    assert!(logs.starts_with("hello-from-oci\n"), "{logs}");

    // An image the node does not have, from a registry that is not there
    // (a loopback port nothing listens on): the instance says so.
    cluster.apply(&deployment("ghost", "127.0.0.1:1/nope:7", "true"));
    let message = wait_for("the missing image to be reported", MINUTE, || {
        let pods = cluster.instances_of("app=ghost");
        let text = pods.first().map(Value::to_string).unwrap_or_default();
        text.contains("not in this node's image store")
            .then_some(text)
    });
    assert!(message.contains("nope:7"), "{message}");

    // From a registry on loopback: `c4m image pull`, and a pull on demand
    // for an instance whose image the node does not have yet.
    let registry = Registry::start(cluster.dir.path());
    let layout = busybox_layout(cluster.dir.path(), "layout", &["/bin/sh"]);
    for tag in ["1", "2"] {
        registry.push_oci_layout(&layout, "1", &format!("team/bb:{tag}"));
    }
    let pulled = cluster.ok(&[
        "image",
        "pull",
        &format!("127.0.0.1:{}/team/bb:1", registry.port()),
    ]);
    assert!(
        pulled.starts_with(&format!(
            "pulled 127.0.0.1:{}/team/bb:1 sha256:",
            registry.port()
        )),
        "{pulled}"
    );
    cluster.apply(&deployment(
        "pulled",
        &format!("127.0.0.1:{}/team/bb:2", registry.port()),
        "echo pulled-on-demand; exec sleep 1000",
    ));
    let pods = cluster.wait_ready("app=pulled", 1, MINUTE);
    let name = pods[0]["metadata"]["name"].as_str().unwrap().to_string();
    wait_for("the pulled instance's output", MINUTE, || {
        cluster
            .ok(&["logs", &name])
            .contains("pulled-on-demand")
            .then_some(())
    });
    assert!(
        cluster
            .ok(&["image", "ls"])
            .contains(&format!("127.0.0.1:{}/team/bb:2", registry.port()))
    );
    cluster.ok(&["delete", "deployment", "pulled"]);
    cluster.wait_gone("app=pulled", MINUTE);

    cluster.ok(&["delete", "deployment", "box"]);
    cluster.ok(&["delete", "deployment", "ghost"]);
    cluster.wait_gone("app=box", MINUTE);
    cluster.wait_gone("app=ghost", MINUTE);
    let removed = cluster.ok(&["image", "rm", "bb:1"]);
    assert!(removed.contains("removed bb:1"), "{removed}");
    assert!(
        !cluster
            .ok(&["image", "ls"])
            .contains("docker.io/library/bb:1")
    );
    let error = cluster.c4m(&["image", "rm", "bb:1"]);
    assert!(!error.status.success());
    assert!(String::from_utf8_lossy(&error.stderr).contains("not found"));
}

/// Starts catalog: an httpd answering `catalog-says-hi` on port 8080
/// (published on the node's `host_port` if given) behind a Service of
/// that name. Returns the Ready instance and its podIP, checked to start
/// with `prefix` (its network's range).
fn start_catalog(cluster: &Cluster, host_port: Option<u16>, prefix: &str) -> (Value, String) {
    let ports = match host_port {
        Some(host_port) => format!("ports: [{{containerPort: 8080, hostPort: {host_port}}}]"),
        None => "ports: [{containerPort: 8080}]".to_string(),
    };
    let catalog = deployment(
        "catalog",
        "bb:1",
        "mkdir -p /www && echo catalog-says-hi > /www/index.html && exec httpd -f -p 8080 -h /www",
    )
    .replace("ports: [{containerPort: 8080}]", &ports);
    cluster.apply(&format!(
        "{catalog}---\napiVersion: v1\nkind: Service\nmetadata: {{name: catalog}}\nspec:\n  clusterIP: None\n  selector: {{app: catalog}}\n  ports: [{{port: 8080, targetPort: 8080}}]\n",
    ));
    let catalog = cluster.wait_ready("app=catalog", 1, MINUTE).remove(0);
    let catalog_ip = catalog["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        catalog_ip.starts_with(prefix),
        "the instance has an address of its network: {catalog}"
    );
    (catalog, catalog_ip)
}

/// A manifest naming no driver runs on each node's default driver: host
/// processes on one node, oci containers on another; and a node cannot
/// default to a driver it lacks.
#[test]
#[ignore = "needs root + runc + conmon"]
fn instances_naming_no_driver_run_on_the_nodes_default_driver() {
    require_oci();
    let mut cluster = Cluster::start();
    cluster.start_agent("plain", "4", "4Gi");
    cluster.start_agent_with("boxed", "4", "4Gi", &["--default-driver", "oci"]);
    let nodes = cluster.ok(&["get", "nodes"]);
    let row = |name: &str| {
        nodes
            .lines()
            .find(|line| line.starts_with(name))
            .unwrap_or_else(|| panic!("no row for {name}: {nodes}"))
            .to_string()
    };
    assert!(row("plain").contains(" process*="), "{nodes}");
    assert!(row("boxed").contains(" oci*="), "{nodes}");

    let tar = busybox_image_tar(cluster.dir.path());
    cluster.ok(&[
        "image",
        "import",
        tar.to_str().unwrap(),
        "--name",
        "bb",
        "--node",
        "boxed",
    ]);
    // The same template, no runtimeClassName, one instance per node.
    for node in ["plain", "boxed"] {
        cluster.apply(&format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: on-{node}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: on-{node}}}}}
  template:
    metadata: {{labels: {{app: on-{node}}}}}
    spec:
      nodeSelector: {{kubernetes.io/hostname: {node}}}
      containers:
        - name: main
          image: bb:1
          command: ["sh", "-c", "cat /etc/marker 2>&1; exec sleep 1000"]
"#
        ));
    }
    for (node, expected) in [
        ("plain", "No such file or directory"),
        ("boxed", "from-image"),
    ] {
        let pods = cluster.wait_ready(&format!("app=on-{node}"), 1, MINUTE);
        assert_eq!(pods[0]["spec"]["nodeName"], node);
        let name = pods[0]["metadata"]["name"].as_str().unwrap().to_string();
        let logs = wait_for("the instance's output", MINUTE, || {
            let text = cluster.ok(&["logs", &name]);
            (!text.is_empty()).then_some(text)
        });
        assert!(logs.contains(expected), "{node}: {logs}");
    }
    for node in ["plain", "boxed"] {
        cluster.ok(&["delete", "deployment", &format!("on-{node}")]);
        cluster.wait_gone(&format!("app=on-{node}"), MINUTE);
    }

    // A default the node does not offer: the agent refuses to start.
    let refused = Command::new(C4M)
        .args(["agent", "--name", "nope", "--default-driver", "wasm"])
        .arg("--data-dir")
        .arg(cluster.dir.path().join("agent-nope"))
        .args(["--control-plane", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(
            "the default driver \"wasm\" does not work on this node (it offers process, oci)"
        ),
        "{stderr}"
    );
}

/// Looks `catalog` (a headless Service: its instance's address) up through
/// c4m's DNS from inside the container (busybox
/// `nslookup` reads the `resolv.conf` the agent mounted) and fetches its page
/// from the address it got with `nc`, once a second (busybox-static's `wget`
/// crashes without the host's libc around it).
const CLIENT_SCRIPT: &str = "while true; do \
ip=$(nslookup catalog.default.svc.c4m 2>/dev/null | awk '/^Address: /{print $2}' | tail -n1); \
echo \"resolved=$ip\"; \
echo \"body=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 $ip 8080 2>&1 | tail -n1)\"; sleep 1; done";

/// An agent giving oci instances addresses in VPCs.
const AGENT_FLAGS: &[&str] = &["--instance-network", "--default-vpc-cidr", "10.99.208.0/20"];

#[test]
#[ignore = "needs root + runc + conmon + nftables"]
fn oci_instances_have_addresses_find_services_by_name_and_vpcs_are_isolated() {
    require_oci();
    let mut cluster = Cluster::start();
    // Slice 0 of each VPC: the default VPC's instances get 10.99.208.0/24,
    // those of VPC `other` 10.99.224.0/24.
    cluster.start_agent_with("n1", "4", "4Gi", AGENT_FLAGS);
    let tar = busybox_image_tar(cluster.dir.path());
    cluster.ok(&["image", "import", tar.to_str().unwrap(), "--name", "bb"]);
    cluster.ok(&[
        "vpc",
        "create",
        "--cidr",
        "10.99.224.0/20",
        "--name",
        "other",
    ]);

    let (catalog, catalog_ip) = start_catalog(&cluster, None, "10.99.208.");

    // Same VPC: found by name through c4m's DNS, and reached.
    cluster.apply(&deployment("web", "bb:1", CLIENT_SCRIPT));
    let web = cluster.wait_ready("app=web", 1, MINUTE).remove(0);
    let web_name = web["metadata"]["name"].as_str().unwrap().to_string();
    assert!(
        web["status"]["podIP"]
            .as_str()
            .unwrap_or_default()
            .starts_with("10.99.208.")
    );
    let logs = wait_for("web to reach catalog by name", MINUTE, || {
        let text = cluster.ok(&["logs", &web_name]);
        text.contains("body=catalog-says-hi").then_some(text)
    });
    assert!(logs.contains(&format!("resolved={catalog_ip}\n")), "{logs}");

    // c4m port-forward reaches a VPC instance's port at its own address.
    let catalog_name = catalog["metadata"]["name"].as_str().unwrap().to_string();
    let local = free_port();
    let mut forward = cluster
        .c4m_command(&["port-forward", &catalog_name, &format!("{local}:8080")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut announced = String::new();
    BufReader::new(forward.stdout.take().unwrap())
        .read_line(&mut announced)
        .unwrap();
    let answer = http_get(&format!("127.0.0.1:{local}"), "/");
    let _ = forward.kill();
    let said = forward.wait_with_output().unwrap();
    let (code, body) = answer.unwrap_or_else(|| {
        panic!(
            "no answer through the forwarded port: {announced}{}",
            String::from_utf8_lossy(&said.stderr)
        )
    });
    assert_eq!(code, 200, "{announced}{body}");
    assert!(body.contains("catalog-says-hi"), "{body}");

    // Another VPC: the name resolves, the address does not answer.
    cluster.apply(&driver_deployment(
        "oci",
        "stranger",
        "bb:1",
        CLIENT_SCRIPT,
        Some("other"),
    ));
    let stranger = cluster.wait_ready("app=stranger", 1, MINUTE).remove(0);
    let stranger_name = stranger["metadata"]["name"].as_str().unwrap().to_string();
    assert!(
        stranger["status"]["podIP"]
            .as_str()
            .unwrap_or_default()
            .starts_with("10.99.224."),
        "{stranger}"
    );
    let logs = wait_for("three tries across VPCs", MINUTE, || {
        let text = cluster.ok(&["logs", &stranger_name]);
        (text.matches(&format!("resolved={catalog_ip}\n")).count() >= 3).then_some(text)
    });
    assert!(
        !logs.contains("catalog-says-hi"),
        "a VPC reached another: {logs}"
    );
    // A VPC in use cannot go.
    assert!(!cluster.c4m(&["vpc", "delete", "other"]).status.success());

    // A restarted agent adopts the containers and their networks untouched:
    // same instances, addresses and processes, and web goes on finding and
    // reaching catalog (the DNS relay is back on the gateway).
    let reached = |cluster: &Cluster| {
        cluster
            .ok(&["logs", &web_name])
            .matches("body=catalog-says-hi")
            .count()
    };
    let before = reached(&cluster);
    cluster.kill_agent("n1");
    cluster.start_agent_with("n1", "4", "4Gi", AGENT_FLAGS);
    std::thread::sleep(Duration::from_secs(3));
    let after = cluster.wait_ready("app=web", 1, MINUTE).remove(0);
    assert_eq!(after["metadata"]["name"], web["metadata"]["name"]);
    assert_eq!(after["status"]["podIP"], web["status"]["podIP"]);
    assert_eq!(
        after["status"]["containerStatuses"][0]["restartCount"], 0,
        "adopted, not restarted: {after}"
    );
    wait_for("web to go on reaching catalog", MINUTE, || {
        (reached(&cluster) >= before + 3).then_some(())
    });

    // Removing the instances takes their networks off the node.
    let bridges: Vec<String> = ["10.99.208.0/24", "10.99.224.0/24"]
        .into_iter()
        .map(|subnet| {
            c4m_mesh::VpcNetwork {
                name: String::new(),
                subnet: subnet.parse().unwrap(),
            }
            .bridge_name()
        })
        .collect();
    let links = || {
        let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
        String::from_utf8_lossy(&links.stdout).into_owned()
    };
    let before = links();
    assert!(
        bridges.iter().all(|b| before.contains(b.as_str())),
        "{bridges:?} in {before}"
    );
    for name in ["stranger", "web", "catalog"] {
        cluster.ok(&["delete", "deployment", name]);
        cluster.wait_gone(&format!("app={name}"), MINUTE);
    }
    wait_for("the VPC bridges to go", MINUTE, || {
        let now = links();
        bridges
            .iter()
            .all(|b| !now.contains(b.as_str()))
            .then_some(())
    });
    cluster.ok(&["vpc", "delete", "other"]);
}

/// Takes down what the CNI test's plugins make on the node, even when it
/// fails half way: the bridge (its veths go with the namespaces) and the
/// NAT rules naming the network (`.1`).
struct CniBridge(&'static str, &'static str);

impl Drop for CniBridge {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", self.0]).output();
        // iptables-save quotes as the shell does: each rule goes back to
        // `iptables -D` as written.
        for rule in nat_rules_of_network(self.1) {
            let _ = Command::new("sh")
                .args(["-c", &format!("iptables -t nat -D {}", &rule[3..])])
                .output();
        }
    }
}

/// The NAT rules the CNI plugins made for network `name` (bridge's
/// masquerade and portmap's DNAT rules name it in a comment).
fn nat_rules_of_network(name: &str) -> Vec<String> {
    let output = Command::new("iptables-save")
        .args(["-t", "nat"])
        .output()
        .expect("iptables-save (apt-get install iptables)");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.contains(&format!(r#"name: \"{name}\""#)))
        .map(str::to_string)
        .collect()
}

#[test]
#[ignore = "needs root + runc + conmon + CNI plugins"]
fn oci_instances_join_a_cni_network_with_host_ports() {
    require_oci();
    for plugin in ["bridge", "host-local", "portmap"] {
        assert!(
            Path::new("/usr/lib/cni").join(plugin).exists(),
            "/usr/lib/cni/{plugin} is missing: apt-get install containernetworking-plugins"
        );
    }
    let bridge = CniBridge("c4mcni92", "c4m-e2e-cni");
    let mut cluster = Cluster::start();
    let conflist = cluster.dir.path().join("c4m-e2e.conflist");
    std::fs::write(
        &conflist,
        format!(
            r#"{{"cniVersion": "1.0.0", "name": "c4m-e2e-cni", "plugins": [
                {{"type": "bridge", "bridge": "{}", "isGateway": true, "ipMasq": true,
                  "ipam": {{"type": "host-local", "ranges": [[{{"subnet": "10.99.92.0/24"}}]],
                           "routes": [{{"dst": "0.0.0.0/0"}}], "dataDir": "{}"}}}},
                {{"type": "portmap", "capabilities": {{"portMappings": true}}}}]}}"#,
            bridge.0,
            cluster.dir.path().join("cni-ipam").display()
        ),
    )
    .unwrap();
    cluster.start_agent_with(
        "n1",
        "4",
        "4Gi",
        &["--cni-config", conflist.to_str().unwrap()],
    );
    let tar = busybox_image_tar(cluster.dir.path());
    cluster.ok(&["image", "import", tar.to_str().unwrap(), "--name", "bb"]);

    // catalog publishes its port 8080 on the node's port `host_port`
    // (through portmap), behind a Service web finds by name.
    let host_port = free_port();
    let (_, catalog_ip) = start_catalog(&cluster, Some(host_port), "10.99.92.");
    let (code, body) = wait_for("the host port to answer", MINUTE, || {
        http_get(&format!("127.0.0.1:{host_port}"), "/")
    });
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("catalog-says-hi"), "{body}");

    // web resolves catalog through c4m's DNS (relayed on the CNI gateway)
    // and reaches it over the bridge.
    cluster.apply(&deployment("web", "bb:1", CLIENT_SCRIPT));
    let web = cluster.wait_ready("app=web", 1, MINUTE).remove(0);
    let web_name = web["metadata"]["name"].as_str().unwrap().to_string();
    let logs = wait_for("web to reach catalog by name", MINUTE, || {
        let text = cluster.ok(&["logs", &web_name]);
        text.contains("body=catalog-says-hi").then_some(text)
    });
    assert!(logs.contains(&format!("resolved={catalog_ip}\n")), "{logs}");

    // Another VPC is not served by a node on a CNI network: it says why.
    cluster.ok(&[
        "vpc",
        "create",
        "--cidr",
        "10.99.93.0/24",
        "--name",
        "other",
    ]);
    cluster.apply(&driver_deployment(
        "oci",
        "stranger",
        "bb:1",
        "sleep 1000",
        Some("other"),
    ));
    let said = wait_for("the stranger's refusal", MINUTE, || {
        let pods = cluster.instances_of("app=stranger");
        let text = pods.first().map(Value::to_string).unwrap_or_default();
        text.contains("vpc other is not served here")
            .then_some(text)
    });
    assert!(said.contains("NetworkNotReady"), "{said}");

    // Removing the instances DELs their attachments: no veth on the
    // bridge, no NAT rule of the network, no namespace or record left
    // under the agent's run dir, the host port closed.
    assert!(!nat_rules_of_network("c4m-e2e-cni").is_empty());
    for name in ["stranger", "web", "catalog"] {
        cluster.ok(&["delete", "deployment", name]);
        cluster.wait_gone(&format!("app={name}"), MINUTE);
    }
    let run_dir = cluster.agent_dir("n1").join("network");
    let is_empty = |dir: &str| {
        std::fs::read_dir(run_dir.join(dir)).map_or(true, |mut entries| entries.next().is_none())
    };
    wait_for("the attachments to go", MINUTE, || {
        let ports = Command::new("ip")
            .args(["-o", "link", "show", "master", bridge.0])
            .output()
            .unwrap();
        (ports.stdout.is_empty()
            && nat_rules_of_network("c4m-e2e-cni").is_empty()
            && is_empty("cni")
            && is_empty("netns"))
        .then_some(())
    });
    assert!(http_get(&format!("127.0.0.1:{host_port}"), "/").is_none());
    cluster.ok(&["vpc", "delete", "other"]);
}
