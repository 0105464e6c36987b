//! Who makes a request: [`UserInfo`], Kubernetes' well-known groups, and the
//! user names of service accounts and nodes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Every authenticated request's group (added by the authenticator chain).
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
/// The group of a request that presented no credentials.
pub const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";
/// The user name of a request that presented no credentials.
pub const ANONYMOUS_USER: &str = "system:anonymous";
/// Members may do anything (bound to `cluster-admin`).
pub const MASTERS_GROUP: &str = "system:masters";
/// Every service account's group.
pub const SERVICE_ACCOUNTS_GROUP: &str = "system:serviceaccounts";
/// Every node's group.
pub const NODES_GROUP: &str = "system:nodes";

const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";
const NODE_PREFIX: &str = "system:node:";

/// An authenticated identity, as Kubernetes' `user.Info` and the `userInfo`
/// of a TokenReview status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserInfo {
    /// The user name (`alice`, `system:serviceaccount:ns:name`).
    #[serde(rename = "username", default)]
    pub name: String,
    /// A unique id, stable across renames; may be empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// The groups the user is in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// What the authenticator knows beyond that (scopes, the pod a
    /// service-account token is bound to...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// A user `name` in `groups`, without uid or extra.
    pub fn new(name: impl Into<String>, groups: &[&str]) -> Self {
        Self {
            name: name.into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            ..Self::default()
        }
    }

    /// The identity of a request without credentials.
    pub fn anonymous() -> Self {
        Self::new(ANONYMOUS_USER, &[UNAUTHENTICATED_GROUP])
    }

    /// Service account `name` of `namespace`, in its two groups
    /// (`system:serviceaccounts`, `system:serviceaccounts:NAMESPACE`).
    pub fn service_account(namespace: &str, name: &str, uid: impl Into<String>) -> Self {
        Self {
            name: service_account_user_name(namespace, name),
            uid: uid.into(),
            groups: service_account_groups(namespace).to_vec(),
            extra: BTreeMap::new(),
        }
    }

    /// Node `name` (`system:node:NAME` in `system:nodes`).
    pub fn node(name: &str) -> Self {
        Self::new(node_user_name(name), &[NODES_GROUP])
    }

    /// Whether the user is in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// The user with [`AUTHENTICATED_GROUP`] added unless present, as
    /// Kubernetes adds it to whatever an authenticator returns.
    pub fn authenticated(mut self) -> Self {
        if !self.in_group(AUTHENTICATED_GROUP) {
            self.groups.push(AUTHENTICATED_GROUP.to_owned());
        }
        self
    }
}

/// `system:serviceaccount:NAMESPACE:NAME`.
pub fn service_account_user_name(namespace: &str, name: &str) -> String {
    format!("{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}")
}

/// The namespace and name of a service account's user name, or `None` when
/// `user` is not one (both parts must be non-empty and free of `:`).
pub fn parse_service_account_user_name(user: &str) -> Option<(&str, &str)> {
    let (namespace, name) = user.strip_prefix(SERVICE_ACCOUNT_PREFIX)?.split_once(':')?;
    let valid = |part: &str| !part.is_empty() && !part.contains(':');
    (valid(namespace) && valid(name)).then_some((namespace, name))
}

/// The groups of every service account of `namespace`.
pub fn service_account_groups(namespace: &str) -> [String; 2] {
    [
        SERVICE_ACCOUNTS_GROUP.to_owned(),
        format!("{SERVICE_ACCOUNTS_GROUP}:{namespace}"),
    ]
}

/// `system:node:NAME`.
pub fn node_user_name(name: &str) -> String {
    format!("{NODE_PREFIX}{name}")
}

/// The node a user name is (`system:node:NAME`), or `None`.
pub fn parse_node_user_name(user: &str) -> Option<&str> {
    user.strip_prefix(NODE_PREFIX)
        .filter(|name| !name.is_empty() && !name.contains(':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_names_round_trip_and_bad_ones_are_refused() {
        let user = UserInfo::service_account("team-a", "builder", "u-1");
        assert_eq!(user.name, "system:serviceaccount:team-a:builder");
        assert_eq!(
            user.groups,
            ["system:serviceaccounts", "system:serviceaccounts:team-a"]
        );
        assert_eq!(
            parse_service_account_user_name(&user.name),
            Some(("team-a", "builder"))
        );
        for not_one in [
            "alice",
            "system:serviceaccount:",
            "system:serviceaccount:ns",
            "system:serviceaccount::name",
            "system:serviceaccount:ns:",
            "system:serviceaccount:ns:a:b",
            "system:serviceaccounts:ns",
        ] {
            assert_eq!(parse_service_account_user_name(not_one), None, "{not_one}");
        }
    }

    #[test]
    fn node_names_round_trip() {
        let node = UserInfo::node("n1");
        assert_eq!(node.name, "system:node:n1");
        assert!(node.in_group(NODES_GROUP));
        assert_eq!(parse_node_user_name(&node.name), Some("n1"));
        assert_eq!(parse_node_user_name("system:node:"), None);
        assert_eq!(parse_node_user_name("system:node:a:b"), None);
        assert_eq!(parse_node_user_name("system:nodes"), None);
    }

    #[test]
    fn authenticated_adds_its_group_once() {
        let user = UserInfo::new("alice", &["dev"]).authenticated();
        assert_eq!(user.groups, ["dev", AUTHENTICATED_GROUP]);
        assert_eq!(user.clone().authenticated(), user);
        assert_eq!(UserInfo::anonymous().groups, [UNAUTHENTICATED_GROUP]);
    }

    #[test]
    fn serializes_as_a_token_review_user_info() {
        let mut user = UserInfo::new("alice", &["dev"]);
        user.extra.insert("scopes".into(), vec!["read".into()]);
        let json = serde_json::to_value(&user).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"username": "alice", "groups": ["dev"], "extra": {"scopes": ["read"]}})
        );
        assert_eq!(serde_json::from_value::<UserInfo>(json).unwrap(), user);
    }
}
