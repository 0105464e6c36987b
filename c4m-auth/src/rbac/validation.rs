//! What the API checks on an RBAC object before storing it, with
//! Kubernetes' defaults and messages (its `rbac/validation`).

use std::fmt;

use crate::rbac::objects::{
    LabelSelectorOperator, PolicyRule, RBAC_GROUP, RbacObject, RoleKind, RoleRef, Subject,
    SubjectKind,
};

/// One reason an object is invalid (a Kubernetes `StatusCause`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    /// `FieldValueRequired`, `FieldValueInvalid` or `FieldValueNotSupported`.
    pub reason: &'static str,
    /// The field's path (`rules[0].verbs`).
    pub field: String,
    /// What is wrong (`Required value: verbs must contain at least one
    /// value`).
    pub message: String,
}

impl fmt::Display for FieldViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Collects violations with Kubernetes' wording.
#[derive(Default)]
struct Violations(Vec<FieldViolation>);

impl Violations {
    fn required(&mut self, field: String, detail: &str) {
        let message = match detail {
            "" => "Required value".to_owned(),
            detail => format!("Required value: {detail}"),
        };
        self.push("FieldValueRequired", field, message);
    }

    fn invalid(&mut self, field: String, value: &str, detail: &str) {
        self.push(
            "FieldValueInvalid",
            field,
            format!("Invalid value: {value}: {detail}"),
        );
    }

    fn not_supported(&mut self, field: String, value: &str, supported: &[&str]) {
        let supported: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        self.push(
            "FieldValueNotSupported",
            field,
            format!(
                "Unsupported value: {value:?}: supported values: {}",
                supported.join(", ")
            ),
        );
    }

    fn push(&mut self, reason: &'static str, field: String, message: String) {
        self.0.push(FieldViolation {
            reason,
            field,
            message,
        });
    }

    /// An RBAC name is a path segment (`system:basic-user` is valid).
    fn name(&mut self, field: &str, name: &str) {
        if name.is_empty() {
            self.required(field.to_owned(), "");
            return;
        }
        let problems = [
            (name == ".", "may not be '.'"),
            (name == "..", "may not be '..'"),
            (name.contains('/'), "may not contain '/'"),
            (name.contains('%'), "may not contain '%'"),
        ];
        for (_, problem) in problems.iter().filter(|(wrong, _)| *wrong) {
            self.invalid(field.to_owned(), &format!("{name:?}"), problem);
        }
    }

    fn rule(&mut self, rule: &PolicyRule, namespaced: bool, path: &str) {
        if rule.verbs.is_empty() {
            self.required(
                format!("{path}.verbs"),
                "verbs must contain at least one value",
            );
        }
        if !rule.non_resource_urls.is_empty() {
            let urls = go_strings(&rule.non_resource_urls);
            if namespaced {
                self.invalid(
                    format!("{path}.nonResourceURLs"),
                    &urls,
                    "namespaced rules cannot apply to non-resource URLs",
                );
            }
            if !rule.api_groups.is_empty()
                || !rule.resources.is_empty()
                || !rule.resource_names.is_empty()
            {
                self.invalid(
                    format!("{path}.nonResourceURLs"),
                    &urls,
                    "rules cannot apply to both regular resources and non-resource URLs",
                );
            }
            return;
        }
        if rule.api_groups.is_empty() {
            self.required(
                format!("{path}.apiGroups"),
                "resource rules must supply at least one api group",
            );
        }
        if rule.resources.is_empty() {
            self.required(
                format!("{path}.resources"),
                "resource rules must supply at least one resource",
            );
        }
    }

    fn role_ref(&mut self, role: &RoleRef, cluster_binding: bool) {
        if role.api_group != RBAC_GROUP {
            self.not_supported("roleRef.apiGroup".into(), &role.api_group, &[RBAC_GROUP]);
        }
        if cluster_binding && role.kind != RoleKind::ClusterRole {
            self.not_supported(
                "roleRef.kind".into(),
                &role.kind.to_string(),
                &["ClusterRole"],
            );
        }
        self.name("roleRef.name", &role.name);
    }

    fn subject(&mut self, subject: &Subject, namespaced: bool, path: &str) {
        if subject.name.is_empty() {
            self.required(format!("{path}.name"), "");
        }
        let expected_group = match subject.kind {
            SubjectKind::ServiceAccount => {
                if !subject.name.is_empty() {
                    self.service_account_name(&subject.name, &format!("{path}.name"));
                }
                if !namespaced && subject.namespace.is_empty() {
                    self.required(format!("{path}.namespace"), "");
                }
                ""
            }
            SubjectKind::User | SubjectKind::Group => RBAC_GROUP,
        };
        if subject.api_group != expected_group {
            self.not_supported(
                format!("{path}.apiGroup"),
                &subject.api_group,
                &[expected_group],
            );
        }
    }

    /// A service account's name is a DNS-1123 subdomain.
    fn service_account_name(&mut self, name: &str, field: &str) {
        let label_ok = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        };
        if name.len() > 253 || !name.split('.').all(label_ok) {
            self.invalid(
                field.to_owned(),
                &format!("{name:?}"),
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
                 characters, '-' or '.', and must start and end with an alphanumeric character",
            );
        }
    }
}

/// `[]string{"a", "b"}`, as Go prints a value in a message.
fn go_strings(values: &[String]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

impl RbacObject {
    /// Fills what Kubernetes defaults: a User or Group subject without an
    /// `apiGroup` gets `rbac.authorization.k8s.io`.
    pub fn set_defaults(&mut self) {
        let subjects = match self {
            Self::RoleBinding(binding) => &mut binding.subjects,
            Self::ClusterRoleBinding(binding) => &mut binding.subjects,
            Self::Role(_) | Self::ClusterRole(_) => return,
        };
        for subject in subjects {
            if subject.api_group.is_empty() && subject.kind != SubjectKind::ServiceAccount {
                subject.api_group = RBAC_GROUP.to_owned();
            }
        }
    }

    /// What is wrong with the object (after [`Self::set_defaults`]), field
    /// by field; empty when it may be stored. Object names are path
    /// segments, not DNS names (`system:basic-user` is valid).
    pub fn validate(&self) -> Vec<FieldViolation> {
        let mut violations = Violations::default();
        match self {
            Self::Role(role) => {
                violations.name("metadata.name", &role.metadata.name);
                for (at, rule) in role.rules.iter().enumerate() {
                    violations.rule(rule, true, &format!("rules[{at}]"));
                }
            }
            Self::ClusterRole(role) => {
                violations.name("metadata.name", &role.metadata.name);
                for (at, rule) in role.rules.iter().enumerate() {
                    violations.rule(rule, false, &format!("rules[{at}]"));
                }
                if let Some(aggregation) = &role.aggregation_rule {
                    if aggregation.cluster_role_selectors.is_empty() {
                        violations.required(
                            "aggregationRule.clusterRoleSelectors".into(),
                            "at least one clusterRoleSelector required if aggregationRule is non-nil",
                        );
                    }
                    for (at, selector) in aggregation.cluster_role_selectors.iter().enumerate() {
                        for (index, requirement) in selector.match_expressions.iter().enumerate() {
                            let field = format!(
                                "aggregationRule.clusterRoleSelectors[{at}].matchExpressions[{index}].values"
                            );
                            let listed = matches!(
                                requirement.operator,
                                LabelSelectorOperator::In | LabelSelectorOperator::NotIn
                            );
                            if listed && requirement.values.is_empty() {
                                violations.required(
                                    field,
                                    "must be specified when `operator` is 'In' or 'NotIn'",
                                );
                            } else if !listed && !requirement.values.is_empty() {
                                violations.invalid(
                                    field,
                                    &go_strings(&requirement.values),
                                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                                );
                            }
                        }
                    }
                }
            }
            Self::RoleBinding(binding) => {
                violations.name("metadata.name", &binding.metadata.name);
                violations.role_ref(&binding.role_ref, false);
                for (at, subject) in binding.subjects.iter().enumerate() {
                    violations.subject(subject, true, &format!("subjects[{at}]"));
                }
            }
            Self::ClusterRoleBinding(binding) => {
                violations.name("metadata.name", &binding.metadata.name);
                violations.role_ref(&binding.role_ref, true);
                for (at, subject) in binding.subjects.iter().enumerate() {
                    violations.subject(subject, false, &format!("subjects[{at}]"));
                }
            }
        }
        violations.0
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn violations(object: serde_json::Value) -> Vec<String> {
        let mut object = RbacObject::from_value(&object).unwrap();
        object.set_defaults();
        object.validate().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn valid_objects_and_the_defaults_pass() {
        for object in crate::rbac::bootstrap_objects() {
            assert_eq!(object.validate(), vec![], "{object:?}");
        }
        // kubectl may leave out a User's apiGroup: it is defaulted.
        let binding = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "b", "namespace": "shop"},
            "subjects": [{"kind": "User", "name": "alice"}, {"kind": "ServiceAccount", "name": "ci"}],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
        });
        assert_eq!(violations(binding), Vec::<String>::new());
    }

    #[test]
    fn rules_are_checked_as_kubernetes_does() {
        let role = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "r", "namespace": "shop"},
            "rules": [
                {"apiGroups": [""], "resources": ["pods"]},
                {"verbs": ["get"], "nonResourceURLs": ["/healthz"]},
                {"verbs": ["get"]},
            ],
        });
        assert_eq!(
            violations(role),
            [
                "rules[0].verbs: Required value: verbs must contain at least one value",
                r#"rules[1].nonResourceURLs: Invalid value: []string{"/healthz"}: namespaced rules cannot apply to non-resource URLs"#,
                "rules[2].apiGroups: Required value: resource rules must supply at least one api group",
                "rules[2].resources: Required value: resource rules must supply at least one resource",
            ]
        );
        let cluster_role = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "a/b"},
            "rules": [{"verbs": ["get"], "resources": ["pods"], "nonResourceURLs": ["/x"]}],
            "aggregationRule": {"clusterRoleSelectors": [
                {"matchExpressions": [{"key": "k", "operator": "In"}, {"key": "k", "operator": "Exists", "values": ["v"]}]}
            ]},
        });
        assert_eq!(
            violations(cluster_role),
            [
                r#"metadata.name: Invalid value: "a/b": may not contain '/'"#,
                r#"rules[0].nonResourceURLs: Invalid value: []string{"/x"}: rules cannot apply to both regular resources and non-resource URLs"#,
                "aggregationRule.clusterRoleSelectors[0].matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'",
                r#"aggregationRule.clusterRoleSelectors[0].matchExpressions[1].values: Invalid value: []string{"v"}: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"#,
            ]
        );
        let empty_aggregation = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "agg"}, "aggregationRule": {},
        });
        assert_eq!(
            violations(empty_aggregation),
            [
                "aggregationRule.clusterRoleSelectors: Required value: at least one clusterRoleSelector required if aggregationRule is non-nil"
            ]
        );
    }

    #[test]
    fn bindings_check_their_role_and_subjects() {
        let binding = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": ".."},
            "subjects": [
                {"kind": "ServiceAccount", "name": "Bad_Name", "apiGroup": "rbac.authorization.k8s.io"},
                {"kind": "Group", "name": "", "apiGroup": "example.com"},
            ],
            "roleRef": {"apiGroup": "", "kind": "Role", "name": ""},
        });
        assert_eq!(
            violations(binding),
            [
                r#"metadata.name: Invalid value: "..": may not be '..'"#,
                r#"roleRef.apiGroup: Unsupported value: "": supported values: "rbac.authorization.k8s.io""#,
                r#"roleRef.kind: Unsupported value: "Role": supported values: "ClusterRole""#,
                "roleRef.name: Required value",
                r#"subjects[0].name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"#,
                "subjects[0].namespace: Required value",
                r#"subjects[0].apiGroup: Unsupported value: "rbac.authorization.k8s.io": supported values: """#,
                "subjects[1].name: Required value",
                r#"subjects[1].apiGroup: Unsupported value: "example.com": supported values: "rbac.authorization.k8s.io""#,
            ]
        );
    }
}
