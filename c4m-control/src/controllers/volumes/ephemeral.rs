//! Generic ephemeral volumes, as Kubernetes' ephemeral-volume controller
//! makes them: each `ephemeral` volume of a pod gets the claim
//! `<pod>-<volume>` from its `volumeClaimTemplate`, controlled by the pod,
//! so the garbage collector deletes it with the pod.

use serde_json::{Value, json};

use crate::Result;
use crate::cache::Cache;
use crate::events::EventType;
use crate::objects::{Objects, kind, name_of, namespace_of};

/// The Event source.
const COMPONENT: &str = "ephemeral_volume";

/// The claims `pod` uses, by volume name: `persistentVolumeClaim.claimName`,
/// or `<pod>-<volume>` for an `ephemeral` volume (with `true`).
pub(crate) fn claims_of_pod(pod: &Value) -> Vec<(String, String, bool)> {
    pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|volume| {
            let name = volume["name"].as_str()?;
            if let Some(claim) = volume["persistentVolumeClaim"]["claimName"].as_str() {
                Some((name.to_string(), claim.to_string(), false))
            } else if volume["ephemeral"].is_object() {
                Some((name.to_string(), format!("{}-{name}", name_of(pod)), true))
            } else {
                None
            }
        })
        .collect()
}

/// Whether `claim` was made for `pod` (the pod controls it).
pub(crate) fn made_for(claim: &Value, pod: &Value) -> bool {
    crate::pods::controller_uid(claim).is_some()
        && crate::pods::controller_uid(claim) == pod["metadata"]["uid"].as_str()
}

/// The claim of `pod`'s ephemeral volume `volume`.
fn claim_for(pod: &Value, volume: &Value) -> Value {
    let template = &volume["ephemeral"]["volumeClaimTemplate"];
    let mut metadata = json!({
        "name": format!("{}-{}", name_of(pod), volume["name"].as_str().unwrap_or_default()),
        "namespace": namespace_of(pod),
        "ownerReferences": [{
            "apiVersion": "v1", "kind": "Pod", "name": name_of(pod),
            "uid": pod["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true,
        }],
    });
    for field in ["labels", "annotations"] {
        if template["metadata"][field].is_object() {
            metadata[field] = template["metadata"][field].clone();
        }
    }
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata,
        "spec": template["spec"],
    })
}

/// Creates the claims of the pods' ephemeral volumes that are missing.
pub(crate) async fn reconcile(
    objects: &Objects,
    cache: &Cache,
    nodes: &super::NodeStorage<'_>,
) -> Result<Option<i64>> {
    let mut written = None;
    let mut pods = Vec::new();
    cache.for_each_stored(
        &crate::objects::prefix(kind("pods"), None),
        |key, stored| {
            if stored.contains(b"\"ephemeral\"") {
                pods.push((key.to_string(), stored.clone()));
            }
        },
    );
    for (key, stored) in pods {
        let Some(pod) = stored.decode(&key) else {
            continue;
        };
        if crate::deletion::is_deleting(&pod) || crate::pods::is_terminal(&pod) {
            continue;
        }
        for volume in pod["spec"]["volumes"].as_array().into_iter().flatten() {
            if !volume["ephemeral"].is_object() {
                continue;
            }
            let claim = claim_for(&pod, volume);
            let name = name_of(&claim).to_string();
            if let Some(existing) =
                cache.get(kind("persistentvolumeclaims"), namespace_of(&pod), &name)
            {
                if !made_for(&existing, &pod) {
                    nodes.note(
                        objects,
                        &pod,
                        EventType::Warning,
                        "FailedBinding",
                        format!(
                            "PVC {}/{name} was not created for pod {}/{} (pod is not owner)",
                            namespace_of(&pod),
                            namespace_of(&pod),
                            name_of(&pod)
                        ),
                        COMPONENT,
                    );
                }
                continue;
            }
            match objects
                .create(kind("persistentvolumeclaims"), namespace_of(&pod), claim)
                .await
            {
                Ok(created) => {
                    written = super::super::latest(written, crate::objects::revision_of(&created));
                }
                Err(crate::Error::AlreadyExists { .. }) => {}
                Err(e) => {
                    nodes.note(
                        objects,
                        &pod,
                        EventType::Warning,
                        "FailedCreate",
                        format!("cannot create the claim {name} of ephemeral volume: {e}"),
                        COMPONENT,
                    );
                }
            }
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_uses_its_named_claims_and_one_per_ephemeral_volume() {
        let pod = json!({"metadata": {"name": "web-0", "uid": "u"}, "spec": {"volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": "data-web-0"}},
            {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
            {"name": "tmp", "emptyDir": {}},
        ]}});
        assert_eq!(
            claims_of_pod(&pod),
            [
                ("data".to_string(), "data-web-0".to_string(), false),
                ("scratch".to_string(), "web-0-scratch".to_string(), true)
            ]
        );
        let claim = claim_for(&pod, &pod["spec"]["volumes"][1]);
        assert_eq!(claim["metadata"]["name"], "web-0-scratch");
        assert!(made_for(&claim, &pod));
    }
}
