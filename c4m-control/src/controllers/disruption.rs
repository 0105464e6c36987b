//! The disruption controller: keeps each PodDisruptionBudget's status
//! (`expectedPods`, `desiredHealthy`, `currentHealthy`,
//! `disruptionsAllowed`, `observedGeneration` and the `DisruptionAllowed`
//! condition) current, with the arithmetic of [`crate::disruption`], the
//! same the scheduler's preemption uses.

use serde_json::{Value, json};

use super::latest;
use crate::Result;
use crate::cache::Cache;
use crate::disruption::{Assessment, BudgetInputs, assess, covered};
use crate::objects::{Objects, kind, name_of, namespace_of};
use crate::pods::set_condition;

/// One pass over every budget.
pub(crate) async fn reconcile(objects: &Objects, cache: &Cache) -> Result<Option<i64>> {
    let Some(inputs) = BudgetInputs::read(cache) else {
        return Ok(None);
    };
    let live = inputs.live();
    let replicas = inputs.owner_replicas();
    let mut written = None;
    for budget in covered(&inputs.pdbs, &live) {
        let assessment = assess(&budget.spec, &budget.pods, &replicas);
        let mut desired = (**budget.pdb).clone();
        if !with_status(&mut desired, &assessment) {
            continue;
        }
        let (uid, status) = (&budget.pdb["metadata"]["uid"], &desired["status"]);
        let revision = objects
            .update_with(
                kind("poddisruptionbudgets"),
                namespace_of(budget.pdb),
                name_of(budget.pdb),
                |current| {
                    if current["metadata"]["uid"] != *uid || current["status"] == *status {
                        return false;
                    }
                    current["status"] = status.clone();
                    true
                },
            )
            .await?;
        written = latest(written, revision);
    }
    Ok(written)
}

/// Writes `assessment` into `pdb`'s status; returns whether it changed.
fn with_status(pdb: &mut Value, assessment: &Assessment) -> bool {
    let before = pdb["status"].clone();
    if !pdb["status"].is_object() {
        pdb["status"] = json!({});
    }
    let generation = pdb["metadata"]["generation"].clone();
    let status = &mut pdb["status"];
    status["observedGeneration"] = generation;
    status["expectedPods"] = json!(assessment.expected_pods);
    status["desiredHealthy"] = json!(assessment.desired_healthy);
    status["currentHealthy"] = json!(assessment.current_healthy);
    status["disruptionsAllowed"] = json!(assessment.disruptions_allowed);
    let allowed = assessment.disruptions_allowed > 0;
    let (reason, message) = if allowed {
        (
            "SufficientPods",
            format!("{} disruption(s) allowed", assessment.disruptions_allowed),
        )
    } else {
        (
            "InsufficientPods",
            format!(
                "{} of {} healthy instances wanted are healthy",
                assessment.current_healthy, assessment.desired_healthy
            ),
        )
    };
    set_condition(pdb, "DisruptionAllowed", allowed, reason, &message);
    pdb["status"] != before
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_carries_the_counts_and_changes_only_when_they_do() {
        let mut pdb = json!({"metadata": {"name": "web", "generation": 2}, "spec": {}});
        let assessment = Assessment {
            expected_pods: 3,
            desired_healthy: 2,
            current_healthy: 3,
            disruptions_allowed: 1,
        };
        assert!(with_status(&mut pdb, &assessment));
        let status = &pdb["status"];
        assert_eq!(status["observedGeneration"], 2);
        assert_eq!(
            (
                &status["expectedPods"],
                &status["desiredHealthy"],
                &status["currentHealthy"],
                &status["disruptionsAllowed"]
            ),
            (&json!(3), &json!(2), &json!(3), &json!(1))
        );
        assert_eq!(status["conditions"][0]["reason"], "SufficientPods");
        assert!(!with_status(&mut pdb, &assessment), "nothing new");
        let none = Assessment {
            current_healthy: 2,
            disruptions_allowed: 0,
            ..assessment
        };
        assert!(with_status(&mut pdb, &none));
        assert_eq!(pdb["status"]["conditions"][0]["status"], "False");
    }
}
