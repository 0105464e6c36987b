//! Every kind c4m serves, with how the API and the CLI name it.

/// One kind of object the API serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResourceKind {
    /// API group (`""` for the core group).
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// The kind (`Deployment`).
    pub kind: &'static str,
    /// Lowercase plural used in URLs (`deployments`).
    pub plural: &'static str,
    /// Other names the CLI accepts (`deploy`).
    pub aliases: &'static [&'static str],
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Subresources served under an object (`status`, `scale`, `log`,
    /// `exec`, `portforward`).
    pub subresources: &'static [&'static str],
}

macro_rules! kind {
    ($group:literal, $version:literal, $kind:literal, $plural:literal, [$($alias:literal),*], $namespaced:literal) => {
        kind!($group, $version, $kind, $plural, [$($alias),*], $namespaced, [])
    };
    ($group:literal, $version:literal, $kind:literal, $plural:literal, [$($alias:literal),*], $namespaced:literal, [$($sub:literal),*]) => {
        ResourceKind {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            aliases: &[$($alias),*],
            namespaced: $namespaced,
            subresources: &[$($sub),*],
        }
    };
}

/// Every kind c4m serves.
pub static KINDS: &[ResourceKind] = &[
    kind!(
        "",
        "v1",
        "Namespace",
        "namespaces",
        ["namespace", "ns"],
        false,
        ["status"]
    ),
    kind!("", "v1", "Node", "nodes", ["node", "no"], false, ["status"]),
    kind!(
        "",
        "v1",
        "Pod",
        "pods",
        ["pod", "po", "instances", "instance", "inst"],
        true,
        [
            "status",
            "log",
            "exec",
            "attach",
            "portforward",
            "ephemeralcontainers"
        ]
    ),
    kind!(
        "",
        "v1",
        "Service",
        "services",
        ["service", "svc"],
        true,
        ["status"]
    ),
    kind!("", "v1", "Endpoints", "endpoints", ["ep"], true),
    kind!(
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        ["endpointslice"],
        true
    ),
    kind!(
        "",
        "v1",
        "ConfigMap",
        "configmaps",
        ["configmap", "cm"],
        true
    ),
    kind!("", "v1", "Secret", "secrets", ["secret"], true),
    kind!(
        "",
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        ["serviceaccount", "sa"],
        true
    ),
    kind!("", "v1", "Event", "events", ["event", "ev"], true),
    kind!(
        "apps",
        "v1",
        "Deployment",
        "deployments",
        ["deployment", "deploy"],
        true,
        ["status", "scale"]
    ),
    kind!(
        "apps",
        "v1",
        "ReplicaSet",
        "replicasets",
        ["replicaset", "rs"],
        true,
        ["status"]
    ),
    kind!(
        "c4m.io",
        "v1",
        "Microservice",
        "microservices",
        ["microservice", "ms"],
        true,
        ["status", "scale"]
    ),
    kind!("c4m.io", "v1", "Vpc", "vpcs", ["vpc"], false),
    kind!(
        "apps",
        "v1",
        "DaemonSet",
        "daemonsets",
        ["daemonset", "ds"],
        true,
        ["status"]
    ),
    kind!("batch", "v1", "Job", "jobs", ["job"], true, ["status"]),
    kind!(
        "batch",
        "v1",
        "CronJob",
        "cronjobs",
        ["cronjob", "cj"],
        true,
        ["status"]
    ),
    kind!(
        "scheduling.k8s.io",
        "v1",
        "PriorityClass",
        "priorityclasses",
        ["priorityclass", "pc"],
        false
    ),
    kind!(
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        ["lease"],
        true
    ),
    // A view of the core Events (c4m-control's events_view): discovered
    // and served, stored as core/v1 Events.
    kind!("events.k8s.io", "v1", "Event", "events", [], true),
    kind!(
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        ["horizontalpodautoscaler", "hpa"],
        true,
        ["status"]
    ),
    // A view of the same stored autoscaling/v2 objects (c4m-control's
    // version_view): discovered and served, stored as autoscaling/v2.
    kind!(
        "autoscaling",
        "v1",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        [],
        true,
        ["status"]
    ),
    kind!(
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        ["poddisruptionbudget", "pdb"],
        true,
        ["status"]
    ),
    // The edge gateway's kinds: Ingress, and the Gateway API (served as
    // c4m's own kinds, as Kubernetes serves its CRDs: JSON only).
    kind!(
        "networking.k8s.io",
        "v1",
        "Ingress",
        "ingresses",
        ["ingress", "ing"],
        true,
        ["status"]
    ),
    kind!(
        "networking.k8s.io",
        "v1",
        "IngressClass",
        "ingressclasses",
        ["ingressclass"],
        false
    ),
    kind!(
        "gateway.networking.k8s.io",
        "v1",
        "GatewayClass",
        "gatewayclasses",
        ["gatewayclass", "gc"],
        false,
        ["status"]
    ),
    kind!(
        "gateway.networking.k8s.io",
        "v1",
        "Gateway",
        "gateways",
        ["gateway", "gtw"],
        true,
        ["status"]
    ),
    kind!(
        "gateway.networking.k8s.io",
        "v1",
        "HTTPRoute",
        "httproutes",
        ["httproute"],
        true,
        ["status"]
    ),
    kind!(
        "gateway.networking.k8s.io",
        "v1",
        "GRPCRoute",
        "grpcroutes",
        ["grpcroute"],
        true,
        ["status"]
    ),
    kind!(
        "gateway.networking.k8s.io",
        "v1beta1",
        "ReferenceGrant",
        "referencegrants",
        ["referencegrant", "refgrant"],
        true
    ),
    // Storage (c4m-control's volume controllers; nodes provision and mount).
    kind!(
        "",
        "v1",
        "PersistentVolume",
        "persistentvolumes",
        ["persistentvolume", "pv"],
        false,
        ["status"]
    ),
    kind!(
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        ["persistentvolumeclaim", "pvc"],
        true,
        ["status"]
    ),
    kind!(
        "storage.k8s.io",
        "v1",
        "StorageClass",
        "storageclasses",
        ["storageclass", "sc"],
        false
    ),
    // The CSI external-snapshotter's kinds (served as c4m's own, JSON only).
    kind!(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshot",
        "volumesnapshots",
        ["volumesnapshot", "vs"],
        true,
        ["status"]
    ),
    kind!(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshotClass",
        "volumesnapshotclasses",
        ["volumesnapshotclass", "vsclass", "vsclasses"],
        false
    ),
    kind!(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshotContent",
        "volumesnapshotcontents",
        ["volumesnapshotcontent", "vsc", "vscs"],
        false,
        ["status"]
    ),
    kind!(
        "apps",
        "v1",
        "StatefulSet",
        "statefulsets",
        ["statefulset", "sts"],
        true,
        ["status", "scale"]
    ),
    kind!(
        "apps",
        "v1",
        "ControllerRevision",
        "controllerrevisions",
        ["controllerrevision"],
        true
    ),
];

impl ResourceKind {
    /// `apiVersion` as objects carry it (`v1`, `apps/v1`).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The kind for an object's `apiVersion` and `kind`.
    pub fn from_type(api_version: &str, kind: &str) -> Option<&'static ResourceKind> {
        KINDS
            .iter()
            .find(|k| k.kind == kind && k.api_version() == api_version)
    }

    /// The kind a user means by `name`: plural, alias or kind, any case.
    pub fn from_name(name: &str) -> Option<&'static ResourceKind> {
        let name = name.to_ascii_lowercase();
        KINDS.iter().find(|k| {
            k.plural == name || k.kind.eq_ignore_ascii_case(&name) || k.aliases.contains(&&*name)
        })
    }

    /// The singular resource name (`deployment`), as discovery reports it.
    pub fn singular(&self) -> String {
        self.kind.to_ascii_lowercase()
    }

    /// The short names discovery reports (`deploy`): the aliases other than
    /// the singular name, so `kubectl get deploy` works as `c4m get deploy`.
    pub fn short_names(&self) -> Vec<&'static str> {
        let singular = self.singular();
        self.aliases
            .iter()
            .copied()
            .filter(|alias| *alias != singular)
            .collect()
    }

    /// Whether objects of this kind have the subresource `name`.
    pub fn has_subresource(&self, name: &str) -> bool {
        self.subresources.contains(&name)
    }

    /// The kind served under an API group, version and plural (URL form).
    pub fn from_path(group: &str, version: &str, plural: &str) -> Option<&'static ResourceKind> {
        KINDS
            .iter()
            .find(|k| k.group == group && k.version == version && k.plural == plural)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve() {
        assert_eq!(ResourceKind::from_name("ms").unwrap().kind, "Microservice");
        assert_eq!(ResourceKind::from_name("instances").unwrap().kind, "Pod");
        assert_eq!(
            ResourceKind::from_name("Deployment").unwrap().plural,
            "deployments"
        );
        assert!(ResourceKind::from_name("widgets").is_none());
        assert_eq!(
            ResourceKind::from_type("apps/v1", "Deployment")
                .unwrap()
                .plural,
            "deployments"
        );
        assert!(ResourceKind::from_type("v1", "Deployment").is_none());
        assert!(!ResourceKind::from_name("nodes").unwrap().namespaced);
        assert!(!ResourceKind::from_name("pc").unwrap().namespaced);
        assert_eq!(
            ResourceKind::from_name("pdb").unwrap().api_version(),
            "policy/v1"
        );
        assert_eq!(
            ResourceKind::from_path("scheduling.k8s.io", "v1", "priorityclasses")
                .unwrap()
                .kind,
            "PriorityClass"
        );
    }
}
