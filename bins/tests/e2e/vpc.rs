//! End-to-end tests of VPCs: the `c4m vpc` commands, CIDR validation and
//! overlaps, a Microservice naming its VPC, and deletion refused while in
//! use.

use std::time::Duration;

use crate::common::*;

fn failure(cluster: &Cluster, args: &[&str]) -> String {
    let output = cluster.c4m(args);
    assert!(!output.status.success(), "c4m {args:?} succeeded");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn vpcs_are_validated_named_by_microservices_and_deleted_only_when_unused() {
    let cluster = Cluster::start();
    let created = cluster.ok(&["vpc", "create", "--name", "blue", "--cidr", "10.99.0.0/16"]);
    assert!(created.contains("vpc/blue created"), "{created}");

    let overlap = failure(
        &cluster,
        &["vpc", "create", "--name", "red", "--cidr", "10.99.128.0/17"],
    );
    assert!(
        overlap.contains("spec.cidr: 10.99.128.0/17 overlaps vpc blue (10.99.0.0/16)"),
        "{overlap}"
    );
    let host_bits = failure(
        &cluster,
        &["vpc", "create", "--name", "red", "--cidr", "10.98.0.1/16"],
    );
    assert!(
        host_bits
            .contains("--cidr: \"10.98.0.1/16\" has host bits set (did you mean 10.98.0.0/16?)"),
        "{host_bits}"
    );
    let output = cluster.c4m_with_stdin(
        &["apply", "-f", "-"],
        "apiVersion: c4m.io/v1\nkind: Vpc\nmetadata: {name: red}\nspec: {cidr: not-a-cidr}\n",
    );
    let manifest = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(manifest.contains("spec.cidr"), "{manifest}");
    cluster.ok(&["vpc", "create", "--name", "red", "--cidr", "10.98.0.0/16"]);
    let output = cluster.c4m_with_stdin(
        &["apply", "-f", "-"],
        "apiVersion: c4m.io/v1\nkind: Vpc\nmetadata: {name: red}\nspec: {cidr: 10.99.0.0/24}\n",
    );
    let moved = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a vpc's range moved");
    assert!(moved.contains("spec.cidr: field is immutable"), "{moved}");

    let listed = cluster.ok(&["vpc", "list"]);
    assert!(listed.contains("CIDR"), "{listed}");
    for (name, cidr) in [("blue", "10.99.0.0/16"), ("red", "10.98.0.0/16")] {
        assert!(
            listed
                .lines()
                .any(|l| l.starts_with(name) && l.contains(cidr)),
            "{listed}"
        );
    }

    cluster.apply(
        "apiVersion: c4m.io/v1\nkind: Microservice\nmetadata: {name: web}\nspec: {command: [sleep, '600'], vpc: blue}\n",
    );
    let instance = wait_for("web's instance", Duration::from_secs(30), || {
        cluster.instances_of("c4m.io/microservice=web").pop()
    });
    assert_eq!(instance["metadata"]["annotations"]["c4m.io/vpc"], "blue");
    let in_use = failure(&cluster, &["vpc", "delete", "blue"]);
    assert!(
        in_use.contains("vpc blue is used by microservice default/web"),
        "{in_use}"
    );

    cluster.ok(&["delete", "microservice", "web"]);
    cluster.wait_gone("c4m.io/microservice=web", Duration::from_secs(30));
    let deleted = cluster.ok(&["vpc", "delete", "blue", "red", "never-made"]);
    assert!(deleted.contains("vpc/blue deleted"), "{deleted}");
    assert!(deleted.contains("vpc/never-made already gone"), "{deleted}");
    let listed = cluster.ok(&["vpc", "list", "-o", "json"]);
    assert!(!listed.contains("10.99.0.0/16"), "{listed}");
}
