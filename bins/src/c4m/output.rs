//! Human-readable output: tables and `describe` text.

use c4m_api::table::{
    columns as columns_of, condition, instance_endpoint, instance_status, node_of, ready_count,
    restart_count, row, text,
};
use c4m_core::ResourceKind;
use serde_json::Value;

/// `-o` formats.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    Table,
    Json,
    Yaml,
}

/// One document as `-o json` (also for `table`, which a single object has
/// no rows for) or `-o yaml` prints it.
pub(crate) fn document(value: &Value, format: Format) -> anyhow::Result<String> {
    Ok(match format {
        Format::Yaml => serde_yaml::to_string(value)?,
        Format::Json | Format::Table => serde_json::to_string_pretty(value)? + "\n",
    })
}

/// Left-aligned columns separated by three spaces.
pub(crate) fn columns(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                if i + 1 == row.len() {
                    cell.clone()
                } else {
                    format!("{cell:<width$}", width = widths[i])
                }
            })
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// The table `c4m get` prints: every column of the kind (the wide view),
/// with NAMESPACE first when listing across namespaces.
pub(crate) fn table(kind: &ResourceKind, items: &[Value], with_namespace: bool) -> String {
    let with_namespace = with_namespace && kind.namespaced;
    let mut rows = Vec::with_capacity(items.len() + 1);
    let mut head: Vec<String> = columns_of(kind)
        .iter()
        .map(|c| c.name.to_string())
        .collect();
    if with_namespace {
        head.insert(0, "NAMESPACE".into());
    }
    rows.push(head);
    for item in items {
        let mut r = row(kind, item);
        if with_namespace {
            r.insert(0, text(&item["metadata"]["namespace"]));
        }
        rows.push(r);
    }
    columns(&rows)
}

/// `c4m status` rows.
pub(crate) fn status_table(pods: &[Value]) -> String {
    let mut rows = vec![
        vec![
            "NAME", "STATUS", "READY", "RESTARTS", "NODE", "ENDPOINT", "MESSAGE",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>(),
    ];
    for p in pods {
        let scheduled = condition(p, "PodScheduled");
        let message = match scheduled {
            Some(c) if c["status"] == "False" => text(&c["message"]),
            _ => {
                let state = &p["status"]["containerStatuses"][0]["state"];
                [
                    &state["waiting"]["message"],
                    &state["terminated"]["message"],
                    &p["status"]["message"],
                ]
                .into_iter()
                .map(text)
                .find(|m| !m.is_empty())
                .unwrap_or_default()
            }
        };
        rows.push(vec![
            text(&p["metadata"]["name"]),
            instance_status(p),
            ready_count(p),
            restart_count(p),
            node_of(p),
            instance_endpoint(p),
            message,
        ]);
    }
    columns(&rows)
}

/// `1234Ki` → `1.2Mi` for humans.
pub(crate) fn memory_from_ki(text: &str) -> String {
    let Some(kib) = text.strip_suffix("Ki").and_then(|k| k.parse::<u64>().ok()) else {
        return text.to_string();
    };
    match kib {
        k if k >= 1 << 20 => format!("{:.1}Gi", k as f64 / (1u64 << 20) as f64),
        k if k >= 1 << 10 => format!("{:.1}Mi", k as f64 / 1024.0),
        k => format!("{k}Ki"),
    }
}

/// `c4m describe` text.
pub(crate) fn describe(kind: &ResourceKind, object: &Value) -> String {
    let meta = &object["metadata"];
    let mut out = String::new();
    let mut line =
        |key: &str, value: String| out.push_str(&format!("{:<18}{}\n", format!("{key}:"), value));
    line("Name", text(&meta["name"]));
    if kind.namespaced {
        line("Namespace", text(&meta["namespace"]));
    }
    line("Kind", format!("{} ({})", kind.kind, kind.api_version()));
    let labels: Vec<String> = meta["labels"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", text(v))).collect())
        .unwrap_or_default();
    line(
        "Labels",
        if labels.is_empty() {
            "<none>".into()
        } else {
            labels.join(", ")
        },
    );
    line("Created", text(&meta["creationTimestamp"]));
    line("UID", text(&meta["uid"]));
    match kind.kind {
        "Pod" => {
            line("Node", node_of(object));
            line("Status", instance_status(object));
            line("Endpoint", instance_endpoint(object));
            line("Ready", ready_count(object));
            line("Restarts", restart_count(object));
            let container = &object["spec"]["containers"][0];
            let command: Vec<String> = container["command"]
                .as_array()
                .into_iter()
                .chain(container["args"].as_array())
                .flatten()
                .map(text)
                .collect();
            line("Command", command.join(" "));
            line(
                "Driver",
                object["spec"]["runtimeClassName"]
                    .as_str()
                    .filter(|driver| !driver.is_empty())
                    .unwrap_or("the node's default")
                    .into(),
            );
            let requests = &container["resources"]["requests"];
            let limits = &container["resources"]["limits"];
            line(
                "Requests",
                format!(
                    "cpu={} memory={}",
                    text(&requests["cpu"]),
                    text(&requests["memory"])
                ),
            );
            line(
                "Limits",
                format!(
                    "cpu={} memory={}",
                    text(&limits["cpu"]),
                    text(&limits["memory"])
                ),
            );
            let state = &object["status"]["containerStatuses"][0];
            if let Some(last) = state["lastState"]["terminated"].as_object() {
                line(
                    "Last exit",
                    format!(
                        "{} (code {})",
                        text(&last["reason"].clone()),
                        text(&last["exitCode"].clone())
                    ),
                );
            }
        }
        "Microservice" | "Deployment" => {
            let status = &object["status"];
            line(
                "Replicas",
                format!(
                    "{} desired | {} updated | {} total | {} ready",
                    object["spec"]["replicas"].as_i64().unwrap_or(1),
                    status["updatedReplicas"].as_i64().unwrap_or(0),
                    status["replicas"].as_i64().unwrap_or(0),
                    status["readyReplicas"].as_i64().unwrap_or(0)
                ),
            );
        }
        "Node" => {
            let status = &object["status"];
            line(
                "Allocatable",
                format!(
                    "cpu={} memory={} instances={}",
                    text(&status["allocatable"]["cpu"]),
                    text(&status["allocatable"]["memory"]),
                    text(&status["allocatable"]["pods"])
                ),
            );
            line(
                "Drivers",
                text(&meta["annotations"][c4m_core::annotations::DRIVERS]),
            );
            line(
                "Agent",
                text(&meta["annotations"][c4m_core::annotations::AGENT_URL]),
            );
        }
        _ => {}
    }
    if let Some(conditions) = object["status"]["conditions"].as_array() {
        out.push_str("Conditions:\n");
        let mut rows = vec![vec![
            "  TYPE".to_string(),
            "STATUS".into(),
            "REASON".into(),
            "MESSAGE".into(),
        ]];
        for c in conditions {
            rows.push(vec![
                format!("  {}", text(&c["type"])),
                text(&c["status"]),
                text(&c["reason"]),
                text(&c["message"]),
            ]);
        }
        out.push_str(&columns(&rows));
    }
    out
}
