//! [`RbacAuthorizer`]: RBAC decisions from roles and bindings held in
//! memory, indexed by subject.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use serde_json::Value;
use thiserror::Error;

use crate::attributes::Attributes;
use crate::authorizer::{Authorizer, Decision};
use crate::rbac::objects::{
    ClusterRoleBinding, ObjectError, PolicyRule, RbacObject, RoleBinding, RoleKind, RoleRef,
    Subject, SubjectKind,
};
use crate::rbac::rule::uncovered_rules;
use crate::user::{UserInfo, service_account_user_name};

/// The kind of an RBAC object, to remove one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RbacKind {
    /// Role (namespaced).
    Role,
    /// ClusterRole.
    ClusterRole,
    /// RoleBinding (namespaced).
    RoleBinding,
    /// ClusterRoleBinding.
    ClusterRoleBinding,
}

impl RbacKind {
    /// The kind named `kind` (`Role`, `ClusterRoleBinding`...).
    pub fn from_kind(kind: &str) -> Option<Self> {
        Some(match kind {
            "Role" => Self::Role,
            "ClusterRole" => Self::ClusterRole,
            "RoleBinding" => Self::RoleBinding,
            "ClusterRoleBinding" => Self::ClusterRoleBinding,
            _ => return None,
        })
    }
}

/// The rules a user holds in a namespace, and the bindings whose role
/// could not be found (the rules are then incomplete).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvedRules {
    /// Every rule of every role bound to the user, cluster-wide and in the
    /// namespace, each once.
    pub rules: Vec<PolicyRule>,
    /// Why some bindings contributed nothing (`clusterrole... not found`).
    pub errors: Vec<String>,
}

/// A role or binding would grant permissions its author does not hold.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error(
    "user {user:?} (groups={groups:?}) is attempting to grant RBAC permissions not currently held:\n{}{}",
    compact(missing),
    resolution_errors(errors)
)]
pub struct Escalation {
    /// The author.
    pub user: String,
    /// The author's groups.
    pub groups: Vec<String>,
    /// The permissions (one verb on one resource each) not held.
    pub missing: Vec<PolicyRule>,
    /// Roles of the author's bindings that could not be found.
    pub errors: Vec<String>,
}

/// Rules one per line, as Kubernetes prints them in escalation errors.
fn compact(rules: &[PolicyRule]) -> String {
    let lines: Vec<String> = rules
        .iter()
        .map(|rule| {
            let mut fields = Vec::new();
            for (name, values) in [
                ("APIGroups", &rule.api_groups),
                ("Resources", &rule.resources),
                ("ResourceNames", &rule.resource_names),
                ("NonResourceURLs", &rule.non_resource_urls),
                ("Verbs", &rule.verbs),
            ] {
                if !values.is_empty() {
                    fields.push(format!("{name}:{values:?}"));
                }
            }
            format!("{{{}}}", fields.join(", "))
        })
        .collect();
    lines.join("\n")
}

fn resolution_errors(errors: &[String]) -> String {
    if errors.is_empty() {
        String::new()
    } else {
        format!("; resolution errors: [{}]", errors.join(", "))
    }
}

/// Which bindings grant a role to a subject, by binding name.
type Grants = BTreeMap<String, Grant>;

/// One binding's grant to one subject.
#[derive(Clone, Debug)]
struct Grant {
    role: RoleRef,
    /// The subject of the binding that matched (for the allow reason).
    subject: Subject,
}

/// Bindings by the subject they grant to. Service accounts are indexed
/// under their user name (`system:serviceaccount:NS:NAME`), which is how a
/// request names them.
#[derive(Debug, Default)]
struct SubjectIndex {
    users: HashMap<String, Grants>,
    groups: HashMap<String, Grants>,
}

impl SubjectIndex {
    /// The index key of `subject` in a binding of `namespace`, or `None`
    /// for a service account without a namespace in a ClusterRoleBinding
    /// (it matches no one, as in Kubernetes).
    fn key(subject: &Subject, namespace: &str) -> Option<(SubjectKind, String)> {
        match subject.kind {
            SubjectKind::ServiceAccount => {
                let namespace = match subject.namespace.as_str() {
                    "" => namespace,
                    namespace => namespace,
                };
                (!namespace.is_empty()).then(|| {
                    (
                        SubjectKind::User,
                        service_account_user_name(namespace, &subject.name),
                    )
                })
            }
            kind => Some((kind, subject.name.clone())),
        }
    }

    fn map(&mut self, kind: SubjectKind) -> &mut HashMap<String, Grants> {
        match kind {
            SubjectKind::Group => &mut self.groups,
            SubjectKind::User | SubjectKind::ServiceAccount => &mut self.users,
        }
    }

    fn insert(&mut self, binding: &str, namespace: &str, subjects: &[Subject], role: &RoleRef) {
        for subject in subjects {
            if let Some((kind, key)) = Self::key(subject, namespace) {
                self.map(kind)
                    .entry(key)
                    .or_default()
                    .entry(binding.to_owned())
                    .or_insert_with(|| Grant {
                        role: role.clone(),
                        subject: subject.clone(),
                    });
            }
        }
    }

    fn remove(&mut self, binding: &str, namespace: &str, subjects: &[Subject]) {
        for subject in subjects {
            if let Some((kind, key)) = Self::key(subject, namespace) {
                let map = self.map(kind);
                if let Some(grants) = map.get_mut(&key) {
                    grants.remove(binding);
                    if grants.is_empty() {
                        map.remove(&key);
                    }
                }
            }
        }
    }

    /// The grants to `user`: by name, then by each group. A binding naming
    /// the user more than once appears more than once.
    fn grants<'a>(&'a self, user: &'a UserInfo) -> impl Iterator<Item = (&'a String, &'a Grant)> {
        let by_name = self.users.get(&user.name).into_iter();
        let by_group = user.groups.iter().filter_map(|g| self.groups.get(g));
        by_name.chain(by_group).flatten()
    }

    fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty()
    }
}

/// Kubernetes' RBAC authorizer over roles and bindings held in memory.
///
/// Built from the store's objects ([`Self::upsert`]) and kept current one
/// object at a time ([`Self::upsert`], [`Self::remove`]) from the store's
/// watch. Bindings are indexed by subject (user, group, service account),
/// per namespace, so a decision looks at the bindings of the requester's
/// name and groups only, in the cluster and in the request's namespace,
/// never at every binding. Roles are looked up at decision time, so a
/// changed role takes effect without reindexing.
///
/// Like Kubernetes', it never denies: it allows or has no opinion (with
/// the roles it could not find as the reason), and a request nobody allows
/// is refused.
#[derive(Debug, Default)]
pub struct RbacAuthorizer {
    cluster_roles: HashMap<String, Arc<[PolicyRule]>>,
    /// Namespace, then role name.
    roles: HashMap<String, HashMap<String, Arc<[PolicyRule]>>>,
    cluster_bindings: HashMap<String, ClusterRoleBinding>,
    /// Namespace, then binding name.
    bindings: HashMap<String, HashMap<String, RoleBinding>>,
    cluster_grants: SubjectIndex,
    /// Namespace, then subject.
    namespace_grants: HashMap<String, SubjectIndex>,
}

impl RbacAuthorizer {
    /// An authorizer holding `objects`.
    pub fn from_objects(objects: impl IntoIterator<Item = RbacObject>) -> Self {
        let mut authorizer = Self::default();
        for object in objects {
            authorizer.upsert(object);
        }
        authorizer
    }

    /// Adds or replaces one stored object (JSON, as the store holds it).
    ///
    /// # Errors
    /// The object is not an RBAC object or not of its kind's shape; the
    /// authorizer is unchanged (an unreadable replacement leaves the
    /// previous version in force: remove it to revoke).
    pub fn upsert_value(&mut self, object: &Value) -> Result<(), ObjectError> {
        self.upsert(RbacObject::from_value(object)?);
        Ok(())
    }

    /// Adds `object`, or replaces the object of its kind, namespace and
    /// name.
    pub fn upsert(&mut self, object: RbacObject) {
        match object {
            RbacObject::Role(role) => {
                self.roles
                    .entry(role.metadata.namespace)
                    .or_default()
                    .insert(role.metadata.name, role.rules.into());
            }
            RbacObject::ClusterRole(role) => {
                self.cluster_roles
                    .insert(role.metadata.name, role.rules.into());
            }
            RbacObject::RoleBinding(binding) => {
                let namespace = binding.metadata.namespace.clone();
                let name = binding.metadata.name.clone();
                self.remove(RbacKind::RoleBinding, &namespace, &name);
                self.namespace_grants
                    .entry(namespace.clone())
                    .or_default()
                    .insert(&name, &namespace, &binding.subjects, &binding.role_ref);
                self.bindings
                    .entry(namespace)
                    .or_default()
                    .insert(name, binding);
            }
            RbacObject::ClusterRoleBinding(binding) => {
                let name = binding.metadata.name.clone();
                self.remove(RbacKind::ClusterRoleBinding, "", &name);
                self.cluster_grants
                    .insert(&name, "", &binding.subjects, &binding.role_ref);
                self.cluster_bindings.insert(name, binding);
            }
        }
    }

    /// Removes the object of `kind` named `name` (in `namespace` for Roles
    /// and RoleBindings); removing an unknown object does nothing.
    pub fn remove(&mut self, kind: RbacKind, namespace: &str, name: &str) {
        match kind {
            RbacKind::Role => {
                if let Some(roles) = self.roles.get_mut(namespace) {
                    roles.remove(name);
                    if roles.is_empty() {
                        self.roles.remove(namespace);
                    }
                }
            }
            RbacKind::ClusterRole => {
                self.cluster_roles.remove(name);
            }
            RbacKind::RoleBinding => {
                let Some(bindings) = self.bindings.get_mut(namespace) else {
                    return;
                };
                let Some(old) = bindings.remove(name) else {
                    return;
                };
                if bindings.is_empty() {
                    self.bindings.remove(namespace);
                }
                if let Some(index) = self.namespace_grants.get_mut(namespace) {
                    index.remove(name, namespace, &old.subjects);
                    if index.is_empty() {
                        self.namespace_grants.remove(namespace);
                    }
                }
            }
            RbacKind::ClusterRoleBinding => {
                if let Some(old) = self.cluster_bindings.remove(name) {
                    self.cluster_grants.remove(name, "", &old.subjects);
                }
            }
        }
    }

    /// How many objects of each kind are held: (roles, cluster roles, role
    /// bindings, cluster role bindings).
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        (
            self.roles.values().map(HashMap::len).sum(),
            self.cluster_roles.len(),
            self.bindings.values().map(HashMap::len).sum(),
            self.cluster_bindings.len(),
        )
    }

    /// The rules of the role `role` refers to from a binding in
    /// `namespace` (empty for a ClusterRoleBinding), or Kubernetes' error.
    fn role_rules(&self, namespace: &str, role: &RoleRef) -> Result<&[PolicyRule], String> {
        let found = match role.kind {
            RoleKind::ClusterRole => self.cluster_roles.get(&role.name),
            RoleKind::Role => self.roles.get(namespace).and_then(|r| r.get(&role.name)),
        };
        found.map(|rules| &rules[..]).ok_or_else(|| {
            let kind = match role.kind {
                RoleKind::ClusterRole => "clusterrole",
                RoleKind::Role => "role",
            };
            format!("{kind}.rbac.authorization.k8s.io {:?} not found", role.name)
        })
    }

    /// Every binding that grants `user` a role in `namespace`: the cluster's
    /// first, then the namespace's (binding namespace, name and grant).
    fn grants<'a>(
        &'a self,
        user: &'a UserInfo,
        namespace: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a String, &'a Grant)> {
        let cluster = self.cluster_grants.grants(user).map(|(b, g)| ("", b, g));
        let namespaced = (!namespace.is_empty())
            .then(|| self.namespace_grants.get(namespace))
            .flatten()
            .into_iter()
            .flat_map(move |index| index.grants(user).map(move |(b, g)| (namespace, b, g)));
        cluster.chain(namespaced)
    }

    /// The rules `user` holds in `namespace` (cluster-wide ones only when
    /// empty), for SelfSubjectRulesReview and `kubectl auth can-i --list`.
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> ResolvedRules {
        let mut resolved = ResolvedRules::default();
        let mut seen: Vec<(&str, &str)> = Vec::new();
        for (binding_namespace, binding, grant) in self.grants(user, namespace) {
            if seen.contains(&(binding_namespace, binding)) {
                continue;
            }
            seen.push((binding_namespace, binding));
            match self.role_rules(binding_namespace, &grant.role) {
                Ok(rules) => {
                    for rule in rules {
                        if !resolved.rules.contains(rule) {
                            resolved.rules.push(rule.clone());
                        }
                    }
                }
                Err(error) => resolved.errors.push(error),
            }
        }
        resolved
    }

    /// Every subject bound to a role that grants the request `attributes`
    /// describe (their `user` is ignored), each once, in order. A scan of
    /// the cluster's bindings and the namespace's: for reviews, not for
    /// the request path.
    pub fn subjects_who_can(&self, attributes: &Attributes) -> Vec<Subject> {
        let cluster = self
            .cluster_bindings
            .values()
            .map(|binding| ("", &binding.role_ref, &binding.subjects));
        let namespaced = (!attributes.namespace.is_empty())
            .then(|| self.bindings.get(&attributes.namespace))
            .flatten()
            .into_iter()
            .flat_map(|bindings| bindings.values())
            .map(|b| (b.metadata.namespace.as_str(), &b.role_ref, &b.subjects));
        let mut subjects: Vec<Subject> = Vec::new();
        for (namespace, role, bound) in cluster.chain(namespaced) {
            let allowed = self
                .role_rules(namespace, role)
                .is_ok_and(|rules| rules.iter().any(|rule| rule.allows(attributes)));
            if allowed {
                subjects.extend(bound.iter().map(|subject| {
                    let mut subject = subject.clone();
                    if subject.kind == SubjectKind::ServiceAccount && subject.namespace.is_empty() {
                        subject.namespace = namespace.to_owned();
                    }
                    subject
                }));
            }
        }
        subjects.sort();
        subjects.dedup();
        subjects
    }

    /// Refuses a role or binding that `user` would create or change in
    /// `namespace` (empty for a ClusterRole or ClusterRoleBinding) when it
    /// grants `rules` beyond those `user` holds there. The API runs this
    /// unless the user may `escalate` the role (or `bind` it, for a
    /// binding), as Kubernetes does.
    ///
    /// # Errors
    /// [`Escalation`] names the permissions `user` does not hold.
    pub fn confirm_no_escalation(
        &self,
        user: &UserInfo,
        namespace: &str,
        rules: &[PolicyRule],
    ) -> Result<(), Escalation> {
        let held = self.rules_for(user, namespace);
        let missing = uncovered_rules(&held.rules, rules);
        if missing.is_empty() {
            return Ok(());
        }
        Err(Escalation {
            user: user.name.clone(),
            groups: user.groups.clone(),
            missing,
            errors: held.errors,
        })
    }
}

impl Authorizer for RbacAuthorizer {
    fn authorize(&self, attributes: &Attributes) -> Decision {
        let mut errors = Vec::new();
        for (namespace, binding, grant) in self.grants(&attributes.user, &attributes.namespace) {
            match self.role_rules(namespace, &grant.role) {
                Ok(rules) if rules.iter().any(|rule| rule.allows(attributes)) => {
                    return Decision::Allow(
                        AllowedBy {
                            namespace,
                            binding,
                            grant,
                        }
                        .to_string(),
                    );
                }
                Ok(_) => {}
                Err(error) => errors.push(error),
            }
        }
        Decision::NoOpinion(match errors.as_slice() {
            [] => String::new(),
            [one] => format!("RBAC: {one}"),
            many => format!("RBAC: [{}]", many.join(", ")),
        })
    }
}

/// Kubernetes' reason for an RBAC allow: `RBAC: allowed by
/// ClusterRoleBinding "NAME" of ClusterRole "ROLE" to Group "GROUP"`, or
/// `RoleBinding "NAME/NAMESPACE" ...`.
struct AllowedBy<'a> {
    namespace: &'a str,
    binding: &'a str,
    grant: &'a Grant,
}

impl fmt::Display for AllowedBy<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let role = &self.grant.role;
        let subject = self.grant.subject.describe(self.namespace);
        if self.namespace.is_empty() {
            write!(f, "RBAC: allowed by ClusterRoleBinding {:?}", self.binding)?;
        } else {
            let binding = format!("{}/{}", self.binding, self.namespace);
            write!(f, "RBAC: allowed by RoleBinding {binding:?}")?;
        }
        write!(f, " of {} {:?} to {subject}", role.kind, role.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rbac::objects::{ClusterRole, Metadata, Role};

    fn cluster_role(name: &str, rules: Vec<PolicyRule>) -> RbacObject {
        RbacObject::ClusterRole(ClusterRole {
            metadata: Metadata::named("", name),
            rules,
            aggregation_rule: None,
        })
    }

    fn role(namespace: &str, name: &str, rules: Vec<PolicyRule>) -> RbacObject {
        RbacObject::Role(Role {
            metadata: Metadata::named(namespace, name),
            rules,
        })
    }

    fn binding(namespace: &str, name: &str, role: RoleRef, subjects: Vec<Subject>) -> RbacObject {
        RbacObject::RoleBinding(RoleBinding {
            metadata: Metadata::named(namespace, name),
            subjects,
            role_ref: role,
        })
    }

    fn cluster_binding(name: &str, role: &str, subjects: Vec<Subject>) -> RbacObject {
        RbacObject::ClusterRoleBinding(ClusterRoleBinding {
            metadata: Metadata::named("", name),
            subjects,
            role_ref: RoleRef::cluster_role(role),
        })
    }

    fn get_pods() -> PolicyRule {
        PolicyRule::resources(&["get", "list"], &[""], &["pods"])
    }

    fn request(user: &UserInfo, verb: &str, resource: &str, namespace: &str) -> Attributes {
        Attributes::resource(user.clone(), verb, "", resource, namespace, "")
    }

    #[test]
    fn bindings_grant_by_user_group_and_service_account_in_their_scope() {
        let alice = UserInfo::new("alice", &[]);
        let dev = UserInfo::new("dan", &["dev"]);
        let builder = UserInfo::service_account("shop", "builder", "");
        let rbac = RbacAuthorizer::from_objects([
            cluster_role("pod-reader", vec![get_pods()]),
            role(
                "shop",
                "secret-reader",
                vec![PolicyRule::resources(&["get"], &[""], &["secrets"])],
            ),
            binding(
                "shop",
                "alice-pods",
                RoleRef::cluster_role("pod-reader"),
                vec![Subject::user("alice")],
            ),
            binding(
                "shop",
                "dev-secrets",
                RoleRef::role("secret-reader"),
                vec![Subject::group("dev")],
            ),
            // A service account without a namespace is the binding's.
            binding(
                "shop",
                "builder",
                RoleRef::cluster_role("pod-reader"),
                vec![Subject::service_account("", "builder")],
            ),
            // One in a ClusterRoleBinding needs its namespace, or matches no one.
            cluster_binding(
                "nobody",
                "pod-reader",
                vec![Subject::service_account("", "builder")],
            ),
        ]);
        let allowed = |attributes: &Attributes| rbac.authorize(attributes).is_allowed();
        assert!(allowed(&request(&alice, "list", "pods", "shop")));
        assert!(!allowed(&request(&alice, "list", "pods", "other")));
        assert!(!allowed(&request(&alice, "list", "pods", "")));
        assert!(!allowed(&request(&alice, "get", "secrets", "shop")));
        assert!(allowed(&request(&dev, "get", "secrets", "shop")));
        assert!(!allowed(&request(&dev, "get", "pods", "shop")));
        assert!(allowed(&request(&builder, "get", "pods", "shop")));
        assert!(!allowed(&request(&builder, "get", "pods", "ci")));
        let other_builder = UserInfo::service_account("ci", "builder", "");
        assert!(!allowed(&request(&other_builder, "get", "pods", "shop")));
        assert!(!allowed(&request(&other_builder, "get", "pods", "")));
    }

    #[test]
    fn reasons_name_the_binding_role_and_subject_as_kubernetes_does() {
        let rbac = RbacAuthorizer::from_objects([
            cluster_role("pod-reader", vec![get_pods()]),
            cluster_binding("readers", "pod-reader", vec![Subject::group("dev")]),
            binding(
                "shop",
                "sa",
                RoleRef::cluster_role("pod-reader"),
                vec![Subject::service_account("", "builder")],
            ),
        ]);
        let dev = UserInfo::new("dan", &["dev"]);
        assert_eq!(
            rbac.authorize(&request(&dev, "get", "pods", "x")),
            Decision::Allow(
                r#"RBAC: allowed by ClusterRoleBinding "readers" of ClusterRole "pod-reader" to Group "dev""#.into()
            )
        );
        let builder = UserInfo::service_account("shop", "builder", "");
        assert_eq!(
            rbac.authorize(&request(&builder, "get", "pods", "shop"))
                .reason(),
            r#"RBAC: allowed by RoleBinding "sa/shop" of ClusterRole "pod-reader" to ServiceAccount "builder/shop""#
        );
        assert_eq!(
            rbac.authorize(&request(&dev, "delete", "pods", "x")),
            Decision::NoOpinion(String::new())
        );
    }

    #[test]
    fn missing_roles_are_the_reason_of_no_opinion() {
        let alice = UserInfo::new("alice", &["dev"]);
        let mut rbac = RbacAuthorizer::from_objects([binding(
            "shop",
            "gone",
            RoleRef::role("gone"),
            vec![Subject::user("alice")],
        )]);
        assert_eq!(
            rbac.authorize(&request(&alice, "get", "pods", "shop")),
            Decision::NoOpinion(r#"RBAC: role.rbac.authorization.k8s.io "gone" not found"#.into())
        );
        rbac.upsert(cluster_binding("c", "absent", vec![Subject::group("dev")]));
        assert_eq!(
            rbac.authorize(&request(&alice, "get", "pods", "shop"))
                .reason(),
            r#"RBAC: [clusterrole.rbac.authorization.k8s.io "absent" not found, role.rbac.authorization.k8s.io "gone" not found]"#
        );
        // The role appearing later takes effect without touching the binding.
        rbac.upsert(role("shop", "gone", vec![get_pods()]));
        assert!(
            rbac.authorize(&request(&alice, "get", "pods", "shop"))
                .is_allowed()
        );
    }

    #[test]
    fn updates_and_removals_take_effect_one_object_at_a_time() {
        let alice = UserInfo::new("alice", &[]);
        let bob = UserInfo::new("bob", &[]);
        let mut rbac = RbacAuthorizer::from_objects([
            cluster_role("pod-reader", vec![get_pods()]),
            binding(
                "shop",
                "b",
                RoleRef::cluster_role("pod-reader"),
                vec![Subject::user("alice")],
            ),
        ]);
        let allowed = |rbac: &RbacAuthorizer, user| {
            rbac.authorize(&request(user, "get", "pods", "shop"))
                .is_allowed()
        };
        assert!(allowed(&rbac, &alice));
        // Replacing the binding moves the grant from alice to bob.
        rbac.upsert(binding(
            "shop",
            "b",
            RoleRef::cluster_role("pod-reader"),
            vec![Subject::user("bob")],
        ));
        assert!(!allowed(&rbac, &alice));
        assert!(allowed(&rbac, &bob));
        // Changing the role changes what the binding grants.
        rbac.upsert(cluster_role(
            "pod-reader",
            vec![PolicyRule::resources(&["get"], &[""], &["secrets"])],
        ));
        assert!(!allowed(&rbac, &bob));
        rbac.upsert(cluster_role("pod-reader", vec![get_pods()]));
        assert!(allowed(&rbac, &bob));
        rbac.remove(RbacKind::RoleBinding, "other", "b");
        assert!(allowed(&rbac, &bob));
        rbac.remove(RbacKind::RoleBinding, "shop", "b");
        assert!(!allowed(&rbac, &bob));
        assert_eq!(rbac.counts(), (0, 1, 0, 0));
        // Removing everything leaves no index behind.
        rbac.remove(RbacKind::ClusterRole, "", "pod-reader");
        assert!(rbac.namespace_grants.is_empty() && rbac.cluster_grants.is_empty());
        assert!(rbac.bindings.is_empty() && rbac.roles.is_empty());

        rbac.upsert(cluster_binding(
            "cb",
            "r",
            vec![Subject::user("alice"), Subject::group("g")],
        ));
        rbac.remove(RbacKind::ClusterRoleBinding, "", "cb");
        assert!(rbac.cluster_grants.is_empty());
        rbac.upsert(role("ns", "r", vec![]));
        rbac.remove(RbacKind::Role, "ns", "r");
        assert!(rbac.roles.is_empty());
    }

    #[test]
    fn stored_json_is_upserted_or_refused_unchanged() {
        let mut rbac = RbacAuthorizer::default();
        let object = serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "x"},
            "subjects": [{"kind": "User", "name": "alice"}],
            "roleRef": {"kind": "ClusterRole", "name": "r"},
        });
        rbac.upsert_value(&object).unwrap();
        assert_eq!(rbac.counts(), (0, 0, 0, 1));
        let mut broken = object.clone();
        broken["subjects"] = serde_json::json!("alice");
        assert!(rbac.upsert_value(&broken).is_err());
        assert_eq!(rbac.cluster_bindings["x"].subjects[0].name, "alice");
        assert_eq!(
            RbacKind::from_kind("ClusterRoleBinding"),
            Some(RbacKind::ClusterRoleBinding)
        );
        assert_eq!(RbacKind::from_kind("Pod"), None);
    }

    #[test]
    fn rules_for_gathers_cluster_and_namespace_rules_once() {
        let alice = UserInfo::new("alice", &["dev"]);
        let secrets = PolicyRule::resources(&["get"], &[""], &["secrets"]);
        let rbac = RbacAuthorizer::from_objects([
            cluster_role("pod-reader", vec![get_pods()]),
            role("shop", "secrets", vec![secrets.clone(), get_pods()]),
            cluster_binding(
                "everyone",
                "pod-reader",
                vec![Subject::user("alice"), Subject::group("dev")],
            ),
            binding(
                "shop",
                "s",
                RoleRef::role("secrets"),
                vec![Subject::group("dev")],
            ),
            binding(
                "shop",
                "gone",
                RoleRef::role("gone"),
                vec![Subject::user("alice")],
            ),
        ]);
        assert_eq!(
            rbac.rules_for(&alice, "shop"),
            ResolvedRules {
                rules: vec![get_pods(), secrets],
                errors: vec![r#"role.rbac.authorization.k8s.io "gone" not found"#.into()],
            }
        );
        assert_eq!(rbac.rules_for(&alice, "").rules, [get_pods()]);
        assert_eq!(
            rbac.rules_for(&UserInfo::new("bob", &[]), "shop"),
            ResolvedRules::default()
        );
    }

    #[test]
    fn subjects_who_can_scan_the_cluster_and_the_namespace() {
        let rbac = RbacAuthorizer::from_objects([
            cluster_role("pod-reader", vec![get_pods()]),
            cluster_role("nothing", vec![]),
            cluster_binding("readers", "pod-reader", vec![Subject::group("dev")]),
            cluster_binding("none", "nothing", vec![Subject::user("zed")]),
            binding(
                "shop",
                "sa",
                RoleRef::cluster_role("pod-reader"),
                vec![
                    Subject::service_account("", "builder"),
                    Subject::group("dev"),
                ],
            ),
            binding(
                "other",
                "o",
                RoleRef::cluster_role("pod-reader"),
                vec![Subject::user("olga")],
            ),
        ]);
        let anyone = UserInfo::default();
        assert_eq!(
            rbac.subjects_who_can(&request(&anyone, "list", "pods", "shop")),
            [
                Subject::group("dev"),
                Subject::service_account("shop", "builder")
            ]
        );
        assert_eq!(
            rbac.subjects_who_can(&request(&anyone, "list", "pods", "")),
            [Subject::group("dev")]
        );
        assert!(
            rbac.subjects_who_can(&request(&anyone, "delete", "pods", "shop"))
                .is_empty()
        );
    }

    #[test]
    fn escalation_is_refused_with_what_is_missing() {
        let alice = UserInfo::new("alice", &["dev"]);
        let rbac = RbacAuthorizer::from_objects([
            cluster_role("pod-reader", vec![get_pods()]),
            binding(
                "shop",
                "b",
                RoleRef::cluster_role("pod-reader"),
                vec![Subject::user("alice")],
            ),
        ]);
        assert_eq!(
            rbac.confirm_no_escalation(
                &alice,
                "shop",
                &[PolicyRule::resources(&["get"], &[""], &["pods"])]
            ),
            Ok(())
        );
        let error = rbac
            .confirm_no_escalation(
                &alice,
                "other",
                &[PolicyRule::resources(&["get", "delete"], &[""], &["pods"])],
            )
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "user \"alice\" (groups=[\"dev\"]) is attempting to grant RBAC permissions not currently held:\n\
             {APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"get\"]}\n\
             {APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"delete\"]}"
        );
        let error = rbac
            .confirm_no_escalation(
                &alice,
                "shop",
                &[PolicyRule::non_resource(&["get"], &["/metrics"])],
            )
            .unwrap_err();
        assert_eq!(
            error.missing,
            [PolicyRule::non_resource(&["get"], &["/metrics"])]
        );
    }
}
