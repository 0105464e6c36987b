//! The registry login a container's image pull uses, from the logins the
//! control plane resolved from the pod's `imagePullSecrets`
//! ([`annotations::REGISTRY_LOGINS`](super::annotations::REGISTRY_LOGINS)).

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use super::annotations;
use crate::{Reference, RegistryLogin};

/// The registry a docker config key names, as image references name it:
/// scheme, path and Docker Hub's aliases dropped
/// (`https://index.docker.io/v1/` is `docker.io`).
pub fn registry_of_config_key(key: &str) -> String {
    let host = key
        .split_once("://")
        .map_or(key, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        _ => host,
    }
}

/// The login for the registry of `image` among the pod's resolved
/// `imagePullSecrets`, if one names that registry.
pub fn registry_login(pod: &Pod, image: &str) -> Option<RegistryLogin> {
    let logins = pod
        .metadata
        .annotations
        .as_ref()?
        .get(annotations::REGISTRY_LOGINS)?;
    let logins: Value = serde_json::from_str(logins).ok()?;
    let registry = Reference::parse(image).ok()?.registry;
    logins
        .as_object()?
        .iter()
        .find(|(key, _)| registry_of_config_key(key) == registry)
        .and_then(|(_, login)| {
            Some(RegistryLogin {
                username: login["username"].as_str()?.to_string(),
                password: login["password"].as_str()?.to_string(),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_match_the_images_registry() {
        assert_eq!(
            registry_of_config_key("https://index.docker.io/v1/"),
            "docker.io"
        );
        assert_eq!(
            registry_of_config_key("http://127.0.0.1:5000/v2/"),
            "127.0.0.1:5000"
        );
        assert_eq!(registry_of_config_key("Quay.io"), "quay.io");
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"annotations": {annotations::REGISTRY_LOGINS: serde_json::json!({
                "127.0.0.1:5000": {"username": "alice", "password": "s3cret"},
                "https://index.docker.io/v1/": {"username": "bob", "password": "hub"},
            }).to_string()}},
        }))
        .unwrap();
        let alice = RegistryLogin {
            username: "alice".into(),
            password: "s3cret".into(),
        };
        assert_eq!(
            registry_login(&pod, "127.0.0.1:5000/team/bb:1"),
            Some(alice)
        );
        assert_eq!(registry_login(&pod, "busybox").unwrap().username, "bob");
        assert_eq!(registry_login(&pod, "127.0.0.1:5001/team/bb:1"), None);
        assert_eq!(registry_login(&Pod::default(), "busybox"), None);
        let shown = format!("{:?}", registry_login(&pod, "busybox").unwrap());
        assert!(!shown.contains("hub"), "{shown}");
    }
}
