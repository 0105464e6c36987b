//! The storage kinds' columns, as kubectl prints them against Kubernetes
//! (kube-apiserver's printers for PersistentVolume, PersistentVolumeClaim
//! and StorageClass; the snapshotter CRDs' `additionalPrinterColumns`),
//! and StatefulSet's.

use serde_json::Value;

use super::{AGE, Column, NAME, since, template_containers, text};

/// Access modes as kubectl abbreviates them, in its order (`RWO,RWX`).
fn access_modes(modes: &Value) -> String {
    let modes: Vec<&str> = modes
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(mode, _)| modes.contains(mode))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

/// The phase, or `Terminating` while the object is being deleted.
fn phase(object: &Value) -> String {
    if object["metadata"]["deletionTimestamp"].is_string() {
        return "Terminating".into();
    }
    text(&object["status"]["phase"])
}

/// A field kubectl prints as `<unset>` when absent.
fn or_unset(value: &Value) -> String {
    match text(value) {
        t if t.is_empty() => "<unset>".into(),
        t => t,
    }
}

pub(super) static PERSISTENT_VOLUME: &[Column] = &[
    NAME,
    Column::new("CAPACITY", "The volume's size", |pv| {
        text(&pv["spec"]["capacity"]["storage"])
    }),
    Column::new("ACCESS MODES", "How the volume may be mounted", |pv| {
        access_modes(&pv["spec"]["accessModes"])
    }),
    Column::new(
        "RECLAIM POLICY",
        "What happens to the volume when its claim is deleted",
        |pv| text(&pv["spec"]["persistentVolumeReclaimPolicy"]),
    ),
    Column::new("STATUS", "The volume's phase", phase),
    Column::new("CLAIM", "The claim bound to the volume", |pv| {
        let claim = &pv["spec"]["claimRef"];
        match (claim["namespace"].as_str(), claim["name"].as_str()) {
            (Some(namespace), Some(name)) => format!("{namespace}/{name}"),
            _ => String::new(),
        }
    }),
    Column::new("STORAGECLASS", "The volume's class", |pv| {
        text(&pv["spec"]["storageClassName"])
    }),
    Column::new(
        "VOLUMEATTRIBUTESCLASS",
        "The volume's attributes class",
        |pv| or_unset(&pv["spec"]["volumeAttributesClassName"]),
    ),
    Column::new("REASON", "Why the volume is in its phase", |pv| {
        text(&pv["status"]["reason"])
    }),
    AGE,
    Column::new("VOLUMEMODE", "Filesystem or Block", |pv| {
        or_unset(&pv["spec"]["volumeMode"])
    })
    .wide(),
];

pub(super) static PERSISTENT_VOLUME_CLAIM: &[Column] = &[
    NAME,
    Column::new("STATUS", "The claim's phase", phase),
    Column::new("VOLUME", "The volume bound to the claim", |c| {
        text(&c["spec"]["volumeName"])
    }),
    Column::new("CAPACITY", "The bound volume's size", |c| {
        if text(&c["spec"]["volumeName"]).is_empty() {
            return String::new();
        }
        text(&c["status"]["capacity"]["storage"])
    }),
    Column::new("ACCESS MODES", "How the bound volume may be mounted", |c| {
        if text(&c["spec"]["volumeName"]).is_empty() {
            return String::new();
        }
        access_modes(&c["status"]["accessModes"])
    }),
    Column::new("STORAGECLASS", "The claim's class", |c| {
        text(&c["spec"]["storageClassName"])
    }),
    Column::new(
        "VOLUMEATTRIBUTESCLASS",
        "The claim's attributes class",
        |c| or_unset(&c["spec"]["volumeAttributesClassName"]),
    ),
    AGE,
    Column::new("VOLUMEMODE", "Filesystem or Block", |c| {
        or_unset(&c["spec"]["volumeMode"])
    })
    .wide(),
];

pub(super) static STORAGE_CLASS: &[Column] = &[
    Column::new("NAME", "Name of the class, (default) marked", |c| {
        let name = text(&c["metadata"]["name"]);
        let annotations = &c["metadata"]["annotations"];
        let default = [
            "storageclass.kubernetes.io/is-default-class",
            "storageclass.beta.kubernetes.io/is-default-class",
        ]
        .iter()
        .any(|key| annotations[key] == "true");
        if default {
            format!("{name} (default)")
        } else {
            name
        }
    }),
    Column::new("PROVISIONER", "What provisions the class' volumes", |c| {
        text(&c["provisioner"])
    }),
    Column::new(
        "RECLAIMPOLICY",
        "What happens to a volume whose claim is deleted",
        |c| c["reclaimPolicy"].as_str().unwrap_or("Delete").to_string(),
    ),
    Column::new("VOLUMEBINDINGMODE", "When volumes are bound", |c| {
        c["volumeBindingMode"]
            .as_str()
            .unwrap_or("Immediate")
            .to_string()
    }),
    Column::new("ALLOWVOLUMEEXPANSION", "Whether claims may grow", |c| {
        (c["allowVolumeExpansion"] == true).to_string()
    }),
    AGE,
];

pub(super) static VOLUME_SNAPSHOT: &[Column] = &[
    NAME,
    Column::new(
        "READYTOUSE",
        "Whether the snapshot can restore a volume",
        |s| text(&s["status"]["readyToUse"]),
    ),
    Column::new("SOURCEPVC", "The claim snapshotted", |s| {
        text(&s["spec"]["source"]["persistentVolumeClaimName"])
    }),
    Column::new(
        "SOURCESNAPSHOTCONTENT",
        "The pre-provisioned content",
        |s| text(&s["spec"]["source"]["volumeSnapshotContentName"]),
    ),
    Column::new(
        "RESTORESIZE",
        "The least size of a volume restored from it",
        |s| text(&s["status"]["restoreSize"]),
    ),
    Column::new("SNAPSHOTCLASS", "The snapshot's class", |s| {
        text(&s["spec"]["volumeSnapshotClassName"])
    }),
    Column::new("SNAPSHOTCONTENT", "The content bound to it", |s| {
        text(&s["status"]["boundVolumeSnapshotContentName"])
    }),
    Column::new("CREATIONTIME", "When the snapshot was taken", |s| {
        match s["status"]["creationTime"] {
            Value::Null => String::new(),
            ref t => since(t),
        }
    }),
    AGE,
];

pub(super) static VOLUME_SNAPSHOT_CLASS: &[Column] = &[
    NAME,
    Column::new("DRIVER", "The driver taking the snapshots", |c| {
        text(&c["driver"])
    }),
    Column::new(
        "DELETIONPOLICY",
        "What happens to a content whose snapshot is deleted",
        |c| text(&c["deletionPolicy"]),
    ),
    AGE,
];

pub(super) static VOLUME_SNAPSHOT_CONTENT: &[Column] = &[
    NAME,
    Column::new(
        "READYTOUSE",
        "Whether the snapshot can restore a volume",
        |c| text(&c["status"]["readyToUse"]),
    ),
    Column::new("RESTORESIZE", "Bytes of a volume restored from it", |c| {
        text(&c["status"]["restoreSize"])
    }),
    Column::new(
        "DELETIONPOLICY",
        "What happens when its snapshot is deleted",
        |c| text(&c["spec"]["deletionPolicy"]),
    ),
    Column::new("DRIVER", "The driver that took it", |c| {
        text(&c["spec"]["driver"])
    }),
    Column::new("VOLUMESNAPSHOTCLASS", "Its class", |c| {
        text(&c["spec"]["volumeSnapshotClassName"])
    }),
    Column::new("VOLUMESNAPSHOT", "The snapshot bound to it", |c| {
        text(&c["spec"]["volumeSnapshotRef"]["name"])
    }),
    Column::new(
        "VOLUMESNAPSHOTNAMESPACE",
        "That snapshot's namespace",
        |c| text(&c["spec"]["volumeSnapshotRef"]["namespace"]),
    ),
    AGE,
];

pub(super) static STATEFUL_SET: &[Column] = &[
    NAME,
    Column::new("READY", "Ready replicas of desired", super::ready_replicas),
    AGE,
    Column::new("CONTAINERS", "Names of the containers", |s| {
        template_containers(&s["spec"]["template"], "name")
    })
    .wide(),
    Column::new("IMAGES", "Images of the containers", |s| {
        template_containers(&s["spec"]["template"], "image")
    })
    .wide(),
];

#[cfg(test)]
mod tests {
    use c4m_core::ResourceKind;
    use serde_json::json;

    use super::super::{columns, row};

    fn table(kind: &str, object: &serde_json::Value, priority: u8) -> Vec<(String, String)> {
        let kind = ResourceKind::from_name(kind).unwrap();
        columns(kind)
            .iter()
            .zip(row(kind, object))
            .filter(|(c, _)| c.priority <= priority)
            .map(|(c, cell)| (c.name.to_string(), cell))
            .collect()
    }

    fn cells(table: &[(String, String)]) -> Vec<&str> {
        table.iter().map(|(_, cell)| cell.as_str()).collect()
    }

    fn headers(table: &[(String, String)]) -> Vec<&str> {
        table.iter().map(|(name, _)| name.as_str()).collect()
    }

    #[test]
    fn persistent_volumes_and_claims_show_kubectl_columns() {
        let pv = json!({"metadata": {"name": "pvc-1"},
            "spec": {"capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteMany", "ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "local",
                "volumeMode": "Filesystem",
                "claimRef": {"namespace": "default", "name": "data"}},
            "status": {"phase": "Bound"}});
        let wide = table("pv", &pv, 1);
        assert_eq!(
            headers(&wide),
            [
                "NAME",
                "CAPACITY",
                "ACCESS MODES",
                "RECLAIM POLICY",
                "STATUS",
                "CLAIM",
                "STORAGECLASS",
                "VOLUMEATTRIBUTESCLASS",
                "REASON",
                "AGE",
                "VOLUMEMODE"
            ]
        );
        assert_eq!(
            cells(&wide),
            [
                "pvc-1",
                "1Gi",
                "RWO,RWX",
                "Delete",
                "Bound",
                "default/data",
                "local",
                "<unset>",
                "",
                "-",
                "Filesystem"
            ]
        );

        let mut claim = json!({"metadata": {"name": "data", "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"storageClassName": "local", "volumeName": "pvc-1"},
            "status": {"phase": "Bound", "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"]}});
        let default = table("pvc", &claim, 0);
        assert_eq!(
            headers(&default),
            [
                "NAME",
                "STATUS",
                "VOLUME",
                "CAPACITY",
                "ACCESS MODES",
                "STORAGECLASS",
                "VOLUMEATTRIBUTESCLASS",
                "AGE"
            ]
        );
        assert_eq!(
            cells(&default)[..7],
            [
                "data",
                "Terminating",
                "pvc-1",
                "1Gi",
                "RWO",
                "local",
                "<unset>"
            ]
        );
        claim["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("deletionTimestamp");
        claim["spec"]["volumeName"] = json!(null);
        claim["status"] = json!({"phase": "Pending"});
        assert_eq!(
            cells(&table("pvc", &claim, 0))[..5],
            ["data", "Pending", "", "", ""]
        );
    }

    #[test]
    fn classes_and_snapshots_show_kubectl_columns() {
        let class = json!({"metadata": {"name": "local",
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "c4m.io/local", "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer", "allowVolumeExpansion": true});
        let sc = table("sc", &class, 0);
        assert_eq!(
            headers(&sc),
            [
                "NAME",
                "PROVISIONER",
                "RECLAIMPOLICY",
                "VOLUMEBINDINGMODE",
                "ALLOWVOLUMEEXPANSION",
                "AGE"
            ]
        );
        assert_eq!(
            cells(&sc),
            [
                "local (default)",
                "c4m.io/local",
                "Delete",
                "WaitForFirstConsumer",
                "true",
                "-"
            ]
        );
        let bare = json!({"metadata": {"name": "nfs"}, "provisioner": "c4m.io/nfs"});
        assert_eq!(
            cells(&table("sc", &bare, 0)),
            ["nfs", "c4m.io/nfs", "Delete", "Immediate", "false", "-"]
        );

        let snapshot = json!({"metadata": {"name": "snap"},
            "spec": {"source": {"persistentVolumeClaimName": "data"},
                "volumeSnapshotClassName": "local"},
            "status": {"readyToUse": true, "restoreSize": "1Gi",
                "boundVolumeSnapshotContentName": "snapcontent-1"}});
        let vs = table("volumesnapshot", &snapshot, 0);
        assert_eq!(
            headers(&vs),
            [
                "NAME",
                "READYTOUSE",
                "SOURCEPVC",
                "SOURCESNAPSHOTCONTENT",
                "RESTORESIZE",
                "SNAPSHOTCLASS",
                "SNAPSHOTCONTENT",
                "CREATIONTIME",
                "AGE"
            ]
        );
        assert_eq!(
            cells(&vs),
            [
                "snap",
                "true",
                "data",
                "",
                "1Gi",
                "local",
                "snapcontent-1",
                "",
                "-"
            ]
        );
        let content = json!({"metadata": {"name": "snapcontent-1"},
            "spec": {"deletionPolicy": "Delete", "driver": "c4m.io/local",
                "volumeSnapshotClassName": "local",
                "volumeSnapshotRef": {"name": "snap", "namespace": "default"}},
            "status": {"readyToUse": true, "restoreSize": 1073741824}});
        assert_eq!(
            cells(&table("volumesnapshotcontent", &content, 0)),
            [
                "snapcontent-1",
                "true",
                "1073741824",
                "Delete",
                "c4m.io/local",
                "local",
                "snap",
                "default",
                "-"
            ]
        );
        let class = json!({"metadata": {"name": "local"}, "driver": "c4m.io/local",
            "deletionPolicy": "Delete"});
        assert_eq!(
            headers(&table("volumesnapshotclass", &class, 0)),
            ["NAME", "DRIVER", "DELETIONPOLICY", "AGE"]
        );
    }

    #[test]
    fn stateful_sets_show_ready_and_their_containers_wide() {
        let sts = json!({"metadata": {"name": "web"},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [
                {"name": "redis", "image": "redis:7"}, {"name": "exporter", "image": "exp:1"}]}}},
            "status": {"readyReplicas": 1}});
        let wide = table("statefulset", &sts, 1);
        assert_eq!(
            headers(&wide),
            ["NAME", "READY", "AGE", "CONTAINERS", "IMAGES"]
        );
        assert_eq!(
            cells(&wide),
            ["web", "1/2", "-", "redis,exporter", "redis:7,exp:1"]
        );
    }
}
