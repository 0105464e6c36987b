//! A pod's `imagePullSecrets`, resolved for its node as the kubelet reads
//! them: each `kubernetes.io/dockerconfigjson` (or legacy
//! `kubernetes.io/dockercfg`) Secret's registry logins, passed to the agent
//! in annotation [`c4m_core::annotations::REGISTRY_LOGINS`] of the copy it
//! receives (never stored). A Secret that is missing or of another type is
//! skipped, as the kubelet skips it: the pull then goes without it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use crate::cache::Cache;
use crate::objects::kind;

const DOCKER_CONFIG_JSON: (&str, &str) = ("kubernetes.io/dockerconfigjson", ".dockerconfigjson");
const DOCKER_CFG: (&str, &str) = ("kubernetes.io/dockercfg", ".dockercfg");

/// `pod` with the logins of its `imagePullSecrets` in its
/// [`REGISTRY_LOGINS`](c4m_core::annotations::REGISTRY_LOGINS) annotation
/// (the first Secret naming a registry wins); without them, any such
/// annotation is removed, so a pod cannot bring its own.
pub(crate) fn with_registry_logins(cache: &Cache, mut pod: Value) -> Value {
    let namespace = pod["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    let mut logins = Map::new();
    for reference in pod["spec"]["imagePullSecrets"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let Some(name) = reference["name"].as_str() else {
            continue;
        };
        let Some(secret) = cache.get(kind("secrets"), &namespace, name) else {
            tracing::debug!(%namespace, secret = name, "an imagePullSecret is missing");
            continue;
        };
        for (registry, login) in secret_logins(&secret) {
            logins.entry(registry).or_insert(login);
        }
    }
    if let Some(annotations) = pod["metadata"]["annotations"].as_object_mut() {
        annotations.remove(c4m_core::annotations::REGISTRY_LOGINS);
    }
    if logins.is_empty() {
        return pod;
    }
    // A stored instance's annotations are an object (checked on write):
    // there is always room for this one.
    let _ = crate::json::set_path(
        &mut pod,
        &[
            "metadata",
            "annotations",
            c4m_core::annotations::REGISTRY_LOGINS,
        ],
        json!(Value::Object(logins).to_string()),
    );
    pod
}

/// The (registry, `{"username", "password"}`) pairs of a docker config
/// Secret; none for other Secrets or unreadable data.
fn secret_logins(secret: &Value) -> Vec<(String, Value)> {
    let secret_type = secret["type"].as_str().unwrap_or_default();
    let Some(key) = [DOCKER_CONFIG_JSON, DOCKER_CFG]
        .iter()
        .find(|(t, _)| *t == secret_type)
        .map(|(_, key)| *key)
    else {
        return Vec::new();
    };
    let config = secret["data"][key]
        .as_str()
        .and_then(|data| STANDARD.decode(data.trim()).ok())
        .or_else(|| {
            secret["stringData"][key]
                .as_str()
                .map(|s| s.as_bytes().to_vec())
        })
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .unwrap_or_default();
    // `.dockerconfigjson` has the registries under "auths"; `.dockercfg`
    // is that map itself.
    let auths = config.get("auths").unwrap_or(&config);
    auths
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(registry, entry)| {
            let (username, password) =
                match (entry["username"].as_str(), entry["password"].as_str()) {
                    (Some(user), Some(password)) => (user.to_string(), password.to_string()),
                    _ => {
                        let auth = STANDARD.decode(entry["auth"].as_str()?.trim()).ok()?;
                        let auth = String::from_utf8(auth).ok()?;
                        let (user, password) = auth.split_once(':')?;
                        (user.to_string(), password.to_string())
                    }
                };
            Some((
                c4m_core::registry_of_config_key(registry),
                json!({"username": username, "password": password}),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_configs_give_their_logins() {
        let config = json!({"auths": {
            "http://127.0.0.1:5000/v2/": {"auth": STANDARD.encode("alice:s3:cret")},
            "quay.io": {"username": "bob", "password": "pw"},
            "broken": {"auth": "%%%"},
        }});
        let secret = json!({
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": STANDARD.encode(config.to_string())},
        });
        let mut logins = secret_logins(&secret);
        logins.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            logins,
            [
                (
                    "127.0.0.1:5000".to_string(),
                    json!({"username": "alice", "password": "s3:cret"})
                ),
                (
                    "quay.io".to_string(),
                    json!({"username": "bob", "password": "pw"})
                ),
            ]
        );
        let legacy = json!({
            "type": "kubernetes.io/dockercfg",
            "stringData": {".dockercfg": json!({"quay.io": {"username": "c", "password": "d"}}).to_string()},
        });
        assert_eq!(secret_logins(&legacy).len(), 1);
        let opaque = json!({"type": "Opaque", "data": {".dockerconfigjson": STANDARD.encode(config.to_string())}});
        assert!(secret_logins(&opaque).is_empty());
    }
}
