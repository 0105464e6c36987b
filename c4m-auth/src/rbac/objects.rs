//! The `rbac.authorization.k8s.io/v1` objects, typed, as the store holds
//! them in JSON: [`Role`], [`ClusterRole`], [`RoleBinding`],
//! [`ClusterRoleBinding`] and their parts.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use thiserror::Error;

/// The API group of RBAC objects (and of `User`/`Group` subjects).
pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
/// The `apiVersion` of RBAC objects.
pub const RBAC_API_VERSION: &str = "rbac.authorization.k8s.io/v1";

/// An RBAC object that cannot be read.
#[derive(Debug, Error)]
pub enum ObjectError {
    /// Not an RBAC kind of `rbac.authorization.k8s.io/v1`.
    #[error("{api_version:?} {kind:?} is not an RBAC object of {RBAC_API_VERSION}")]
    NotRbac {
        /// The object's `apiVersion`.
        api_version: String,
        /// The object's `kind`.
        kind: String,
    },
    /// The object does not have the shape of its kind.
    #[error("invalid {kind} {name:?}")]
    Invalid {
        /// The kind.
        kind: &'static str,
        /// The object's name, as far as it could be read.
        name: String,
        /// What is wrong, naming the field.
        #[source]
        source: serde_json::Error,
    },
}

/// Reads `null` as the default value, as Go's JSON decoder does.
fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// The part of an object's metadata RBAC reads (and its annotations).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// The object's name.
    #[serde(default)]
    pub name: String,
    /// Its namespace (empty for cluster-scoped objects).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Its labels (aggregation selects ClusterRoles by them).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
    /// Its annotations (kept so bootstrap objects are stored with theirs).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
}

impl Metadata {
    /// Metadata with `name` and `namespace` only.
    pub fn named(namespace: &str, name: &str) -> Self {
        Self {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            ..Self::default()
        }
    }
}

/// What a role grants: `verbs` on either resources (`api_groups` ×
/// `resources`, limited to `resource_names` when any) or non-resource URLs.
///
/// `*` matches any verb, group or resource; a resource `pods/exec` names a
/// subresource and `*/scale` that subresource of any resource; a
/// non-resource URL ending in `*` matches every path it prefixes.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    /// Verbs granted.
    #[serde(default, deserialize_with = "nullable")]
    pub verbs: Vec<String>,
    /// API groups of the resources (`""` is the core group).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub api_groups: Vec<String>,
    /// Resources, with or without a subresource.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub resources: Vec<String>,
    /// The only object names granted, when not empty.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub resource_names: Vec<String>,
    /// Non-resource paths granted (`/healthz`, `/apis/*`).
    #[serde(
        rename = "nonResourceURLs",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub non_resource_urls: Vec<String>,
}

impl PolicyRule {
    /// A rule granting `verbs` on `resources` of `api_groups`.
    pub fn resources(verbs: &[&str], api_groups: &[&str], resources: &[&str]) -> Self {
        Self {
            verbs: strings(verbs),
            api_groups: strings(api_groups),
            resources: strings(resources),
            ..Self::default()
        }
    }

    /// A rule granting `verbs` on non-resource `urls`.
    pub fn non_resource(verbs: &[&str], urls: &[&str]) -> Self {
        Self {
            verbs: strings(verbs),
            non_resource_urls: strings(urls),
            ..Self::default()
        }
    }

    /// The same rule limited to objects named `names`.
    pub fn named(mut self, names: &[&str]) -> Self {
        self.resource_names = strings(names);
        self
    }
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
}

/// How a [`LabelSelectorRequirement`] compares a label with its values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LabelSelectorOperator {
    /// The label is present with one of the values.
    In,
    /// The label is absent or has none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

/// One condition on one label.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelSelectorRequirement {
    /// The label key.
    pub key: String,
    /// How the label is compared with `values`.
    pub operator: LabelSelectorOperator,
    /// The values for `In`/`NotIn`.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub values: Vec<String>,
}

/// A label selector: every `match_labels` pair and every expression must
/// hold. An empty selector selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// Labels that must be present with exactly these values.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub match_labels: BTreeMap<String, String>,
    /// Requirements, ANDed with `match_labels`.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

impl LabelSelector {
    /// Whether an object with `labels` is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
            && self.match_expressions.iter().all(|requirement| {
                let value = labels.get(&requirement.key);
                let listed = value.is_some_and(|value| requirement.values.contains(value));
                match requirement.operator {
                    LabelSelectorOperator::In => listed,
                    LabelSelectorOperator::NotIn => !listed,
                    LabelSelectorOperator::Exists => value.is_some(),
                    LabelSelectorOperator::DoesNotExist => value.is_none(),
                }
            })
    }
}

/// Which ClusterRoles an aggregated ClusterRole takes its rules from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AggregationRule {
    /// ClusterRoles matching any selector contribute their rules.
    #[serde(default, deserialize_with = "nullable")]
    pub cluster_role_selectors: Vec<LabelSelector>,
}

/// Rules within one namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    /// Name and namespace.
    pub metadata: Metadata,
    /// What the role grants.
    #[serde(default, deserialize_with = "nullable")]
    pub rules: Vec<PolicyRule>,
}

/// Rules for every namespace (through a ClusterRoleBinding), for one
/// (through a RoleBinding), or for cluster-scoped resources and
/// non-resource URLs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRole {
    /// Name and labels.
    pub metadata: Metadata,
    /// What the role grants; for an aggregated role, what the aggregation
    /// controller last computed ([`super::aggregated_rules`]).
    #[serde(default, deserialize_with = "nullable")]
    pub rules: Vec<PolicyRule>,
    /// Present for an aggregated role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregation_rule: Option<AggregationRule>,
}

/// The kind of a [`Subject`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SubjectKind {
    /// A user name.
    User,
    /// A group name.
    Group,
    /// A service account (`namespace`/`name`).
    ServiceAccount,
}

/// Who a binding grants its role to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subject {
    /// User, group or service account.
    pub kind: SubjectKind,
    /// `rbac.authorization.k8s.io` for users and groups, empty for service
    /// accounts.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_group: String,
    /// The user, group or service account name.
    pub name: String,
    /// A service account's namespace; in a RoleBinding it defaults to the
    /// binding's.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

impl Subject {
    /// User `name`.
    pub fn user(name: &str) -> Self {
        Self::with_group(SubjectKind::User, name)
    }

    /// Group `name`.
    pub fn group(name: &str) -> Self {
        Self::with_group(SubjectKind::Group, name)
    }

    /// Service account `name` of `namespace`.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        Self {
            kind: SubjectKind::ServiceAccount,
            api_group: String::new(),
            name: name.to_owned(),
            namespace: namespace.to_owned(),
        }
    }

    fn with_group(kind: SubjectKind, name: &str) -> Self {
        Self {
            kind,
            api_group: RBAC_GROUP.to_owned(),
            name: name.to_owned(),
            namespace: String::new(),
        }
    }

    /// Kubernetes' description of the subject (`User "alice"`,
    /// `ServiceAccount "name/namespace"`), for audit reasons; a service
    /// account without a namespace is in `binding_namespace`.
    pub fn describe(&self, binding_namespace: &str) -> String {
        match self.kind {
            SubjectKind::ServiceAccount => {
                let namespace = match self.namespace.as_str() {
                    "" => binding_namespace,
                    namespace => namespace,
                };
                format!("ServiceAccount {:?}", format!("{}/{namespace}", self.name))
            }
            kind => format!("{kind:?} {:?}", self.name),
        }
    }
}

/// The kind of role a binding refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RoleKind {
    /// A Role of the binding's namespace.
    Role,
    /// A ClusterRole.
    ClusterRole,
}

impl fmt::Display for RoleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The role a binding grants.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleRef {
    /// Always `rbac.authorization.k8s.io`.
    #[serde(default)]
    pub api_group: String,
    /// Role or ClusterRole.
    pub kind: RoleKind,
    /// The role's name.
    pub name: String,
}

impl RoleRef {
    /// ClusterRole `name`.
    pub fn cluster_role(name: &str) -> Self {
        Self {
            api_group: RBAC_GROUP.to_owned(),
            kind: RoleKind::ClusterRole,
            name: name.to_owned(),
        }
    }

    /// Role `name` (of the binding's namespace).
    pub fn role(name: &str) -> Self {
        Self {
            kind: RoleKind::Role,
            ..Self::cluster_role(name)
        }
    }
}

/// Grants a Role or ClusterRole to subjects within one namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleBinding {
    /// Name and namespace.
    pub metadata: Metadata,
    /// Who the role is granted to.
    #[serde(default, deserialize_with = "nullable")]
    pub subjects: Vec<Subject>,
    /// The role granted.
    pub role_ref: RoleRef,
}

/// Grants a ClusterRole to subjects in every namespace and at the cluster
/// scope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRoleBinding {
    /// Name.
    pub metadata: Metadata,
    /// Who the role is granted to.
    #[serde(default, deserialize_with = "nullable")]
    pub subjects: Vec<Subject>,
    /// The ClusterRole granted.
    pub role_ref: RoleRef,
}

/// Any of the four RBAC objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RbacObject {
    /// A Role.
    Role(Role),
    /// A ClusterRole.
    ClusterRole(ClusterRole),
    /// A RoleBinding.
    RoleBinding(RoleBinding),
    /// A ClusterRoleBinding.
    ClusterRoleBinding(ClusterRoleBinding),
}

impl RbacObject {
    /// The typed object of a stored JSON object.
    ///
    /// # Errors
    /// Not an RBAC kind of `rbac.authorization.k8s.io/v1`, or fields of the
    /// wrong shape (the error names the field and the object).
    pub fn from_value(object: &Value) -> Result<Self, ObjectError> {
        let text = |key: &str| object.get(key).and_then(Value::as_str).unwrap_or("");
        let (api_version, kind) = (text("apiVersion"), text("kind"));
        let invalid = |kind, source| ObjectError::Invalid {
            kind,
            name: object
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            source,
        };
        if api_version != RBAC_API_VERSION {
            return Err(ObjectError::NotRbac {
                api_version: api_version.to_owned(),
                kind: kind.to_owned(),
            });
        }
        let typed = match kind {
            "Role" => Role::deserialize(object)
                .map(Self::Role)
                .map_err(|e| invalid("Role", e))?,
            "ClusterRole" => ClusterRole::deserialize(object)
                .map(Self::ClusterRole)
                .map_err(|e| invalid("ClusterRole", e))?,
            "RoleBinding" => RoleBinding::deserialize(object)
                .map(Self::RoleBinding)
                .map_err(|e| invalid("RoleBinding", e))?,
            "ClusterRoleBinding" => ClusterRoleBinding::deserialize(object)
                .map(Self::ClusterRoleBinding)
                .map_err(|e| invalid("ClusterRoleBinding", e))?,
            _ => {
                return Err(ObjectError::NotRbac {
                    api_version: api_version.to_owned(),
                    kind: kind.to_owned(),
                });
            }
        };
        Ok(typed)
    }

    /// The object as the store holds it, with `apiVersion` and `kind`.
    pub fn to_value(&self) -> Value {
        let (kind, value) = match self {
            Self::Role(role) => ("Role", serde_json::to_value(role)),
            Self::ClusterRole(role) => ("ClusterRole", serde_json::to_value(role)),
            Self::RoleBinding(binding) => ("RoleBinding", serde_json::to_value(binding)),
            Self::ClusterRoleBinding(binding) => {
                ("ClusterRoleBinding", serde_json::to_value(binding))
            }
        };
        // These types serialize only strings, vectors and maps with string
        // keys, which cannot fail.
        let mut object = match value {
            Ok(Value::Object(object)) => object,
            _ => serde_json::Map::new(),
        };
        object.insert("apiVersion".into(), RBAC_API_VERSION.into());
        object.insert("kind".into(), kind.into());
        Value::Object(object)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn stored_objects_are_read_with_nulls_and_unknown_fields() {
        let role = RbacObject::from_value(&json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "admin", "uid": "u", "labels": null, "resourceVersion": "4"},
            "rules": null,
            "aggregationRule": {"clusterRoleSelectors": [
                {"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-admin": "true"}}
            ]},
        }))
        .unwrap();
        let RbacObject::ClusterRole(role) = role else {
            panic!("not a ClusterRole: {role:?}")
        };
        assert_eq!(role.metadata.name, "admin");
        assert!(role.rules.is_empty());
        assert_eq!(
            role.aggregation_rule.unwrap().cluster_role_selectors.len(),
            1
        );

        let binding = RbacObject::from_value(&json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "b", "namespace": "shop"},
            "subjects": [
                {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"},
                {"kind": "ServiceAccount", "name": "builder"},
            ],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        }))
        .unwrap();
        let RbacObject::RoleBinding(binding) = &binding else {
            panic!("not a RoleBinding: {binding:?}")
        };
        assert_eq!(binding.subjects[1].kind, SubjectKind::ServiceAccount);
        assert_eq!(binding.role_ref, RoleRef::cluster_role("edit"));
    }

    #[test]
    fn objects_round_trip_through_their_stored_form() {
        let object = RbacObject::Role(Role {
            metadata: Metadata::named("shop", "reader"),
            rules: vec![
                PolicyRule::resources(&["get"], &[""], &["pods/log"]).named(&["web"]),
                PolicyRule::resources(&["*"], &["apps"], &["*/scale"]),
            ],
        });
        let value = object.to_value();
        assert_eq!(value["apiVersion"], RBAC_API_VERSION);
        assert_eq!(value["kind"], "Role");
        assert_eq!(value["rules"][0]["resourceNames"], json!(["web"]));
        assert_eq!(RbacObject::from_value(&value).unwrap(), object);
    }

    #[test]
    fn errors_name_the_object_and_the_field() {
        let error = RbacObject::from_value(&json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "ops"},
            "subjects": [{"kind": "Robot", "name": "r2"}],
            "roleRef": {"kind": "ClusterRole", "name": "view"},
        }))
        .unwrap_err();
        assert_eq!(error.to_string(), r#"invalid ClusterRoleBinding "ops""#);
        let cause = std::error::Error::source(&error).unwrap().to_string();
        assert!(cause.contains("unknown variant `Robot`"), "{cause}");

        let error = RbacObject::from_value(&json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "r", "namespace": "n"},
            "rules": [{"verbs": "get"}],
        }))
        .unwrap_err();
        let cause = std::error::Error::source(&error).unwrap().to_string();
        assert!(cause.contains("invalid type: string \"get\""), "{cause}");

        let error =
            RbacObject::from_value(&json!({"apiVersion": "v1", "kind": "ConfigMap"})).unwrap_err();
        assert_eq!(
            error.to_string(),
            r#""v1" "ConfigMap" is not an RBAC object of rbac.authorization.k8s.io/v1"#
        );
    }

    #[test]
    fn label_selectors_match_labels_and_expressions() {
        use LabelSelectorOperator::*;
        let labels: BTreeMap<String, String> =
            [("tier".into(), "web".into()), ("team".into(), "a".into())].into();
        let expression = |key: &str, operator, values: &[&str]| LabelSelector {
            match_expressions: vec![LabelSelectorRequirement {
                key: key.into(),
                operator,
                values: strings(values),
            }],
            ..LabelSelector::default()
        };
        assert!(LabelSelector::default().matches(&labels));
        assert!(expression("tier", In, &["web", "db"]).matches(&labels));
        assert!(!expression("tier", In, &["db"]).matches(&labels));
        assert!(expression("tier", NotIn, &["db"]).matches(&labels));
        assert!(expression("zone", NotIn, &["db"]).matches(&labels));
        assert!(!expression("tier", NotIn, &["web"]).matches(&labels));
        assert!(expression("team", Exists, &[]).matches(&labels));
        assert!(!expression("zone", Exists, &[]).matches(&labels));
        assert!(expression("zone", DoesNotExist, &[]).matches(&labels));
        let by_label = LabelSelector {
            match_labels: [("tier".into(), "db".into())].into(),
            ..LabelSelector::default()
        };
        assert!(!by_label.matches(&labels));
    }

    #[test]
    fn subjects_are_described_as_kubernetes_does() {
        assert_eq!(Subject::user("alice").describe("x"), r#"User "alice""#);
        assert_eq!(Subject::group("dev").describe(""), r#"Group "dev""#);
        assert_eq!(
            Subject::service_account("", "builder").describe("shop"),
            r#"ServiceAccount "builder/shop""#
        );
        assert_eq!(
            Subject::service_account("ci", "builder").describe("shop"),
            r#"ServiceAccount "builder/ci""#
        );
    }
}
