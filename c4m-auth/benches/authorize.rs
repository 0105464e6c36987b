//! Authorization decision latency with 10,000 RoleBindings spread over
//! 1,000 namespaces and 1,000 users and groups, plus the default policy
//! (the target: p99 ≤ 10 µs in-process).
//!
//! `cargo bench -p c4m-auth --bench authorize` prints, per case, p50, p99
//! and p99.9 of single decisions timed one by one (sorted samples), then
//! runs criterion for the means.

use std::hint::black_box;
use std::time::{Duration, Instant};

use c4m_auth::{
    Attributes, Authorizer, Metadata, PolicyRule, RbacAuthorizer, RbacObject, Role, RoleBinding,
    RoleRef, Subject, UserInfo, bootstrap_objects,
};
use criterion::Criterion;

const NAMESPACES: usize = 1_000;
const BINDINGS_PER_NAMESPACE: usize = 10;
/// Half users, half groups.
const PRINCIPALS: usize = 1_000;

fn principal(binding: usize) -> usize {
    // A spread, not a stripe: each principal is bound in about ten
    // namespaces, never twice in one.
    (binding * 7_919) % PRINCIPALS
}

fn subject(principal: usize) -> Subject {
    if principal < PRINCIPALS / 2 {
        Subject::user(&format!("user-{principal}"))
    } else {
        Subject::group(&format!("group-{}", principal - PRINCIPALS / 2))
    }
}

/// User `k` is in group `k` (and authenticated).
fn user(k: usize) -> UserInfo {
    UserInfo::new(format!("user-{k}"), &[&format!("group-{k}")]).authenticated()
}

/// Which of four roles binding `index` grants; every principal gets each
/// kind in some namespace.
fn role_kind(index: usize) -> usize {
    (index / 1_000 + index) % 4
}

fn role_of(index: usize) -> RoleRef {
    match role_kind(index) {
        0 => RoleRef::cluster_role("view"),
        1 => RoleRef::cluster_role("edit"),
        2 => RoleRef::cluster_role("admin"),
        _ => RoleRef::role("app-reader"),
    }
}

fn authorizer() -> RbacAuthorizer {
    let mut rbac = RbacAuthorizer::from_objects(bootstrap_objects());
    for n in 0..NAMESPACES {
        let namespace = format!("ns-{n}");
        rbac.upsert(RbacObject::Role(Role {
            metadata: Metadata::named(&namespace, "app-reader"),
            rules: vec![
                PolicyRule::resources(
                    &["get", "list", "watch"],
                    &["", "apps"],
                    &["pods", "deployments"],
                ),
                PolicyRule::resources(&["get"], &[""], &["configmaps"]).named(&["app-config"]),
            ],
        }));
        for j in 0..BINDINGS_PER_NAMESPACE {
            let index = n * BINDINGS_PER_NAMESPACE + j;
            rbac.upsert(RbacObject::RoleBinding(RoleBinding {
                metadata: Metadata::named(&namespace, &format!("binding-{j}")),
                subjects: vec![subject(principal(index))],
                role_ref: role_of(index),
            }));
        }
    }
    assert_eq!(rbac.counts().2, NAMESPACES * BINDINGS_PER_NAMESPACE);
    rbac
}

/// A namespace where user `k` (directly, not through its group) is bound
/// to a role of `kind` ([`role_kind`]).
fn namespace_of(k: usize, kind: usize) -> String {
    (0..NAMESPACES * BINDINGS_PER_NAMESPACE)
        .find(|&index| principal(index) == k && role_kind(index) == kind)
        .map(|index| format!("ns-{}", index / BINDINGS_PER_NAMESPACE))
        .expect("the spread binds every user to every kind of role")
}

/// The decisions measured: (name, attributes, expected to be allowed).
fn cases() -> Vec<(&'static str, Attributes, bool)> {
    let alice = user(42);
    let edit_ns = namespace_of(42, 1);
    let view_ns = namespace_of(42, 0);
    let parse = |method, path: &str| Attributes::from_request(method, path, None, alice.clone());
    vec![
        (
            "allow create pods (edit)",
            parse("POST", &format!("/api/v1/namespaces/{edit_ns}/pods")).unwrap(),
            true,
        ),
        (
            "allow list deployments (view)",
            parse(
                "GET",
                &format!("/apis/apps/v1/namespaces/{view_ns}/deployments"),
            )
            .unwrap(),
            true,
        ),
        (
            "deny get secret (view)",
            parse("GET", &format!("/api/v1/namespaces/{view_ns}/secrets/db")).unwrap(),
            false,
        ),
        (
            "deny in a namespace without bindings",
            parse("GET", "/api/v1/namespaces/elsewhere/pods").unwrap(),
            false,
        ),
        (
            "deny cluster-scoped",
            parse("DELETE", "/api/v1/nodes/n1").unwrap(),
            false,
        ),
    ]
}

/// p50, p99 and p99.9 of `samples` single decisions, timed one by one.
fn percentiles(rbac: &RbacAuthorizer, attributes: &Attributes, samples: usize) -> [Duration; 3] {
    let mut times: Vec<Duration> = (0..samples)
        .map(|_| {
            let start = Instant::now();
            black_box(rbac.authorize(black_box(attributes)));
            start.elapsed()
        })
        .collect();
    times.sort_unstable();
    let at = |q: f64| times[((samples as f64 * q) as usize).min(samples - 1)];
    [at(0.50), at(0.99), at(0.999)]
}

fn bench(c: &mut Criterion) {
    let rbac = authorizer();
    let mut group = c.benchmark_group("authorize 10k RoleBindings");
    for (name, attributes, allowed) in cases() {
        assert_eq!(rbac.authorize(&attributes).is_allowed(), allowed, "{name}");
        group.bench_function(name, |b| b.iter(|| rbac.authorize(black_box(&attributes))));
    }
    group.finish();
    let alice = user(42);
    let path = format!("/api/v1/namespaces/{}/pods", namespace_of(42, 1));
    c.bench_function("from_request + authorize (allow)", |b| {
        b.iter(|| {
            let attributes =
                Attributes::from_request("POST", black_box(&path), None, alice.clone()).unwrap();
            rbac.authorize(&attributes)
        })
    });
}

/// What `criterion_main!` would generate, after the percentiles.
fn main() {
    // `cargo test --benches` runs each benchmark once: no percentiles then.
    if std::env::args().any(|arg| arg == "--bench") {
        let build = Instant::now();
        let rbac = authorizer();
        println!(
            "built the authorizer ({} RoleBindings, {} namespaces) in {:?}",
            NAMESPACES * BINDINGS_PER_NAMESPACE,
            NAMESPACES,
            build.elapsed()
        );
        for (name, attributes, _) in cases() {
            let [p50, p99, p999] = percentiles(&rbac, &attributes, 200_000);
            println!("{name:<40} p50 {p50:>9.2?}  p99 {p99:>9.2?}  p99.9 {p999:>9.2?}");
        }
    }
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion);
    criterion.final_summary();
}
