//! API discovery, as kubectl and the client libraries read it: the legacy
//! documents (`/api`, `/apis`, `/api/v1`, `/apis/{group}/{version}`), the
//! aggregated ones (`apidiscovery.k8s.io/v2`) and OpenAPI v3 (the paths,
//! their PATCH operations and the kinds' schemas), all generated from
//! [`c4m_core::KINDS`] so a kind added there is discovered everywhere.

use c4m_core::{KINDS, ResourceKind};
use serde_json::{Value, json};

/// The `Accept` type kubectl 1.32 asks for first on `/api` and `/apis`.
pub(crate) const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Verbs on an object kind.
const VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

/// Whether an `Accept` header asks for aggregated discovery (v2).
pub(crate) fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|media| {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        params.contains(&"g=apidiscovery.k8s.io")
            && params.contains(&"v=v2")
            && params.contains(&"as=APIGroupDiscoveryList")
    })
}

/// Resources served by handlers of their own, not stored: the resource
/// metrics API (`metrics.rs`), read-only as metrics-server serves it.
/// (group, version, plural, kind, namespaced).
const READ_ONLY: &[(&str, &str, &str, &str, bool)] = &[
    ("metrics.k8s.io", "v1beta1", "pods", "PodMetrics", true),
    ("metrics.k8s.io", "v1beta1", "nodes", "NodeMetrics", false),
];

/// Verbs on a read-only resource.
const READ_VERBS: &[&str] = &["get", "list"];

/// The non-core groups and versions, in the order `KINDS` first names them.
fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut seen = Vec::new();
    for kind in KINDS.iter().filter(|k| !k.group.is_empty()) {
        if !seen.contains(&(kind.group, kind.version)) {
            seen.push((kind.group, kind.version));
        }
    }
    seen
}

/// Each non-core group with its versions, the preferred (first named) one
/// first, the read-only groups last.
fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut groups: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    let read_only = READ_ONLY.iter().map(|(g, v, ..)| (*g, *v));
    for (group, version) in group_versions().into_iter().chain(read_only) {
        match groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, versions)) if versions.contains(&version) => {}
            Some((_, versions)) => versions.push(version),
            None => groups.push((group, vec![version])),
        }
    }
    groups
}

/// `/api`: the core group's versions.
pub(crate) fn api_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    })
}

/// `/apis`: every named group.
pub(crate) fn group_list() -> Value {
    let groups: Vec<Value> = groups()
        .into_iter()
        .map(|(group, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|version| json!({"groupVersion": format!("{group}/{version}"), "version": version}))
                .collect();
            json!({"name": group, "preferredVersion": versions[0].clone(), "versions": versions})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// The read-only resources of a group version.
fn read_only(
    group: &str,
    version: &str,
) -> impl Iterator<Item = &'static (&'static str, &'static str, &'static str, &'static str, bool)> {
    let (group, version) = (group.to_string(), version.to_string());
    READ_ONLY
        .iter()
        .filter(move |(g, v, ..)| *g == group && *v == version)
}

/// What a subresource answers with: (group, version, kind, verbs).
fn subresource_shape(
    kind: &ResourceKind,
    subresource: &str,
) -> (
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
) {
    match subresource {
        "scale" => ("autoscaling", "v1", "Scale", &["get", "patch", "update"]),
        "log" => ("", "v1", kind.kind, &["get"]),
        "exec" => ("", "v1", "PodExecOptions", &["create", "get"]),
        "attach" => ("", "v1", "PodAttachOptions", &["create", "get"]),
        "portforward" => ("", "v1", "PodPortForwardOptions", &["create", "get"]),
        _ => (
            kind.group,
            kind.version,
            kind.kind,
            &["get", "patch", "update"],
        ),
    }
}

/// `/api/v1` or `/apis/{group}/{version}`: an APIResourceList, or None for
/// a group version c4m does not serve.
pub(crate) fn resource_list(group: &str, version: &str) -> Option<Value> {
    let kinds: Vec<&ResourceKind> = KINDS
        .iter()
        .filter(|k| k.group == group && k.version == version)
        .collect();
    let mut resources: Vec<Value> = read_only(group, version)
        .map(|(_, _, plural, kind, namespaced)| {
            json!({"name": plural, "singularName": "", "namespaced": namespaced,
                "kind": kind, "verbs": READ_VERBS})
        })
        .collect();
    if kinds.is_empty() && resources.is_empty() {
        return None;
    }
    for kind in kinds {
        resources.push(json!({
            "name": kind.plural,
            "singularName": kind.singular(),
            "namespaced": kind.namespaced,
            "kind": kind.kind,
            "verbs": VERBS,
            "shortNames": kind.short_names(),
        }));
        for sub in kind.subresources {
            let (sub_group, sub_version, sub_kind, verbs) = subresource_shape(kind, sub);
            let mut resource = json!({
                "name": format!("{}/{sub}", kind.plural),
                "singularName": "",
                "namespaced": kind.namespaced,
                "kind": sub_kind,
                "verbs": verbs,
            });
            if sub_group != kind.group || sub_version != kind.version {
                resource["group"] = json!(sub_group);
                resource["version"] = json!(sub_version);
            }
            resources.push(resource);
        }
    }
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": if group.is_empty() { version.to_string() } else { format!("{group}/{version}") },
        "resources": resources,
    }))
}

/// One aggregated discovery entry (`APIResourceDiscovery`).
fn aggregated_resource(kind: &ResourceKind) -> Value {
    let subresources: Vec<Value> = kind
        .subresources
        .iter()
        .map(|sub| {
            let (group, version, sub_kind, verbs) = subresource_shape(kind, sub);
            json!({
                "subresource": sub,
                "responseKind": {"group": group, "version": version, "kind": sub_kind},
                "verbs": verbs,
            })
        })
        .collect();
    json!({
        "resource": kind.plural,
        "responseKind": {"group": kind.group, "version": kind.version, "kind": kind.kind},
        "scope": if kind.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": kind.singular(),
        "verbs": VERBS,
        "shortNames": kind.short_names(),
        "subresources": subresources,
    })
}

/// `/api` (`core`) or `/apis` as an `APIGroupDiscoveryList`, each group's
/// versions in order of preference.
pub(crate) fn aggregated(core: bool) -> Value {
    let groups = if core {
        vec![("", vec!["v1"])]
    } else {
        groups()
    };
    let items: Vec<Value> = groups
        .into_iter()
        .map(|(group, versions)| {
            let versions: Vec<Value> = versions
                .into_iter()
                .map(|version| {
                    let mut resources: Vec<Value> = KINDS
                        .iter()
                        .filter(|k| k.group == group && k.version == version)
                        .map(aggregated_resource)
                        .collect();
                    resources.extend(read_only(group, version).map(
                        |(group, version, plural, kind, namespaced)| {
                            json!({
                                "resource": plural,
                                "responseKind": {"group": group, "version": version, "kind": kind},
                                "scope": if *namespaced { "Namespaced" } else { "Cluster" },
                                "verbs": READ_VERBS,
                            })
                        },
                    ));
                    json!({"version": version, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({
                "metadata": {"name": group, "creationTimestamp": null},
                "versions": versions,
            })
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

/// The URL path (without `/`) of a group version's API and OpenAPI docs.
fn group_version_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: where each group version's document is.
pub(crate) fn openapi_v3_root() -> Value {
    let mut paths = serde_json::Map::new();
    for (group, version) in std::iter::once(("", "v1")).chain(group_versions()) {
        let path = group_version_path(group, version);
        paths.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}")}),
        );
    }
    json!({"paths": paths})
}

/// `/openapi/v3/api/v1`, `/openapi/v3/apis/{group}/{version}`: each kind's
/// object path with its PATCH operation, which names its kind and takes
/// `fieldValidation` (kubectl reads it to learn the server validates fields
/// itself: c4m rejects unknown fields), and the kinds' schemas
/// (`openapi_schemas.rs`), which `kubectl explain` shows.
pub(crate) fn openapi_v3_group_version(group: &str, version: &str) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    for kind in KINDS
        .iter()
        .filter(|k| k.group == group && k.version == version)
    {
        let namespace = if kind.namespaced {
            "namespaces/{namespace}/"
        } else {
            ""
        };
        let path = format!(
            "/{}/{namespace}{}/{{name}}",
            group_version_path(group, version),
            kind.plural
        );
        let gvk = json!({"group": group, "version": version, "kind": kind.kind});
        let field_validation =
            json!({"name": "fieldValidation", "in": "query", "schema": {"type": "string"}});
        paths.insert(
            path,
            json!({
                "get": {"x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": "get"},
                "put": {"x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": "put",
                    "parameters": [field_validation]},
                "patch": {"x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": "patch",
                    "parameters": [field_validation]},
            }),
        );
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "c4m", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": crate::openapi_schemas::schemas(group, version)},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource<'a>(list: &'a Value, name: &str) -> &'a Value {
        list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing from {list}"))
    }

    #[test]
    fn core_resources_with_subresources() {
        let list = resource_list("", "v1").unwrap();
        assert_eq!(list["groupVersion"], "v1");
        let pods = resource(&list, "pods");
        assert_eq!(pods["kind"], "Pod");
        assert_eq!(pods["singularName"], "pod");
        assert_eq!(pods["namespaced"], true);
        assert!(
            pods["shortNames"]
                .as_array()
                .unwrap()
                .contains(&json!("po"))
        );
        assert!(pods["verbs"].as_array().unwrap().contains(&json!("watch")));
        assert_eq!(resource(&list, "pods/log")["verbs"], json!(["get"]));
        assert_eq!(resource(&list, "pods/status")["kind"], "Pod");
        assert_eq!(resource(&list, "nodes")["namespaced"], false);
        assert!(resource_list("apps", "v2").is_none());
    }

    #[test]
    fn named_groups() {
        let apps = resource_list("apps", "v1").unwrap();
        assert_eq!(apps["groupVersion"], "apps/v1");
        let scale = resource(&apps, "deployments/scale");
        assert_eq!(
            (&scale["kind"], &scale["group"], &scale["version"]),
            (&json!("Scale"), &json!("autoscaling"), &json!("v1"))
        );
        assert_eq!(resource(&apps, "deployments/status")["kind"], "Deployment");
        let c4m = resource_list("c4m.io", "v1").unwrap();
        assert_eq!(resource(&c4m, "microservices")["shortNames"], json!(["ms"]));
        let groups = group_list();
        let names: Vec<&str> = groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        assert!(
            names.contains(&"apps") && names.contains(&"c4m.io"),
            "{names:?}"
        );
        assert!(!names.contains(&""));
    }

    #[test]
    fn autoscaling_serves_v2_first_and_v1() {
        let groups = group_list();
        let autoscaling = groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == "autoscaling")
            .unwrap();
        assert_eq!(autoscaling["preferredVersion"]["version"], "v2");
        assert_eq!(autoscaling["versions"][1]["groupVersion"], "autoscaling/v1");
        let aggregated = aggregated(false);
        let autoscaling = aggregated["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["metadata"]["name"] == "autoscaling")
            .unwrap();
        assert_eq!(autoscaling["versions"][0]["version"], "v2");
        assert_eq!(
            autoscaling["versions"][1]["resources"][0]["resource"],
            "horizontalpodautoscalers"
        );
        let v2 = resource_list("autoscaling", "v2").unwrap();
        let hpa = resource(&v2, "horizontalpodautoscalers");
        assert_eq!(hpa["shortNames"], json!(["hpa"]));
    }

    #[test]
    fn metrics_are_discovered_read_only() {
        let list = resource_list("metrics.k8s.io", "v1beta1").unwrap();
        assert_eq!(resource(&list, "pods")["kind"], "PodMetrics");
        assert_eq!(resource(&list, "nodes")["namespaced"], false);
        assert_eq!(resource(&list, "nodes")["verbs"], json!(["get", "list"]));
        let groups = group_list();
        let metrics = groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == "metrics.k8s.io")
            .unwrap();
        assert_eq!(
            metrics["preferredVersion"]["groupVersion"],
            "metrics.k8s.io/v1beta1"
        );
        let aggregated = aggregated(false);
        let metrics = aggregated["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["metadata"]["name"] == "metrics.k8s.io")
            .unwrap();
        assert_eq!(
            metrics["versions"][0]["resources"][1]["responseKind"]["kind"],
            "NodeMetrics"
        );
    }

    #[test]
    fn aggregated_documents() {
        let core = aggregated(true);
        assert_eq!(core["items"].as_array().unwrap().len(), 1);
        assert_eq!(core["items"][0]["metadata"]["name"], "");
        let groups = aggregated(false);
        let apps = groups["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["metadata"]["name"] == "apps")
            .unwrap();
        let deployments = &apps["versions"][0]["resources"][0];
        assert_eq!(deployments["resource"], "deployments");
        assert_eq!(deployments["scope"], "Namespaced");
        assert_eq!(deployments["subresources"][1]["subresource"], "scale");
        assert_eq!(
            deployments["subresources"][1]["responseKind"]["kind"],
            "Scale"
        );
    }

    #[test]
    fn openapi_v3_names_patch_operations() {
        let root = openapi_v3_root();
        assert_eq!(
            root["paths"]["apis/apps/v1"]["serverRelativeURL"],
            "/openapi/v3/apis/apps/v1"
        );
        assert!(root["paths"]["api/v1"].is_object());
        let apps = openapi_v3_group_version("apps", "v1").unwrap();
        let patch =
            &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "Deployment"
        );
        assert_eq!(patch["parameters"][0]["name"], "fieldValidation");
        let core = openapi_v3_group_version("", "v1").unwrap();
        assert!(core["paths"]["/api/v1/nodes/{name}"].is_object());
        assert!(openapi_v3_group_version("apps", "v9").is_none());
    }

    #[test]
    fn accept_headers() {
        assert!(wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
        ));
        assert!(!wants_aggregated("application/json"));
        assert!(!wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
        ));
    }
}
