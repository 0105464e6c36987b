//! The resource model: kinds, c4m's own types and helpers over Kubernetes types.

pub(crate) mod kinds;
pub(crate) mod microservice;
pub(crate) mod pod;
pub mod pod_etc;
pub(crate) mod pull_secrets;
pub mod volumes;
pub(crate) mod vpc;

/// An instance: the unit the scheduler places and an agent runs. It *is* a
/// Kubernetes Pod (`spec.nodeName`, `status.phase`, `status.podIP`, a Ready
/// condition), so a Kubernetes API view of instances is no translation.
pub type Instance = k8s_openapi::api::core::v1::Pod;

/// Annotation keys c4m writes or reads.
pub mod annotations {
    /// On an instance: JSON list of its port bindings
    /// (`[{"name","containerPort","hostIP","hostPort","protocol"}]`), written by
    /// the control plane from the agent's reports.
    pub const PORTS: &str = "c4m.io/ports";
    /// On a node: comma-separated `driver=version` pairs the agent fingerprinted.
    pub const DRIVERS: &str = "c4m.io/drivers";
    /// On a node: the driver that runs instances naming none.
    pub const DEFAULT_DRIVER: &str = "c4m.io/default-driver";
    /// On a node: base URL of the agent's HTTP server (logs, exec).
    pub const AGENT_URL: &str = "c4m.io/agent-url";
    /// On an instance: hash of the pod template it was made from, so a
    /// controller can tell outdated instances after a spec change.
    pub const TEMPLATE_HASH: &str = "c4m.io/template-hash";
    /// On an instance: the name of the VPC it joins (a Microservice's
    /// `spec.vpc`); absent means the default VPC.
    pub const VPC: &str = "c4m.io/vpc";
    /// On an instance as it leaves for its node: its VPC's CIDR, which the
    /// control plane adds from the `Vpc` object so the agent need not look
    /// it up.
    pub const VPC_CIDR: &str = "c4m.io/vpc-cidr";
    /// On a node: which /24 of every VPC its instances get (a decimal
    /// index), assigned by the control plane when the node registers for
    /// instance networking, as Kubernetes assigns `node.spec.podCIDR`.
    pub const NODE_SLICE: &str = "c4m.io/node-slice";
    /// On an instance as it leaves for its node, never stored: the
    /// registry logins of its `imagePullSecrets`, as JSON
    /// `{"REGISTRY": {"username": .., "password": ..}}`, which the control
    /// plane resolves (and sets or removes) as it does `valueFrom`.
    pub const REGISTRY_LOGINS: &str = "c4m.io/registry-logins";
    /// On an instance as it leaves for its node, never stored: its volumes'
    /// sources resolved against other objects, as JSON
    /// `{"VOLUME": ResolvedVolume}` ([`crate::volumes`]).
    pub const RESOLVED_VOLUMES: &str = "c4m.io/resolved-volumes";
    /// On a node, written by the control plane from the node's storage
    /// reports: the volumes it keeps although no object references them
    /// (a PersistentVolume once did: the store was wiped or restored from an
    /// older backup), as JSON `[{"driver", "handle", "sizeBytes"}]`; absent
    /// when there is none. `c4m volume list` shows them as `Orphaned`.
    pub const ORPHANED_VOLUMES: &str = "c4m.io/orphaned-volumes";
}

/// Label keys c4m writes or reads.
pub mod labels {
    /// On an instance: the Microservice or Deployment that owns it
    /// (`Microservice.name` / `Deployment.name`).
    pub const OWNER: &str = "c4m.io/owner";
    /// On an instance made from a Microservice: the Microservice's name.
    pub const MICROSERVICE: &str = "c4m.io/microservice";
    /// On a node: its name (as `kubernetes.io/hostname` does).
    pub const HOSTNAME: &str = "kubernetes.io/hostname";
    /// On a node whose agent runs the edge gateway: `"true"`. Gateways and
    /// Ingresses are given these nodes' addresses.
    pub const EDGE_GATEWAY: &str = "c4m.io/edge-gateway";
}
