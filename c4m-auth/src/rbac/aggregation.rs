//! Aggregated ClusterRoles: a role with an `aggregationRule` holds the
//! rules of the ClusterRoles its selectors match. As in Kubernetes, a
//! controller computes them ([`aggregated_rules`]) and stores the result;
//! the authorizer reads only stored rules.

use crate::rbac::objects::{ClusterRole, PolicyRule};

/// The rules aggregated ClusterRole `role` should hold: those of every
/// other ClusterRole of `cluster_roles` that one of its selectors matches,
/// taken in order of role name, each rule once. `None` when `role` is not
/// aggregated.
pub fn aggregated_rules<'a>(
    role: &ClusterRole,
    cluster_roles: impl IntoIterator<Item = &'a ClusterRole>,
) -> Option<Vec<PolicyRule>> {
    let selectors = &role.aggregation_rule.as_ref()?.cluster_role_selectors;
    let mut sources: Vec<&ClusterRole> = cluster_roles
        .into_iter()
        .filter(|other| other.metadata.name != role.metadata.name)
        .filter(|other| {
            selectors
                .iter()
                .any(|selector| selector.matches(&other.metadata.labels))
        })
        .collect();
    sources.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    sources.dedup_by(|a, b| a.metadata.name == b.metadata.name);
    let mut rules: Vec<PolicyRule> = Vec::new();
    for rule in sources.iter().flat_map(|source| &source.rules) {
        if !rules.contains(rule) {
            rules.push(rule.clone());
        }
    }
    Some(rules)
}

/// Sets the rules of every aggregated role of `cluster_roles` until none
/// changes, so roles that aggregate aggregated roles (`admin` takes `edit`,
/// which takes `view`) are complete, as the controller's repeated passes
/// make them. Returns the names of the roles whose rules changed.
pub fn aggregate_all(cluster_roles: &mut [ClusterRole]) -> Vec<String> {
    let mut changed = Vec::new();
    // Each pass completes at least one more level of nesting; a cycle of
    // aggregations settles on the union of its members' own rules.
    for _ in 0..=cluster_roles.len() {
        let mut settled = true;
        for at in 0..cluster_roles.len() {
            let Some(rules) = aggregated_rules(&cluster_roles[at], cluster_roles.iter()) else {
                continue;
            };
            if rules != cluster_roles[at].rules {
                cluster_roles[at].rules = rules;
                settled = false;
                let name = &cluster_roles[at].metadata.name;
                if !changed.contains(name) {
                    changed.push(name.clone());
                }
            }
        }
        if settled {
            break;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rbac::objects::{AggregationRule, LabelSelector, Metadata};

    fn role(name: &str, labels: &[(&str, &str)], rules: Vec<PolicyRule>) -> ClusterRole {
        let mut metadata = Metadata::named("", name);
        metadata.labels = labels
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        ClusterRole {
            metadata,
            rules,
            aggregation_rule: None,
        }
    }

    fn aggregating(name: &str, label: &str, labels: &[(&str, &str)]) -> ClusterRole {
        ClusterRole {
            aggregation_rule: Some(AggregationRule {
                cluster_role_selectors: vec![LabelSelector {
                    match_labels: [(label.into(), "true".into())].into(),
                    ..LabelSelector::default()
                }],
            }),
            ..role(
                name,
                labels,
                vec![PolicyRule::resources(&["stale"], &[""], &["x"])],
            )
        }
    }

    #[test]
    fn an_aggregated_role_takes_matching_roles_rules_once_in_name_order() {
        let get_pods = PolicyRule::resources(&["get"], &[""], &["pods"]);
        let list_pods = PolicyRule::resources(&["list"], &[""], &["pods"]);
        let monitor = aggregating("monitor", "to-monitor", &[]);
        let roles = [
            role(
                "z-extra",
                &[("to-monitor", "true")],
                vec![list_pods.clone(), get_pods.clone()],
            ),
            role("a-base", &[("to-monitor", "true")], vec![get_pods.clone()]),
            role(
                "unrelated",
                &[("to-monitor", "false")],
                vec![PolicyRule::resources(&["*"], &["*"], &["*"])],
            ),
            monitor.clone(),
        ];
        assert_eq!(
            aggregated_rules(&monitor, &roles),
            Some(vec![get_pods.clone(), list_pods])
        );
        assert_eq!(aggregated_rules(&roles[0], &roles), None);
        // A role matching its own selector does not feed itself.
        let selfish = aggregating("selfish", "to-self", &[("to-self", "true")]);
        assert_eq!(aggregated_rules(&selfish, [&selfish]), Some(vec![]));
    }

    #[test]
    fn nested_aggregations_settle() {
        let get = PolicyRule::resources(&["get"], &[""], &["pods"]);
        let create = PolicyRule::resources(&["create"], &[""], &["pods"]);
        let mut roles = vec![
            aggregating("admin", "to-admin", &[]),
            aggregating("edit", "to-edit", &[("to-admin", "true")]),
            aggregating("view", "to-view", &[("to-edit", "true")]),
            role("viewing", &[("to-view", "true")], vec![get.clone()]),
            role("editing", &[("to-edit", "true")], vec![create.clone()]),
        ];
        let mut changed = aggregate_all(&mut roles);
        changed.sort();
        assert_eq!(changed, ["admin", "edit", "view"]);
        assert_eq!(roles[2].rules, std::slice::from_ref(&get));
        assert_eq!(roles[1].rules, [create.clone(), get.clone()]);
        assert_eq!(roles[0].rules, [create, get]);
        assert!(aggregate_all(&mut roles).is_empty());
    }

    #[test]
    fn a_cycle_of_aggregations_settles_on_its_sources_rules() {
        let get = PolicyRule::resources(&["get"], &[""], &["pods"]);
        let list = PolicyRule::resources(&["list"], &[""], &["pods"]);
        let mut a = aggregating("a", "to-a", &[("to-b", "true")]);
        let mut b = aggregating("b", "to-b", &[("to-a", "true")]);
        a.rules = vec![get.clone()];
        b.rules = vec![list.clone()];
        let mut roles = vec![a, b, role("c", &[("to-a", "true")], vec![list.clone()])];
        aggregate_all(&mut roles);
        assert_eq!(roles[0].rules, std::slice::from_ref(&list));
        assert_eq!(roles[1].rules, [list]);
    }
}
