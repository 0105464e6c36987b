//! `c4m policy`: read, replace and audit the scheduler policy.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::commands::Connection;
use crate::output::{self, Format};

/// `c4m policy`.
#[derive(Args)]
pub(crate) struct PolicyArgs {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Print the current policy: a SchedulerPolicy object, the policy in
    /// its spec, with the resourceVersion it was set at.
    Get {
        /// json or yaml.
        #[arg(short, long, default_value = "json")]
        output: Format,
    },
    /// Replace the policy: a SchedulerPolicy object (as `get` prints it;
    /// its resourceVersion, if any, must still be current) or just the
    /// policy, in JSON or YAML.
    Set {
        /// File, or - for stdin.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
    /// List every accepted change: revision, time, who, what changed.
    History {
        /// table, json or yaml.
        #[arg(short, long, default_value = "table")]
        output: Format,
    },
}

pub(crate) async fn policy(args: PolicyArgs, connection: &Connection) -> Result<()> {
    let client = connection.client()?;
    match args.command {
        PolicyCommand::Get { output } => {
            print!(
                "{}",
                output::document(&client.scheduler_policy().await?, output)?
            );
        }
        PolicyCommand::Set { file } => {
            let object = policy_object(&read(&file)?)?;
            let stored = client.set_scheduler_policy(&object).await?;
            println!(
                "scheduler policy set (resourceVersion {})",
                stored["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("?")
            );
        }
        PolicyCommand::History { output } => {
            let history = client.scheduler_policy_history().await?;
            let text = match output {
                Format::Table => history_table(&history),
                other => output::document(&history, other)?,
            };
            print!("{text}");
        }
    }
    Ok(())
}

fn read(file: &PathBuf) -> Result<String> {
    if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read stdin")?;
        return Ok(text);
    }
    std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
}

/// The object to PUT: the document as is when it is a SchedulerPolicy
/// object, else the document as its `spec`.
fn policy_object(text: &str) -> Result<Value> {
    // YAML is a superset of JSON: one parser reads both.
    let document: Value =
        serde_yaml::from_str(text).context("the policy is neither valid JSON nor YAML")?;
    let is_object = document
        .as_object()
        .is_some_and(|o| o.contains_key("spec") || o.contains_key("kind"));
    Ok(if is_object {
        document
    } else {
        json!({"spec": document})
    })
}

/// REVISION TIME USER CHANGES, one row per change; CHANGES names each
/// top-level field that changed, `old → new`.
fn history_table(history: &Value) -> String {
    let mut rows = vec![
        ["REVISION", "TIME", "USER", "CHANGES"]
            .map(String::from)
            .to_vec(),
    ];
    for item in history["items"].as_array().into_iter().flatten() {
        let (old, new) = (&item["oldPolicy"], &item["newPolicy"]);
        let changes: Vec<String> = new
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(field, value)| old[field.as_str()] != **value)
            .map(|(field, value)| {
                format!(
                    "{field}: {} → {}",
                    compact(&old[field.as_str()]),
                    compact(value)
                )
            })
            .collect();
        rows.push(vec![
            item["revision"].to_string(),
            compact(&item["time"]),
            compact(&item["user"]),
            changes.join("; "),
        ]);
    }
    output::columns(&rows)
}

/// A string as is, anything else as compact JSON.
fn compact(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_policy_becomes_the_spec() {
        assert_eq!(
            policy_object("defaultStrategy: spread\n").unwrap(),
            json!({"spec": {"defaultStrategy": "spread"}})
        );
        let object =
            r#"{"kind": "SchedulerPolicy", "metadata": {"resourceVersion": "3"}, "spec": {}}"#;
        assert_eq!(
            policy_object(object).unwrap()["metadata"]["resourceVersion"],
            "3"
        );
        assert!(policy_object("{").is_err());
    }

    #[test]
    fn history_rows_name_what_changed() {
        let history = json!({"items": [{
            "revision": 12, "time": "2026-01-02T03:04:05Z", "user": "admin",
            "oldPolicy": {"defaultStrategy": "bestfit", "weights": {}},
            "newPolicy": {"defaultStrategy": "spread", "weights": {}},
        }]});
        let table = history_table(&history);
        let row = table.lines().nth(1).unwrap();
        assert!(row.starts_with("12"), "{table}");
        assert!(
            row.contains("admin") && row.ends_with("defaultStrategy: bestfit → spread"),
            "{table}"
        );
    }
}
