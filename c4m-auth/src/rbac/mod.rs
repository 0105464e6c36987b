//! Kubernetes' RBAC (`rbac.authorization.k8s.io/v1`): the objects, rule
//! matching, validation, aggregation, the authorizer and the default
//! policy.

mod aggregation;
mod authorizer;
mod bootstrap;
mod objects;
mod rule;
mod validation;

pub use aggregation::{aggregate_all, aggregated_rules};
pub use authorizer::{Escalation, RbacAuthorizer, RbacKind, ResolvedRules};
pub use bootstrap::{bootstrap_cluster_role_bindings, bootstrap_cluster_roles, bootstrap_objects};
pub use objects::{
    AggregationRule, ClusterRole, ClusterRoleBinding, LabelSelector, LabelSelectorOperator,
    LabelSelectorRequirement, Metadata, ObjectError, PolicyRule, RBAC_API_VERSION, RBAC_GROUP,
    RbacObject, Role, RoleBinding, RoleKind, RoleRef, Subject, SubjectKind,
};
pub use rule::uncovered_rules;
pub use validation::FieldViolation;
