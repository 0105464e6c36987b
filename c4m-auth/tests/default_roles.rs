//! The default policy at work: requests as clients send them, read by
//! `Attributes::from_request` and decided by an `RbacAuthorizer` holding
//! the bootstrap roles and bindings plus a user bound to each of `view`,
//! `edit` and `admin` in namespace `shop`.

use c4m_auth::{
    Attributes, Authorizer, ClusterRoleBinding, Decision, Metadata, PolicyRule, RbacAuthorizer,
    RbacObject, RoleBinding, RoleRef, Subject, UserInfo, bootstrap_cluster_roles,
    bootstrap_objects, forbidden_status,
};

fn authorizer() -> RbacAuthorizer {
    let mut rbac = RbacAuthorizer::from_objects(bootstrap_objects());
    for (user, role) in [("vera", "view"), ("eddie", "edit"), ("ada", "admin")] {
        rbac.upsert(RbacObject::RoleBinding(RoleBinding {
            metadata: Metadata::named("shop", &format!("{user}-{role}")),
            subjects: vec![Subject::user(user)],
            role_ref: RoleRef::cluster_role(role),
        }));
    }
    rbac
}

fn user(name: &str) -> UserInfo {
    UserInfo::new(name, &[]).authenticated()
}

/// Whether `user`'s `method` on `url` is allowed.
fn allowed(rbac: &RbacAuthorizer, user: &UserInfo, method: &str, url: &str) -> bool {
    let (path, query) = match url.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (url, None),
    };
    let attributes = Attributes::from_request(method, path, query, user.clone())
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    rbac.authorize(&attributes).is_allowed()
}

/// Checks each `(method, url, allowed)` for `user`, listing every wrong
/// decision at once.
fn check(rbac: &RbacAuthorizer, user: &UserInfo, cases: &[(&str, &str, bool)]) {
    let wrong: Vec<String> = cases
        .iter()
        .filter(|(method, url, want)| allowed(rbac, user, method, url) != *want)
        .map(|(method, url, want)| format!("{method} {url}: expected allowed={want}"))
        .collect();
    assert!(wrong.is_empty(), "{}:\n{}", user.name, wrong.join("\n"));
}

/// A create of every resource the default roles name, in `namespace`.
fn creates_of_everything(namespace: &str) -> Vec<(String, String)> {
    let mut creates = Vec::new();
    for role in bootstrap_cluster_roles() {
        for rule in role.rules {
            for group in &rule.api_groups {
                for resource in &rule.resources {
                    let (resource, subresource) = match resource.split_once('/') {
                        Some((resource, sub)) => (resource, format!("/x/{sub}")),
                        None => (resource.as_str(), String::new()),
                    };
                    let prefix = match group.as_str() {
                        "" => "/api/v1".to_owned(),
                        "*" => continue,
                        group => format!("/apis/{group}/v1"),
                    };
                    let path = format!("{prefix}/namespaces/{namespace}/{resource}{subresource}");
                    creates.push(("POST".to_owned(), path));
                }
            }
        }
    }
    creates
}

#[test]
fn view_reads_but_cannot_read_secrets_change_exec_or_forward() {
    let rbac = authorizer();
    check(
        &rbac,
        &user("vera"),
        &[
            ("GET", "/api/v1/namespaces/shop/pods", true),
            ("GET", "/api/v1/namespaces/shop/pods?watch=1", true),
            ("GET", "/api/v1/namespaces/shop/pods/web", true),
            ("GET", "/api/v1/namespaces/shop/pods/web/log", true),
            ("GET", "/api/v1/namespaces/shop/pods/web/status", true),
            ("GET", "/api/v1/namespaces/shop/configmaps/app", true),
            ("GET", "/api/v1/namespaces/shop/services", true),
            (
                "GET",
                "/apis/apps/v1/namespaces/shop/deployments/web/scale",
                true,
            ),
            ("GET", "/apis/batch/v1/namespaces/shop/cronjobs", true),
            (
                "GET",
                "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices",
                true,
            ),
            (
                "GET",
                "/apis/c4m.io/v1/namespaces/shop/microservices/web",
                true,
            ),
            (
                "GET",
                "/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes",
                true,
            ),
            (
                "GET",
                "/apis/metrics.k8s.io/v1beta1/namespaces/shop/pods",
                true,
            ),
            (
                "GET",
                "/c4m/v1/namespaces/shop/services/web/endpoints",
                true,
            ),
            ("GET", "/api/v1/namespaces/shop", true),
            // Secrets, streams and changes are not the viewer's.
            ("GET", "/api/v1/namespaces/shop/secrets", false),
            ("GET", "/api/v1/namespaces/shop/secrets/db", false),
            ("GET", "/api/v1/namespaces/shop/secrets?watch=true", false),
            (
                "GET",
                "/api/v1/namespaces/shop/pods/web/exec?command=sh",
                false,
            ),
            (
                "POST",
                "/api/v1/namespaces/shop/pods/web/exec?command=sh",
                false,
            ),
            ("GET", "/api/v1/namespaces/shop/pods/web/attach", false),
            (
                "GET",
                "/api/v1/namespaces/shop/pods/web/portforward?ports=80",
                false,
            ),
            ("GET", "/api/v1/namespaces/shop/pods/web/proxy", false),
            ("POST", "/api/v1/namespaces/shop/pods", false),
            ("DELETE", "/api/v1/namespaces/shop/pods/web", false),
            ("DELETE", "/api/v1/namespaces/shop/pods", false),
            (
                "PATCH",
                "/apis/apps/v1/namespaces/shop/deployments/web",
                false,
            ),
            (
                "PUT",
                "/apis/apps/v1/namespaces/shop/deployments/web/scale",
                false,
            ),
            ("PUT", "/api/v1/namespaces/shop/pods/web/status", false),
            ("POST", "/api/v1/namespaces/shop/pods/web/eviction", false),
            (
                "GET",
                "/apis/rbac.authorization.k8s.io/v1/namespaces/shop/roles",
                false,
            ),
            // Elsewhere and cluster-wide: nothing.
            ("GET", "/api/v1/namespaces/other/pods", false),
            ("GET", "/api/v1/pods", false),
            ("GET", "/api/v1/nodes", false),
            ("GET", "/c4m/v1/nodes/n1/images", false),
            ("GET", "/c4m/v1/scheduler/policy", false),
        ],
    );
    let creates = creates_of_everything("shop");
    assert!(creates.len() > 100, "{}", creates.len());
    // View adds no create to what every authenticated user may create
    // (reviews of itself, and reaching the batch apply endpoint).
    let (vera, nobody) = (user("vera"), user("nobody"));
    for (method, path) in &creates {
        let baseline = allowed(&rbac, &nobody, method, path);
        assert_eq!(
            allowed(&rbac, &vera, method, path),
            baseline,
            "{method} {path}"
        );
        if baseline {
            assert!(
                path.ends_with("/selfsubjectaccessreviews")
                    || path.ends_with("/selfsubjectrulesreviews")
                    || path.ends_with("/selfsubjectreviews")
                    || path.ends_with("/applies"),
                "{method} {path}"
            );
        }
    }
    let view = bootstrap_cluster_roles()
        .into_iter()
        .find(|role| role.metadata.name == "view")
        .unwrap();
    for rule in &view.rules {
        assert!(
            rule.verbs
                .iter()
                .all(|verb| ["get", "list", "watch"].contains(&verb.as_str())),
            "view grants {rule:?}"
        );
    }
}

#[test]
fn edit_changes_workloads_but_not_roles() {
    let rbac = authorizer();
    check(
        &rbac,
        &user("eddie"),
        &[
            ("POST", "/api/v1/namespaces/shop/pods", true),
            ("GET", "/api/v1/namespaces/shop/secrets/db", true),
            ("POST", "/api/v1/namespaces/shop/secrets", true),
            (
                "GET",
                "/api/v1/namespaces/shop/pods/web/exec?command=sh",
                true,
            ),
            (
                "GET",
                "/api/v1/namespaces/shop/pods/web/portforward?ports=80",
                true,
            ),
            (
                "PUT",
                "/apis/apps/v1/namespaces/shop/deployments/web/scale",
                true,
            ),
            (
                "DELETE",
                "/apis/apps/v1/namespaces/shop/statefulsets/db",
                true,
            ),
            (
                "PATCH",
                "/apis/c4m.io/v1/namespaces/shop/microservices/web",
                true,
            ),
            (
                "POST",
                "/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes",
                true,
            ),
            (
                "POST",
                "/apis/snapshot.storage.k8s.io/v1/namespaces/shop/volumesnapshots",
                true,
            ),
            (
                "POST",
                "/api/v1/namespaces/shop/serviceaccounts/builder/token",
                true,
            ),
            ("GET", "/api/v1/namespaces/shop/pods/web/log", true),
            // Roles and bindings are the admin's.
            (
                "GET",
                "/apis/rbac.authorization.k8s.io/v1/namespaces/shop/roles",
                false,
            ),
            (
                "POST",
                "/apis/rbac.authorization.k8s.io/v1/namespaces/shop/roles",
                false,
            ),
            (
                "PUT",
                "/apis/rbac.authorization.k8s.io/v1/namespaces/shop/roles/r",
                false,
            ),
            (
                "DELETE",
                "/apis/rbac.authorization.k8s.io/v1/namespaces/shop/rolebindings/b",
                false,
            ),
            (
                "POST",
                "/apis/rbac.authorization.k8s.io/v1/namespaces/shop/rolebindings",
                false,
            ),
            (
                "POST",
                "/apis/authorization.k8s.io/v1/namespaces/shop/localsubjectaccessreviews",
                false,
            ),
            // Nor anything outside the namespace.
            ("POST", "/api/v1/namespaces/other/pods", false),
            ("PUT", "/api/v1/namespaces/shop", false),
            ("DELETE", "/api/v1/namespaces/shop", false),
            ("POST", "/c4m/v1/nodes/n1/images/pull", false),
        ],
    );
}

#[test]
fn admin_manages_roles_in_its_namespace_only() {
    let rbac = authorizer();
    check(
        &rbac,
        &user("ada"),
        &[
            (
                "POST",
                "/apis/rbac.authorization.k8s.io/v1/namespaces/shop/roles",
                true,
            ),
            (
                "PUT",
                "/apis/rbac.authorization.k8s.io/v1/namespaces/shop/roles/r",
                true,
            ),
            (
                "DELETE",
                "/apis/rbac.authorization.k8s.io/v1/namespaces/shop/rolebindings/b",
                true,
            ),
            (
                "GET",
                "/apis/rbac.authorization.k8s.io/v1/namespaces/shop/rolebindings?watch=1",
                true,
            ),
            (
                "POST",
                "/apis/authorization.k8s.io/v1/namespaces/shop/localsubjectaccessreviews",
                true,
            ),
            ("POST", "/api/v1/namespaces/shop/pods", true),
            ("GET", "/api/v1/namespaces/shop/secrets", true),
            // Not in another namespace, nor cluster-wide.
            (
                "POST",
                "/apis/rbac.authorization.k8s.io/v1/namespaces/other/roles",
                false,
            ),
            ("GET", "/apis/rbac.authorization.k8s.io/v1/roles", false),
            (
                "POST",
                "/apis/rbac.authorization.k8s.io/v1/clusterroles",
                false,
            ),
            (
                "POST",
                "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
                false,
            ),
            ("GET", "/api/v1/namespaces/other/secrets", false),
            ("PUT", "/api/v1/namespaces/shop", false),
            ("DELETE", "/api/v1/nodes/n1", false),
            ("PUT", "/c4m/v1/scheduler/policy", false),
        ],
    );
    // What the admin may grant in its namespace is what it holds there.
    let ada = user("ada");
    let edit_rules = bootstrap_cluster_roles()
        .into_iter()
        .find(|role| role.metadata.name == "edit")
        .unwrap()
        .rules;
    assert_eq!(
        rbac.confirm_no_escalation(&ada, "shop", &edit_rules),
        Ok(())
    );
    let nodes = [PolicyRule::resources(&["get"], &[""], &["nodes"])];
    assert!(rbac.confirm_no_escalation(&ada, "shop", &nodes).is_err());
    assert!(
        rbac.confirm_no_escalation(&ada, "other", &edit_rules)
            .is_err()
    );
}

#[test]
fn masters_may_do_anything() {
    let rbac = authorizer();
    let root = UserInfo::new("root", &["system:masters"]).authenticated();
    check(
        &rbac,
        &root,
        &[
            ("DELETE", "/api/v1/nodes/n1", true),
            (
                "POST",
                "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
                true,
            ),
            ("PUT", "/c4m/v1/scheduler/policy", true),
            ("DELETE", "/c4m/v1/nodes/n1/images", true),
            ("POST", "/c4m/v1/nodes/n1/images/import", true),
            ("GET", "/metrics", true),
            ("GET", "/api/v1/namespaces/any/secrets", true),
        ],
    );
    let attributes = Attributes::from_request("DELETE", "/api/v1/nodes/n1", None, root).unwrap();
    assert_eq!(
        rbac.authorize(&attributes),
        Decision::Allow(
            r#"RBAC: allowed by ClusterRoleBinding "cluster-admin" of ClusterRole "cluster-admin" to Group "system:masters""#
                .into()
        )
    );
}

#[test]
fn everyone_authenticated_discovers_and_reviews_itself_and_anonymous_only_sees_health() {
    let rbac = authorizer();
    check(
        &rbac,
        &user("nobody"),
        &[
            ("GET", "/api", true),
            ("GET", "/api/v1", true),
            ("GET", "/apis", true),
            ("GET", "/apis/apps/v1", true),
            ("GET", "/openapi/v2", true),
            ("GET", "/openapi/v3/apis/apps/v1", true),
            ("GET", "/version", true),
            ("GET", "/healthz", true),
            (
                "POST",
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                true,
            ),
            (
                "POST",
                "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
                true,
            ),
            (
                "POST",
                "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                true,
            ),
            ("POST", "/c4m/v1/apply", true),
            ("GET", "/c4m/v1/tls/certificate", true),
            ("GET", "/api/v1/namespaces/shop/pods", false),
            (
                "POST",
                "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                false,
            ),
            ("GET", "/metrics", false),
            ("POST", "/api", false),
        ],
    );
    check(
        &rbac,
        &UserInfo::anonymous(),
        &[
            ("GET", "/healthz", true),
            ("GET", "/livez", true),
            ("GET", "/readyz", true),
            ("GET", "/version", true),
            ("GET", "/api", false),
            ("GET", "/openapi/v2", false),
            ("POST", "/c4m/v1/apply", false),
            ("GET", "/c4m/v1/tls/certificate", false),
            (
                "POST",
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                false,
            ),
        ],
    );
}

#[test]
fn a_refusal_is_kubernetes_403() {
    let rbac = authorizer();
    let attributes =
        Attributes::from_request("GET", "/api/v1/namespaces/shop/secrets", None, user("vera"))
            .unwrap();
    let decision = rbac.authorize(&attributes);
    assert_eq!(decision, Decision::NoOpinion(String::new()));
    let status = forbidden_status(&attributes, decision.reason());
    assert_eq!(status["code"], 403);
    assert_eq!(
        status["message"],
        r#"secrets is forbidden: User "vera" cannot list resource "secrets" in API group "" in the namespace "shop""#
    );
}

#[test]
fn bootstrap_bindings_refer_to_bootstrap_roles() {
    let roles: Vec<String> = bootstrap_cluster_roles()
        .into_iter()
        .map(|role| role.metadata.name)
        .collect();
    for expected in [
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "system:basic-user",
        "system:discovery",
        "system:public-info-viewer",
    ] {
        assert!(roles.iter().any(|r| r == expected), "{expected} missing");
    }
    let bindings: Vec<ClusterRoleBinding> = c4m_auth::bootstrap_cluster_role_bindings();
    for binding in &bindings {
        assert!(roles.contains(&binding.role_ref.name), "{binding:?}");
    }
    // Every default object survives its stored form.
    for object in bootstrap_objects() {
        assert_eq!(RbacObject::from_value(&object.to_value()).unwrap(), object);
    }
}
