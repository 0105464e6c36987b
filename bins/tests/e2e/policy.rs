//! End-to-end tests of the scheduler policy: its HTTP API (validation,
//! optimistic concurrency, audit history, persistence across a control plane
//! restart), the `c4m policy` commands, and its effect on placement.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use crate::common::*;
use c4m_api::{SCHEDULER_POLICY_HISTORY_PATH, SCHEDULER_POLICY_PATH};
use serde_json::{Value, json};

const MINUTE: Duration = Duration::from_secs(60);

fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

fn history_items(cluster: &Cluster) -> Vec<Value> {
    let history = block_on(cluster.client().scheduler_policy_history()).unwrap();
    assert_eq!(history["kind"], "SchedulerPolicyChangeList");
    history["items"].as_array().cloned().unwrap()
}

/// GET gives the default; a valid PUT shows in GET and in the history with
/// who and when; invalid, unparsable, stale and anonymous PUTs are refused
/// and change nothing; all of it survives a control plane restart.
#[test]
fn the_policy_api_validates_audits_and_survives_a_restart() {
    let mut cluster = Cluster::start();
    let client = cluster.client();

    let initial = block_on(client.scheduler_policy()).unwrap();
    assert_eq!(initial["kind"], "SchedulerPolicy");
    assert_eq!(initial["metadata"]["resourceVersion"], "0");
    assert_eq!(
        initial["spec"],
        json!({"defaultStrategy": "bestfit", "weights": {}, "disabledFilters": [],
               "disabledScorers": [], "percentageOfNodesToScore": 100})
    );
    let api = format!("127.0.0.1:{}", cluster.api);
    for path in [SCHEDULER_POLICY_PATH, SCHEDULER_POLICY_HISTORY_PATH] {
        let (code, body) = http_get(&api, path).unwrap();
        assert_eq!(code, 401, "the policy needs credentials: {body}");
    }

    let wanted = json!({"defaultStrategy": "spread", "weights": {"Fit": 2},
                        "disabledScorers": ["TaintToleration"], "percentageOfNodesToScore": 50});
    let set = block_on(client.set_scheduler_policy(&json!({
        "metadata": {"resourceVersion": "0"},
        "spec": wanted,
    })))
    .unwrap();
    let revision: i64 = set["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(revision > 0);
    assert_eq!(set["spec"]["defaultStrategy"], "spread");
    assert_eq!(block_on(client.scheduler_policy()).unwrap(), set);

    let items = history_items(&cluster);
    assert_eq!(items.len(), 1, "{items:?}");
    let change = &items[0];
    assert_eq!(
        change["user"], ACCESS_TOKEN,
        "who: the access token's key id"
    );
    assert_eq!(change["revision"], revision);
    assert_eq!(change["oldPolicy"], initial["spec"]);
    assert_eq!(change["newPolicy"], set["spec"]);
    let when = change["time"].as_str().unwrap();
    assert!(
        c4m_core::seconds_since(when).is_some_and(|s| (0..300).contains(&s)),
        "when: {when}"
    );

    // Invalid policies: 422 naming the field and the reason; nothing written.
    let invalid = [
        (
            json!({"weights": {"Fti": 2}}),
            "spec.weights.Fti: unknown plugin \"Fti\"",
        ),
        (
            json!({"disabledFilters": ["NodeResourcesFit"]}),
            "spec.disabledFilters: NodeResourcesFit cannot be disabled",
        ),
        (
            json!({"weights": {"Fit": 1000}}),
            "spec.weights.Fit: 1000 is out of range 0 to 100",
        ),
        (
            json!({"defaultStrategy": 3}),
            "spec.defaultStrategy: invalid type",
        ),
    ];
    for (spec, message) in invalid {
        let error = block_on(client.set_scheduler_policy(&json!({"spec": spec}))).unwrap_err();
        match &error {
            c4m_api::Error::Api {
                code: 422,
                reason,
                message: actual,
            } => {
                assert_eq!(reason, "Invalid");
                assert!(actual.starts_with(message), "{actual}");
            }
            other => panic!("expected 422 for {spec}, got {other}"),
        }
    }
    // Unparsable JSON: 400.
    let unparsable = block_on(async {
        reqwest::Client::new()
            .put(format!("{}{SCHEDULER_POLICY_PATH}", cluster.endpoint()))
            .bearer_auth(format!("{ACCESS_TOKEN}.{SECRET_KEY}"))
            .body("{\"spec\": ")
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(unparsable.as_u16(), 400);
    // Stale: written against revision 0, which the change above replaced.
    let stale = block_on(client.set_scheduler_policy(&json!({
        "metadata": {"resourceVersion": "0"},
        "spec": {"defaultStrategy": "bestfit"},
    })))
    .unwrap_err();
    assert_eq!(stale.code(), Some(409), "{stale}");
    assert_eq!(block_on(client.scheduler_policy()).unwrap(), set);
    assert_eq!(history_items(&cluster).len(), 1);
    let log = cluster.log_text("control");
    let rejected: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("scheduler policy change rejected"))
        .collect();
    assert_eq!(rejected.len(), 6, "{log}");
    assert!(
        rejected
            .iter()
            .all(|line| line.contains("WARN") && line.contains(ACCESS_TOKEN)),
        "{rejected:?}"
    );
    assert!(rejected[2].contains("1000 is out of range"), "{rejected:?}");

    cluster.kill_control();
    cluster.start_control();
    let client = cluster.client();
    assert_eq!(block_on(client.scheduler_policy()).unwrap(), set);
    assert_eq!(history_items(&cluster), items);
}

/// `c4m policy get|set|history`: a bare policy in YAML from stdin, the
/// object `get` prints from a file (optimistic: the second use of the same
/// file is stale), refusals naming the field, a table of changes.
#[test]
fn the_policy_commands_get_set_and_list_history() {
    let cluster = Cluster::start();
    let printed: Value = serde_json::from_str(&cluster.ok(&["policy", "get"])).unwrap();
    assert_eq!(printed["spec"]["defaultStrategy"], "bestfit");
    assert_eq!(printed["metadata"]["resourceVersion"], "0");

    let output = cluster.c4m_with_stdin(
        &["policy", "set", "-f", "-"],
        "defaultStrategy: spread\nweights: {Fit: 2}\n",
    );
    assert!(output.status.success(), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stdout)
            .starts_with("scheduler policy set (resourceVersion "),
        "{output:?}"
    );
    let yaml = cluster.ok(&["policy", "get", "-o", "yaml"]);
    assert!(yaml.contains("defaultStrategy: spread"), "{yaml}");

    let refused = cluster.c4m_with_stdin(
        &["policy", "set", "-f", "-"],
        r#"{"weights": {"Fit": 1000}}"#,
    );
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("spec.weights.Fit: 1000 is out of range 0 to 100"),
        "{stderr}"
    );

    // Edit what `get` prints and send it back from a file.
    let mut object: Value = serde_json::from_str(&cluster.ok(&["policy", "get"])).unwrap();
    object["spec"]["percentageOfNodesToScore"] = json!(30);
    let file = cluster.dir.path().join("policy.json");
    std::fs::write(&file, object.to_string()).unwrap();
    let file = file.display().to_string();
    cluster.ok(&["policy", "set", "-f", &file]);
    let stale = cluster.c4m(&["policy", "set", "-f", &file]);
    assert!(!stale.status.success());
    let stderr = String::from_utf8_lossy(&stale.stderr);
    assert!(stderr.contains("has been modified"), "{stderr}");

    let table = cluster.ok(&["policy", "history"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[0].starts_with("REVISION") && lines[0].ends_with("CHANGES"),
        "{table}"
    );
    assert!(lines[1].contains(ACCESS_TOKEN), "{table}");
    assert!(
        lines[1].contains("defaultStrategy: bestfit → spread"),
        "{table}"
    );
    assert!(lines[1].contains(r#"weights: {} → {"Fit":2}"#), "{table}");
    assert!(
        lines[2].ends_with("percentageOfNodesToScore: 100 → 30"),
        "{table}"
    );
    let json: Value =
        serde_json::from_str(&cluster.ok(&["policy", "history", "-o", "json"])).unwrap();
    assert_eq!(json["items"].as_array().unwrap().len(), 2);
}

fn replicas(name: &str) -> String {
    format!(
        r#"
apiVersion: c4m.io/v1
kind: Microservice
metadata: {{name: {name}}}
spec:
  replicas: 2
  command: ["sleep", "300"]
  resources: {{requests: {{cpu: 500m, memory: 64Mi}}}}
"#
    )
}

fn nodes_of(cluster: &Cluster, name: &str) -> BTreeSet<String> {
    let pods = cluster.wait_ready(&format!("c4m.io/microservice={name}"), 2, MINUTE);
    pods.iter()
        .map(|pod| pod["spec"]["nodeName"].as_str().unwrap().to_owned())
        .collect()
}

/// The default strategy packs two replicas onto one of two equal nodes;
/// after `defaultStrategy: spread` two new replicas land one per node.
///
/// Needs the scheduler loop to read the policy (`current_policy`) for
/// instances without a `c4m.io/placement-strategy` annotation.
#[test]
fn a_policy_change_changes_placement() {
    let mut cluster = Cluster::start();
    cluster.start_hollow_agents("node", 2, "4", "4Gi");
    cluster.apply(&replicas("packed"));
    assert_eq!(nodes_of(&cluster, "packed").len(), 1, "best fit packs");
    cluster.ok(&["delete", "microservice", "packed"]);
    cluster.wait_gone("c4m.io/microservice=packed", MINUTE);

    let set = cluster.c4m_with_stdin(&["policy", "set", "-f", "-"], "defaultStrategy: spread\n");
    assert!(set.status.success(), "{set:?}");
    cluster.apply(&replicas("spread"));
    assert_eq!(nodes_of(&cluster, "spread").len(), 2, "spread spreads");
}
