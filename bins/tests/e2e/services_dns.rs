//! Cluster DNS and Service variables as Kubernetes gives them, seen from
//! inside a real `oci` instance through the real kubectl: busybox
//! `nslookup` (through the node's DNS relay and the `resolv.conf` the
//! agent wrote) gets a Service's cluster IP under `cluster.local` and
//! `c4m`, its PTR record, a headless Service's endpoints and its pods'
//! hostnames, SRV records of named ports, the CNAME of an ExternalName;
//! `env` shows the
//! `FOO_SERVICE_HOST` family.

use std::time::Duration;

use crate::common::oci::oci_cluster_with;
use crate::common::*;

const MINUTE: Duration = Duration::from_secs(60);

/// The instance network's range for this test (slice 0: 10.99.112.0/24).
const NETWORK_FLAGS: &[&str] = &[
    "--instance-network",
    "--default-vpc-cidr",
    "10.99.112.0/20",
    "--default-driver",
    "oci",
];

/// The cluster IP the `web` Service asks for (in the default Service range).
const WEB_IP: &str = "10.96.0.50";

const SERVICES: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.50
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: pets, namespace: shop}
spec:
  clusterIP: None
  selector: {app: pet}
  ports: [{name: pg, port: 5432}]
---
apiVersion: v1
kind: Service
metadata: {name: mail, namespace: shop}
spec: {type: ExternalName, externalName: smtp.example.com}
---
apiVersion: v1
kind: Service
metadata: {name: front, namespace: shop}
spec: {type: ExternalName, externalName: web.shop.svc.cluster.local}
"#;

/// A busybox pod of namespace `shop` that sleeps, with `labels` and `spec`
/// lines (indented two spaces).
fn sleeper(name: &str, labels: &str, spec: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: shop, labels: {{{labels}}}}}
spec:
{spec}  containers:
  - name: main
    image: bb:1
    command: [sleep, "3600"]
    ports: [{{name: pg, containerPort: 5432}}]
"#
    )
}

/// The addresses busybox `nslookup NAME` prints (not the server's), sorted.
fn addresses(answer: &str) -> Vec<String> {
    let mut addresses: Vec<String> = answer
        .lines()
        .filter_map(|line| line.strip_prefix("Address: "))
        .map(|address| address.trim().to_string())
        .collect();
    addresses.sort();
    addresses
}

#[test]
#[ignore = "needs root + runc + conmon + nftables + kubectl"]
fn instances_resolve_services_as_kubernetes_dns_gives_them_and_get_service_variables() {
    let (cluster, kubectl) = oci_cluster_with("netted", NETWORK_FLAGS);
    let apply = |name: &str, manifest: &str| {
        let path = cluster.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, manifest).unwrap();
        kubectl.ok(&["apply", "-f", path.to_str().unwrap()]);
    };

    // A Service with a cluster IP is created before the client: its
    // variables are in the client's environment.
    apply("services", SERVICES);
    apply(
        "pods",
        &[
            sleeper(
                "pet-a",
                "app: pet",
                "  hostname: pet-0\n  subdomain: pets\n",
            ),
            sleeper("pet-b", "app: pet", ""),
            sleeper("client", "app: client", ""),
        ]
        .join("---\n"),
    );
    for pod in ["pet-a", "pet-b", "client"] {
        kubectl.ok(&[
            "wait",
            "-n",
            "shop",
            "--for=condition=Ready",
            &format!("pod/{pod}"),
            "--timeout=60s",
        ]);
    }
    let ip_of = |pod: &str| {
        kubectl.ok(&[
            "get",
            "pod",
            "-n",
            "shop",
            pod,
            "-o",
            "jsonpath={.status.podIP}",
        ])
    };
    let (pet_a, pet_b) = (ip_of("pet-a"), ip_of("pet-b"));
    assert!(pet_a.starts_with("10.99.112."), "{pet_a}");
    let nslookup = |args: &[&str]| {
        let mut command = vec!["exec", "-n", "shop", "client", "--", "nslookup"];
        command.extend(args);
        let output = kubectl.run(&command);
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };

    // A normal Service: its cluster IP, in both domains (busybox nslookup
    // does not search; pod_spec.rs checks the searches of resolv.conf).
    for name in ["web.shop.svc.cluster.local", "web.shop.svc.c4m"] {
        let answer = nslookup(&[name]);
        assert_eq!(addresses(&answer), [WEB_IP], "{name}: {answer}");
    }
    // The kubernetes Service, as charts look it up.
    let answer = nslookup(&["kubernetes.default.svc.cluster.local"]);
    assert_eq!(addresses(&answer), ["10.96.0.1"], "{answer}");
    // Its PTR record names it in the cluster domain.
    let answer = nslookup(&[WEB_IP]);
    assert!(
        answer.contains("name = web.shop.svc.cluster.local"),
        "{answer}"
    );
    // SRV of its named port targets the Service's name.
    let answer = nslookup(&["-type=srv", "_http._tcp.web.shop.svc.cluster.local"]);
    assert!(answer.contains("80 web.shop.svc.cluster.local"), "{answer}");

    // Headless: the ready endpoints (once both are published), each pod
    // by its hostname (pet-a) or its name (pet-b).
    let mut both = vec![pet_a.clone(), pet_b.clone()];
    both.sort();
    wait_for("both pets in the headless service's answer", MINUTE, || {
        (addresses(&nslookup(&["pets.shop.svc.cluster.local"])) == both).then_some(())
    });

    // ExternalName: a CNAME, followed when it names a cluster Service.
    let answer = nslookup(&["-type=cname", "mail.shop.svc.cluster.local"]);
    assert!(answer.contains("smtp.example.com"), "{answer}");
    let answer = nslookup(&["front.shop.svc.cluster.local"]);
    assert_eq!(addresses(&answer), [WEB_IP], "{answer}");

    // No such Service: NXDOMAIN.
    let answer = nslookup(&["nothing.shop.svc.cluster.local"]);
    assert!(answer.contains("NXDOMAIN"), "{answer}");

    // The Service variables, as the kubelet sets them.
    let env = kubectl.ok(&["exec", "-n", "shop", "client", "--", "env"]);
    for variable in [
        "WEB_SERVICE_HOST=10.96.0.50",
        "WEB_SERVICE_PORT=80",
        "WEB_SERVICE_PORT_HTTP=80",
        "WEB_PORT=tcp://10.96.0.50:80",
        "WEB_PORT_80_TCP=tcp://10.96.0.50:80",
        "WEB_PORT_80_TCP_PROTO=tcp",
        "WEB_PORT_80_TCP_PORT=80",
        "WEB_PORT_80_TCP_ADDR=10.96.0.50",
        // The kubernetes Service of default, in every namespace.
        "KUBERNETES_SERVICE_HOST=10.96.0.1",
        "KUBERNETES_SERVICE_PORT=443",
        "KUBERNETES_SERVICE_PORT_HTTPS=443",
        "KUBERNETES_PORT=tcp://10.96.0.1:443",
    ] {
        assert!(
            env.lines().any(|line| line == variable),
            "{variable}: {env}"
        );
    }
    // None for a headless Service or an ExternalName.
    assert!(!env.contains("PETS_SERVICE_HOST"), "{env}");
    assert!(!env.contains("MAIL_SERVICE_HOST"), "{env}");

    // A headless Service's pods by name: pet-a by its hostname (its
    // subdomain is the Service), pet-b by its instance name; SRV records
    // target those names.
    for (name, ip) in [
        ("pet-0.pets.shop.svc.cluster.local", &pet_a),
        ("pet-b.pets.shop.svc.c4m", &pet_b),
    ] {
        let answer = nslookup(&[name]);
        assert_eq!(addresses(&answer), [ip.as_str()], "{name}: {answer}");
    }
    let answer = nslookup(&["-type=srv", "_pg._tcp.pets.shop.svc.cluster.local"]);
    for target in [
        "5432 pet-0.pets.shop.svc.cluster.local",
        "5432 pet-b.pets.shop.svc.cluster.local",
    ] {
        assert!(answer.contains(target), "{target}: {answer}");
    }
}
