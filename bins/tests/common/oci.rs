//! What tests of `oci` instances share: the check that the machine can run
//! them, and their Deployments.

/// Fails loudly unless this machine can run oci containers.
pub fn require_oci() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "the oci driver needs root (namespaces, overlayfs, cgroups)"
    );
    assert!(
        c4m_core::find_oci_binaries().is_some(),
        "runc (or crun) and conmon are required: apt-get install runc conmon"
    );
}

/// An oci Deployment: `replicas` instances of `image` running `script`
/// (with `$POD` their name), declaring port 8080, in VPC `vpc` (the
/// default if None). `pod_spec` adds to the pod spec: YAML lines each
/// starting with six spaces, or empty.
pub fn oci_deployment(
    name: &str,
    image: &str,
    replicas: usize,
    vpc: Option<&str>,
    script: &str,
    pod_spec: &str,
) -> String {
    let annotations = vpc
        .map(|vpc| format!("\n      annotations: {{c4m.io/vpc: {vpc}}}"))
        .unwrap_or_default();
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata:
      labels: {{app: {name}}}{annotations}
    spec:
      runtimeClassName: oci
{pod_spec}      containers:
        - name: main
          image: {image}
          command: ["sh", "-c", {script:?}]
          env: [{{name: POD, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}]
          ports: [{{containerPort: 8080}}]
          resources: {{limits: {{cpu: 500m, memory: 64Mi}}}}
"#
    )
}
