//! The authorization seam: [`Authorizer`], its [`Decision`], a [`Union`] of
//! authorizers, and the 403 answer Kubernetes gives when none allows.

use std::fmt;

use serde_json::{Value, json};

use crate::attributes::Attributes;

/// What an authorizer says about a request. The reason (may be empty) goes
/// to the audit record (`authorization.k8s.io/reason`) and, when nothing
/// allowed, after the 403 message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The request may proceed; no later authorizer is asked.
    Allow(String),
    /// The request is refused; no later authorizer is asked.
    Deny(String),
    /// This authorizer neither allows nor refuses: ask the next one; if it
    /// is the last, the request is refused.
    NoOpinion(String),
}

impl Decision {
    /// Whether the request may proceed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allow(_))
    }

    /// The reason given, whatever the decision.
    pub fn reason(&self) -> &str {
        match self {
            Self::Allow(reason) | Self::Deny(reason) | Self::NoOpinion(reason) => reason,
        }
    }
}

/// Decides whether a request may proceed. Implementations answer from
/// memory: the API asks once per request, before the handler runs.
pub trait Authorizer: fmt::Debug + Send + Sync {
    /// The decision on `attributes`.
    fn authorize(&self, attributes: &Attributes) -> Decision;
}

/// Authorizers asked in order: the first [`Decision::Allow`] or
/// [`Decision::Deny`] wins; when all have no opinion, so has the union,
/// with their reasons joined (Kubernetes' union authorizer).
#[derive(Debug, Default)]
pub struct Union(pub Vec<Box<dyn Authorizer>>);

impl Authorizer for Union {
    fn authorize(&self, attributes: &Attributes) -> Decision {
        let mut reasons = Vec::new();
        for authorizer in &self.0 {
            match authorizer.authorize(attributes) {
                Decision::NoOpinion(reason) => {
                    if !reason.is_empty() {
                        reasons.push(reason);
                    }
                }
                decided => return decided,
            }
        }
        Decision::NoOpinion(reasons.join("; "))
    }
}

/// Allows everything to members of some groups (Kubernetes allows
/// `system:masters` this way, ahead of RBAC, so no binding can lock them
/// out).
#[derive(Clone, Debug)]
pub struct PrivilegedGroups(pub Vec<String>);

impl Authorizer for PrivilegedGroups {
    fn authorize(&self, attributes: &Attributes) -> Decision {
        if self.0.iter().any(|group| attributes.user.in_group(group)) {
            Decision::Allow(String::new())
        } else {
            Decision::NoOpinion(String::new())
        }
    }
}

/// Kubernetes' sentence for a refused request:
/// `User "alice" cannot list resource "secrets" in API group "" in the
/// namespace "default"`, `... at the cluster scope`, or `User "alice" cannot
/// get path "/metrics"`.
pub fn forbidden_message(attributes: &Attributes) -> String {
    let user = &attributes.user.name;
    let verb = &attributes.verb;
    if !attributes.is_resource_request {
        return format!("User {user:?} cannot {verb} path {:?}", attributes.path);
    }
    let resource = attributes.resource_with_subresource();
    let group = &attributes.api_group;
    match attributes.namespace.as_str() {
        "" => format!(
            "User {user:?} cannot {verb} resource {resource:?} in API group {group:?} at the cluster scope"
        ),
        namespace => format!(
            "User {user:?} cannot {verb} resource {resource:?} in API group {group:?} in the namespace {namespace:?}"
        ),
    }
}

/// The `Status` body of the 403 for a refused request, as Kubernetes
/// writes it: `pods "web" is forbidden: User "alice" cannot get resource
/// "pods" in API group "" in the namespace "default"`, then `: REASON` when
/// the authorizers gave one. `<`, `>` and `&` from the request are escaped
/// as HTML entities, as Kubernetes does.
pub fn forbidden_status(attributes: &Attributes, reason: &str) -> Value {
    let mut message = forbidden_message(attributes);
    if !reason.is_empty() {
        message = format!("{message}: {reason}");
    }
    let message = message
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let (group, resource, name) = (
        attributes.api_group.as_str(),
        attributes.resource.as_str(),
        attributes.name.as_str(),
    );
    let qualified = match group {
        "" => resource.to_owned(),
        group => format!("{resource}.{group}"),
    };
    let message = match (qualified.as_str(), name) {
        ("", _) => format!("forbidden: {message}"),
        (qualified, "") => format!("{qualified} is forbidden: {message}"),
        (qualified, name) => format!("{qualified} {name:?} is forbidden: {message}"),
    };
    let mut details = serde_json::Map::new();
    for (key, value) in [("name", name), ("group", group), ("kind", resource)] {
        if !value.is_empty() {
            details.insert(key.to_owned(), Value::from(value));
        }
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "Forbidden",
        "details": details,
        "code": 403,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::user::UserInfo;

    fn alice() -> UserInfo {
        UserInfo::new("alice", &["dev"])
    }

    #[test]
    fn forbidden_messages_are_kubernetes_sentences() {
        let list_secrets = Attributes::resource(alice(), "list", "", "secrets", "default", "");
        assert_eq!(
            forbidden_message(&list_secrets),
            r#"User "alice" cannot list resource "secrets" in API group "" in the namespace "default""#
        );
        let exec = Attributes::resource(alice(), "create", "", "pods", "shop", "web")
            .with_subresource("exec");
        assert_eq!(
            forbidden_message(&exec),
            r#"User "alice" cannot create resource "pods/exec" in API group "" in the namespace "shop""#
        );
        let nodes = Attributes::resource(alice(), "delete", "", "nodes", "", "n1");
        assert_eq!(
            forbidden_message(&nodes),
            r#"User "alice" cannot delete resource "nodes" in API group "" at the cluster scope"#
        );
        let metrics = Attributes::non_resource(alice(), "get", "/metrics");
        assert_eq!(
            forbidden_message(&metrics),
            r#"User "alice" cannot get path "/metrics""#
        );
    }

    #[test]
    fn forbidden_status_is_the_body_kubectl_prints() {
        let get = Attributes::resource(alice(), "get", "apps", "deployments", "shop", "web");
        assert_eq!(
            forbidden_status(&get, ""),
            json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": r#"deployments.apps "web" is forbidden: User "alice" cannot get resource "deployments" in API group "apps" in the namespace "shop""#,
                "reason": "Forbidden",
                "details": {"name": "web", "group": "apps", "kind": "deployments"},
                "code": 403,
            })
        );
        let list = Attributes::resource(alice(), "list", "", "secrets", "default", "");
        assert_eq!(
            forbidden_status(
                &list,
                r#"RBAC: clusterrole.rbac.authorization.k8s.io "gone" not found"#
            )["message"],
            r#"secrets is forbidden: User "alice" cannot list resource "secrets" in API group "" in the namespace "default": RBAC: clusterrole.rbac.authorization.k8s.io "gone" not found"#
        );
        let path = Attributes::non_resource(alice(), "get", "/x<script>&");
        let status = forbidden_status(&path, "");
        assert_eq!(
            status["message"],
            r#"forbidden: User "alice" cannot get path "/x&lt;script&gt;&amp;""#
        );
        assert_eq!(status["details"], json!({}));
    }

    #[derive(Debug)]
    struct Fixed(Decision);

    impl Authorizer for Fixed {
        fn authorize(&self, _: &Attributes) -> Decision {
            self.0.clone()
        }
    }

    #[test]
    fn a_union_takes_the_first_decision_and_joins_no_opinions() {
        let request = Attributes::resource(alice(), "get", "", "pods", "shop", "web");
        let union = |decisions: Vec<Decision>| {
            Union(
                decisions
                    .into_iter()
                    .map(|d| Box::new(Fixed(d)) as Box<dyn Authorizer>)
                    .collect(),
            )
            .authorize(&request)
        };
        let no = |r: &str| Decision::NoOpinion(r.into());
        assert_eq!(
            union(vec![
                no("a"),
                Decision::Deny("d".into()),
                Decision::Allow("x".into())
            ]),
            Decision::Deny("d".into())
        );
        assert_eq!(
            union(vec![
                no(""),
                Decision::Allow("x".into()),
                Decision::Deny("d".into())
            ]),
            Decision::Allow("x".into())
        );
        assert_eq!(union(vec![no("a"), no(""), no("b")]), no("a; b"));
        assert_eq!(union(vec![]), no(""));
    }

    #[test]
    fn privileged_groups_allow_only_their_members() {
        let masters = PrivilegedGroups(vec![crate::user::MASTERS_GROUP.to_owned()]);
        let request = |user| Attributes::resource(user, "delete", "", "nodes", "", "n1");
        assert!(
            masters
                .authorize(&request(UserInfo::new("root", &["system:masters"])))
                .is_allowed()
        );
        assert_eq!(
            masters.authorize(&request(alice())),
            Decision::NoOpinion(String::new())
        );
    }
}
