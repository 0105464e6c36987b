//! The default policy, as Kubernetes ships it (its `bootstrappolicy`):
//! `cluster-admin`, the aggregated `admin`, `edit` and `view` with the
//! `system:aggregate-to-*` roles that feed them, `system:basic-user`,
//! `system:discovery`, `system:public-info-viewer`, and their bindings to
//! `system:masters`, `system:authenticated` and `system:unauthenticated`.
//! c4m adds `system:c4m:*` roles: its kinds (Microservices, Gateway API,
//! VolumeSnapshots, metrics) aggregated into `view` and `edit`, and its
//! batch apply and certificate endpoints for every authenticated user.

use serde::de::DeserializeOwned;

use crate::rbac::aggregation::aggregate_all;
use crate::rbac::objects::{ClusterRole, ClusterRoleBinding, RbacObject};

const CLUSTER_ROLES: &str = include_str!("bootstrap/cluster-roles.json");
const CLUSTER_ROLE_BINDINGS: &str = include_str!("bootstrap/cluster-role-bindings.json");

/// Compiled-in data, checked by this module's tests: it cannot fail at run
/// time, whatever the input.
fn parse<T: DeserializeOwned>(json: &str) -> Vec<T> {
    serde_json::from_str(json).expect("the bootstrap policy is valid JSON of its kinds")
}

/// The default ClusterRoles, with the rules of the aggregated ones computed
/// (as the aggregation controller would store them).
pub fn bootstrap_cluster_roles() -> Vec<ClusterRole> {
    let mut roles: Vec<ClusterRole> = parse(CLUSTER_ROLES);
    aggregate_all(&mut roles);
    roles
}

/// The default ClusterRoleBindings.
pub fn bootstrap_cluster_role_bindings() -> Vec<ClusterRoleBinding> {
    parse(CLUSTER_ROLE_BINDINGS)
}

/// Every default object, roles first.
pub fn bootstrap_objects() -> Vec<RbacObject> {
    let roles = bootstrap_cluster_roles()
        .into_iter()
        .map(RbacObject::ClusterRole);
    let bindings = bootstrap_cluster_role_bindings()
        .into_iter()
        .map(RbacObject::ClusterRoleBinding);
    roles.chain(bindings).collect()
}
