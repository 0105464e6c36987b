//! c4m's access control, as pure logic: who a request is from, what it
//! asks, and whether that is allowed. No I/O beyond reading a token file,
//! no async: the API server calls it on every request. The CA signs
//! certificates; it stores nothing.
//!
//! - **Identity**: [`UserInfo`] (name, uid, groups, extra), Kubernetes'
//!   well-known groups ([`AUTHENTICATED_GROUP`], [`MASTERS_GROUP`]...) and
//!   the user names of service accounts (`system:serviceaccount:NS:NAME`)
//!   and nodes (`system:node:NAME`).
//! - **Authentication**: the [`Authenticator`] trait (a bearer token to a
//!   user), [`Authenticators`] (several, in order) and [`StaticTokens`]
//!   (Kubernetes' token file: `token,user,uid,"group1,group2"`);
//!   [`TokenIssuer`] and [`ServiceAccountAuthenticator`], Kubernetes'
//!   bound service-account JWTs (ES256), with the issuer's discovery
//!   documents ([`openid_configuration`], [`jwks`]); and
//!   [`ClientCertificateAuthenticator`] for a TLS client certificate (CN
//!   the user, O the groups), with a [`Revocation`] hook. Time comes from
//!   a [`Clock`], so tests move it.
//! - **Cluster CA**: [`ClusterCa`] makes or loads the CA and signs node
//!   client certificates that [`approve_node_csr`] (Kubernetes' kubelet
//!   auto-approval rules) accepts; [`renew_before`] says when to rotate.
//! - **Request attributes**: [`Attributes::from_request`] reads a method,
//!   path and query as Kubernetes' `RequestInfo` does (verb, API group,
//!   resource, subresource, namespace, name, or a non-resource path), and
//!   c4m's own endpoints through one table, [`C4M_ENDPOINTS`].
//! - **Authorization**: the [`Authorizer`] trait and its [`Decision`];
//!   [`RbacAuthorizer`], Kubernetes' RBAC over [`Role`], [`ClusterRole`],
//!   [`RoleBinding`] and [`ClusterRoleBinding`], indexed by subject and
//!   updated one object at a time; [`RbacObject::validate`] with
//!   Kubernetes' messages; [`aggregated_rules`] for aggregated
//!   ClusterRoles; the default roles ([`bootstrap_objects`]); the escalation
//!   check ([`RbacAuthorizer::confirm_no_escalation`]); and the 403 body
//!   Kubernetes writes ([`forbidden_status`]).
//!
//! ```
//! use c4m_auth::{
//!     Attributes, Authorizer, ClusterRoleBinding, Metadata, RbacAuthorizer, RbacObject,
//!     RoleRef, Subject, UserInfo, bootstrap_objects, forbidden_message,
//! };
//!
//! // The default roles, and `view` granted to group `auditors` everywhere.
//! let mut rbac = RbacAuthorizer::from_objects(bootstrap_objects());
//! rbac.upsert(RbacObject::ClusterRoleBinding(ClusterRoleBinding {
//!     metadata: Metadata::named("", "auditors-view"),
//!     subjects: vec![Subject::group("auditors")],
//!     role_ref: RoleRef::cluster_role("view"),
//! }));
//! let alice = UserInfo::new("alice", &["auditors"]).authenticated();
//!
//! let list_pods = Attributes::from_request("GET", "/api/v1/namespaces/shop/pods", None, alice.clone())?;
//! assert!(rbac.authorize(&list_pods).is_allowed());
//!
//! let read_secret = Attributes::from_request("GET", "/api/v1/namespaces/shop/secrets/db", None, alice)?;
//! assert!(!rbac.authorize(&read_secret).is_allowed());
//! assert_eq!(
//!     forbidden_message(&read_secret),
//!     r#"User "alice" cannot get resource "secrets" in API group "" in the namespace "shop""#
//! );
//! # Ok::<(), c4m_auth::RequestError>(())
//! ```

mod attributes;
mod authn;
mod authorizer;
mod c4m_endpoints;
mod ca;
mod clock;
mod rbac;
mod user;

pub use attributes::{Attributes, RequestError};
pub use authn::{
    AuthenticationError, Authenticator, Authenticators, BoundObject, BoundObjects, BoundRef,
    CertificateError, ClientCertificateAuthenticator, DEFAULT_LEEWAY, EXTRA_CREDENTIAL_ID,
    EXTRA_NODE_NAME, EXTRA_NODE_UID, EXTRA_POD_NAME, EXTRA_POD_UID, IssueError, IssuedToken,
    KeyError, MAX_TOKEN_EXPIRATION, MIN_TOKEN_EXPIRATION, PublicKey, Revocation, RevokedSerials,
    ServiceAccountAuthenticator, SigningKey, StaticTokens, TokenFileError, TokenIssuer,
    TokenRequest, jwks, openid_configuration,
};
pub use authorizer::{
    Authorizer, Decision, PrivilegedGroups, Union, forbidden_message, forbidden_status,
};
pub use c4m_endpoints::{C4M_API_GROUP, C4M_ENDPOINTS, C4mEndpoint};
pub use ca::{CaError, ClusterCa, SignedCertificate, approve_node_csr, renew_before};
pub use clock::{Clock, ManualClock, SystemClock};
pub use rbac::{
    AggregationRule, ClusterRole, ClusterRoleBinding, Escalation, FieldViolation, LabelSelector,
    LabelSelectorOperator, LabelSelectorRequirement, Metadata, ObjectError, PolicyRule,
    RBAC_API_VERSION, RBAC_GROUP, RbacAuthorizer, RbacKind, RbacObject, ResolvedRules, Role,
    RoleBinding, RoleKind, RoleRef, Subject, SubjectKind, aggregate_all, aggregated_rules,
    bootstrap_cluster_role_bindings, bootstrap_cluster_roles, bootstrap_objects, uncovered_rules,
};
pub use user::{
    ANONYMOUS_USER, AUTHENTICATED_GROUP, MASTERS_GROUP, NODES_GROUP, SERVICE_ACCOUNTS_GROUP,
    UNAUTHENTICATED_GROUP, UserInfo, node_user_name, parse_node_user_name,
    parse_service_account_user_name, service_account_groups, service_account_user_name,
};
