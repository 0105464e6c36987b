//! Whether a [`PolicyRule`] grants a request, and whether rules cover other
//! rules (what a user may grant without escalating), by Kubernetes' rules.

use crate::attributes::Attributes;
use crate::rbac::objects::PolicyRule;

const ALL: &str = "*";

impl PolicyRule {
    /// Whether this rule grants the request `attributes` describe.
    pub fn allows(&self, attributes: &Attributes) -> bool {
        if !contains_or_all(&self.verbs, &attributes.verb) {
            return false;
        }
        if !attributes.is_resource_request {
            return self
                .non_resource_urls
                .iter()
                .any(|url| url_matches(url, &attributes.path));
        }
        contains_or_all(&self.api_groups, &attributes.api_group)
            && self.resources.iter().any(|resource| {
                resource_matches(resource, &attributes.resource, &attributes.subresource)
            })
            && (self.resource_names.is_empty() || self.resource_names.contains(&attributes.name))
    }
}

fn contains_or_all(values: &[String], wanted: &str) -> bool {
    values.iter().any(|value| value == ALL || value == wanted)
}

/// Whether a rule's `rule_resource` names `resource[/subresource]`: `*`,
/// the exact `resource` or `resource/subresource`, or `*/subresource`.
fn resource_matches(rule_resource: &str, resource: &str, subresource: &str) -> bool {
    if rule_resource == ALL {
        return true;
    }
    if subresource.is_empty() {
        return rule_resource == resource;
    }
    match rule_resource.split_once('/') {
        Some((rule_resource, rule_subresource)) => {
            (rule_resource == resource || rule_resource == ALL) && rule_subresource == subresource
        }
        None => false,
    }
}

/// Whether a rule's non-resource `url` matches `path`: `*`, the exact path,
/// or a prefix ending in `*`.
fn url_matches(url: &str, path: &str) -> bool {
    url == ALL
        || url == path
        || url
            .strip_suffix(ALL)
            .is_some_and(|prefix| path.starts_with(prefix.trim_end_matches('*')))
}

/// The parts of `requested` that no rule of `owner` covers (empty when
/// `owner` holds everything `requested` grants): Kubernetes' check that a
/// user creating or binding a role holds every permission it grants.
/// Each requested rule is broken down into one verb on one group, one
/// resource and one name (or one verb on one URL), and each part must be
/// within a single owner rule.
pub fn uncovered_rules(owner: &[PolicyRule], requested: &[PolicyRule]) -> Vec<PolicyRule> {
    requested
        .iter()
        .flat_map(breakdown)
        .filter(|part| !owner.iter().any(|rule| covers(rule, part)))
        .collect()
}

/// `rule` as rules of one verb and one group, resource and name (or URL).
fn breakdown(rule: &PolicyRule) -> Vec<PolicyRule> {
    let one = |value: &String| vec![value.clone()];
    let mut parts = Vec::new();
    for group in &rule.api_groups {
        for resource in &rule.resources {
            for verb in &rule.verbs {
                let part = PolicyRule {
                    verbs: one(verb),
                    api_groups: one(group),
                    resources: one(resource),
                    ..PolicyRule::default()
                };
                if rule.resource_names.is_empty() {
                    parts.push(part);
                } else {
                    parts.extend(rule.resource_names.iter().map(|name| PolicyRule {
                        resource_names: one(name),
                        ..part.clone()
                    }));
                }
            }
        }
    }
    for url in &rule.non_resource_urls {
        for verb in &rule.verbs {
            parts.push(PolicyRule {
                verbs: one(verb),
                non_resource_urls: one(url),
                ..PolicyRule::default()
            });
        }
    }
    parts
}

/// Whether `owner` grants everything `part` (one broken-down rule) grants.
fn covers(owner: &PolicyRule, part: &PolicyRule) -> bool {
    let has_all = |set: &[String], wanted: &[String]| {
        set.iter().any(|v| v == ALL) || wanted.iter().all(|w| set.contains(w))
    };
    let resources = owner.resources.iter().any(|r| r == ALL)
        || part.resources.iter().all(|resource| {
            owner.resources.contains(resource)
                || resource.split_once('/').is_some_and(|(_, subresource)| {
                    owner.resources.contains(&format!("*/{subresource}"))
                })
        });
    // A requested URL may end in `*` too: an owner prefix covers it as it
    // would match the same text as a path.
    let urls = part.non_resource_urls.iter().all(|path| {
        owner
            .non_resource_urls
            .iter()
            .any(|url| url_matches(url, path))
    });
    let names = owner.resource_names.is_empty()
        || (!part.resource_names.is_empty()
            && part
                .resource_names
                .iter()
                .all(|n| owner.resource_names.contains(n)));
    has_all(&owner.verbs, &part.verbs)
        && has_all(&owner.api_groups, &part.api_groups)
        && resources
        && urls
        && names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::user::UserInfo;

    fn request(
        verb: &str,
        group: &str,
        resource: &str,
        subresource: &str,
        name: &str,
    ) -> Attributes {
        Attributes::resource(UserInfo::new("u", &[]), verb, group, resource, "ns", name)
            .with_subresource(subresource)
    }

    fn path(verb: &str, path: &str) -> Attributes {
        Attributes::non_resource(UserInfo::new("u", &[]), verb, path)
    }

    #[test]
    fn resource_rules_match_verbs_groups_resources_and_names() {
        let rule = PolicyRule::resources(&["get", "list"], &["", "apps"], &["pods", "deployments"]);
        assert!(rule.allows(&request("get", "", "pods", "", "web")));
        assert!(rule.allows(&request("list", "apps", "deployments", "", "")));
        assert!(!rule.allows(&request("delete", "", "pods", "", "web")));
        assert!(!rule.allows(&request("get", "batch", "pods", "", "web")));
        assert!(!rule.allows(&request("get", "", "secrets", "", "web")));
        // A resource does not grant its subresources.
        assert!(!rule.allows(&request("get", "", "pods", "log", "web")));
        // Nor a rule for resources a non-resource path.
        assert!(!rule.allows(&path("get", "/pods")));

        let all = PolicyRule::resources(&["*"], &["*"], &["*"]);
        assert!(all.allows(&request(
            "escalate",
            "rbac.authorization.k8s.io",
            "roles",
            "",
            "x"
        )));
        assert!(all.allows(&request("create", "", "pods", "exec", "web")));
        assert!(!all.allows(&path("get", "/healthz")));

        let named =
            PolicyRule::resources(&["get", "create"], &[""], &["configmaps"]).named(&["app"]);
        assert!(named.allows(&request("get", "", "configmaps", "", "app")));
        assert!(!named.allows(&request("get", "", "configmaps", "", "other")));
        // A list or create names no object, so a named rule does not grant it.
        assert!(!named.allows(&request("create", "", "configmaps", "", "")));
    }

    #[test]
    fn subresource_rules_match_exact_and_any_resource_forms() {
        let exec = PolicyRule::resources(&["create"], &[""], &["pods/exec"]);
        assert!(exec.allows(&request("create", "", "pods", "exec", "web")));
        assert!(!exec.allows(&request("create", "", "pods", "", "web")));
        assert!(!exec.allows(&request("create", "", "pods", "attach", "web")));
        assert!(!exec.allows(&request("create", "", "services", "exec", "web")));

        let scale = PolicyRule::resources(&["update"], &["*"], &["*/scale"]);
        assert!(scale.allows(&request("update", "apps", "deployments", "scale", "w")));
        assert!(scale.allows(&request("update", "c4m.io", "microservices", "scale", "w")));
        assert!(!scale.allows(&request("update", "apps", "deployments", "", "w")));
        assert!(!scale.allows(&request("update", "apps", "deployments", "status", "w")));
        // `pods/*` is not a wildcard in Kubernetes: it names subresource `*`.
        let not_wild = PolicyRule::resources(&["get"], &[""], &["pods/*"]);
        assert!(!not_wild.allows(&request("get", "", "pods", "log", "w")));
    }

    #[test]
    fn non_resource_rules_match_exact_paths_and_star_prefixes() {
        let rule = PolicyRule::non_resource(&["get"], &["/healthz", "/apis/*", "/version/"]);
        assert!(rule.allows(&path("get", "/healthz")));
        assert!(!rule.allows(&path("get", "/healthz/etcd")));
        assert!(rule.allows(&path("get", "/apis/apps/v1")));
        assert!(rule.allows(&path("get", "/apis/")));
        assert!(!rule.allows(&path("get", "/apis")));
        assert!(rule.allows(&path("get", "/version/")));
        assert!(!rule.allows(&path("get", "/version")));
        assert!(!rule.allows(&path("post", "/healthz")));
        // A URL rule grants no resource.
        assert!(!rule.allows(&request("get", "", "pods", "", "")));
        let all = PolicyRule::non_resource(&["*"], &["*"]);
        assert!(all.allows(&path("delete", "/anything/at/all")));
    }

    #[test]
    fn covered_rules_are_those_within_an_owner_rule() {
        let owner = [
            PolicyRule::resources(&["get", "list"], &[""], &["pods", "*/scale"]),
            PolicyRule::resources(&["*"], &["apps"], &["deployments"]).named(&["web"]),
            PolicyRule::non_resource(&["get"], &["/apis/*", "/healthz"]),
        ];
        let covered = [
            PolicyRule::resources(&["get"], &[""], &["pods"]),
            PolicyRule::resources(&["list"], &[""], &["replicationcontrollers/scale"]),
            PolicyRule::resources(&["delete", "patch"], &["apps"], &["deployments"])
                .named(&["web"]),
            PolicyRule::non_resource(&["get"], &["/apis/apps", "/apis/*", "/healthz"]),
        ];
        assert_eq!(uncovered_rules(&owner, &covered), vec![]);

        let wider = [
            PolicyRule::resources(&["get", "delete"], &[""], &["pods"]),
            PolicyRule::resources(&["get"], &["apps"], &["deployments"]),
            PolicyRule::resources(&["get"], &[""], &["pods/log"]),
            PolicyRule::non_resource(&["get"], &["/healthz/*", "*"]),
        ];
        assert_eq!(
            uncovered_rules(&owner, &wider),
            vec![
                PolicyRule::resources(&["delete"], &[""], &["pods"]),
                PolicyRule::resources(&["get"], &["apps"], &["deployments"]),
                PolicyRule::resources(&["get"], &[""], &["pods/log"]),
                PolicyRule::non_resource(&["get"], &["/healthz/*"]),
                PolicyRule::non_resource(&["get"], &["*"]),
            ]
        );
        let everything = [
            PolicyRule::resources(&["*"], &["*"], &["*"]),
            PolicyRule::non_resource(&["*"], &["*"]),
        ];
        assert_eq!(uncovered_rules(&everything, &wider), vec![]);
    }
}
