//! The columns each kind is listed with: one definition that `c4m get`
//! prints and the API serves as a `meta.k8s.io/v1` Table for `kubectl get`.
//!
//! A column's priority follows Kubernetes: 0 is shown by default, 1 only in
//! wide output (`kubectl get -o wide`). `c4m get` shows every column.

use c4m_core::ResourceKind;
use serde_json::Value;

mod storage;

/// One column of a kind's table.
#[derive(Debug)]
pub struct Column {
    /// Header (`READY`).
    pub name: &'static str,
    /// What the column shows, for Table column definitions.
    pub description: &'static str,
    /// 0: shown by default; 1: wide output only.
    pub priority: u8,
    /// The cell of one object.
    pub cell: fn(&Value) -> String,
}

impl Column {
    const fn new(
        name: &'static str,
        description: &'static str,
        cell: fn(&Value) -> String,
    ) -> Self {
        Column {
            name,
            description,
            priority: 0,
            cell,
        }
    }

    const fn wide(self) -> Self {
        Column {
            priority: 1,
            ..self
        }
    }
}

/// A JSON value as a table cell: strings bare, null empty.
pub fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// An object's age as kubectl prints it (`42s`, `5m`, `3h`, `2d`).
pub fn age(object: &Value) -> String {
    since(&object["metadata"]["creationTimestamp"])
}

/// The time since an RFC 3339 `timestamp`, as [`age`] prints it; `-`
/// when there is none.
fn since(timestamp: &Value) -> String {
    let Some(seconds) = timestamp.as_str().and_then(c4m_core::seconds_since) else {
        return "-".into();
    };
    match seconds.max(0) {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// The status condition of `type` (`Ready`), if the object has it.
pub fn condition<'a>(object: &'a Value, condition_type: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == condition_type)
}

/// What `STATUS` shows for an instance, as kubectl prints a pod:
/// `Terminating` while it is being deleted; while it initializes
/// `Init:N/M`, `Init:Error`, `Init:CrashLoopBackOff`; then the last app
/// container's waiting or terminated reason (`CrashLoopBackOff`,
/// `Completed`), `NotReady` when a container still runs after others
/// completed; else the phase.
pub fn instance_status(pod: &Value) -> String {
    if pod["metadata"]["deletionTimestamp"].is_string() {
        return "Terminating".into();
    }
    let mut reason = pod["status"]["reason"]
        .as_str()
        .filter(|r| !r.is_empty())
        .map_or_else(|| text(&pod["status"]["phase"]), str::to_string);
    let init_specs = pod["spec"]["initContainers"].as_array();
    let init_count = init_specs.map_or(0, Vec::len);
    let sidecar = |name: &Value| {
        init_specs
            .into_iter()
            .flatten()
            .any(|c| c["name"] == *name && c["restartPolicy"] == "Always")
    };
    let statuses = |field: &str| pod["status"][field].as_array().cloned().unwrap_or_default();
    let mut initializing = false;
    for (i, container) in statuses("initContainerStatuses").iter().enumerate() {
        let state = &container["state"];
        let terminated = &state["terminated"];
        let waiting_reason = state["waiting"]["reason"].as_str().unwrap_or_default();
        if terminated["exitCode"] == 0 && terminated.is_object() {
            continue;
        }
        if sidecar(&container["name"]) && container["started"] == true {
            continue;
        }
        reason = if terminated.is_object() {
            match terminated["reason"].as_str().filter(|r| !r.is_empty()) {
                Some(why) => format!("Init:{why}"),
                None => format!("Init:ExitCode:{}", text(&terminated["exitCode"])),
            }
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            format!("Init:{waiting_reason}")
        } else {
            format!("Init:{i}/{init_count}")
        };
        initializing = true;
        break;
    }
    let initialized = condition(pod, "Initialized").is_some_and(|c| c["status"] == "True");
    if initializing && !initialized {
        return reason;
    }
    let mut has_running = false;
    for container in statuses("containerStatuses").iter().rev() {
        let state = &container["state"];
        if let Some(why) = state["waiting"]["reason"]
            .as_str()
            .filter(|r| !r.is_empty())
        {
            reason = why.to_string();
        } else if let Some(why) = state["terminated"]["reason"]
            .as_str()
            .filter(|r| !r.is_empty())
        {
            reason = why.to_string();
        } else if state["terminated"].is_object() {
            reason = format!("ExitCode:{}", text(&state["terminated"]["exitCode"]));
        } else if container["ready"] == true && state["running"].is_object() {
            has_running = true;
        }
    }
    if reason == "Completed" && has_running {
        let ready = condition(pod, "Ready").is_some_and(|c| c["status"] == "True");
        reason = if ready { "Running" } else { "NotReady" }.into();
    }
    reason
}

/// Where an instance is reached: its IP and the ports bound there
/// (`10.88.0.2:8080,9090`), then each port published elsewhere, such as a
/// VPC instance's `hostPort` on its node (`,192.0.2.7:30080->8080`).
pub fn instance_endpoint(pod: &Value) -> String {
    let ip = text(&pod["status"]["podIP"]);
    if ip.is_empty() {
        return "-".into();
    }
    let bindings: Vec<Value> = pod["metadata"]["annotations"][c4m_core::annotations::PORTS]
        .as_str()
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default();
    let (here, elsewhere): (Vec<&Value>, Vec<&Value>) = bindings.iter().partition(|p| {
        let host = text(&p["hostIP"]);
        host.is_empty() || host == ip
    });
    let mut endpoint = ip;
    let ports: Vec<String> = here.iter().map(|p| text(&p["hostPort"])).collect();
    if !ports.is_empty() {
        endpoint = format!("{endpoint}:{}", ports.join(","));
    }
    for p in elsewhere {
        endpoint = format!(
            "{endpoint},{}:{}->{}",
            text(&p["hostIP"]),
            text(&p["hostPort"]),
            text(&p["containerPort"])
        );
    }
    endpoint
}

/// An instance's restarts: its containers', summed.
pub fn restart_count(pod: &Value) -> String {
    let sum = |field: &str| -> i64 {
        pod["status"][field]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["restartCount"].as_i64())
            .sum()
    };
    (sum("containerStatuses") + sum("initContainerStatuses")).to_string()
}

/// The node an instance is bound to, or `<none>`.
pub fn node_of(pod: &Value) -> String {
    pod["spec"]["nodeName"]
        .as_str()
        .unwrap_or("<none>")
        .to_string()
}

/// Ready containers of all (`1/2`): app containers and sidecars, as
/// kubectl counts them.
pub fn ready_count(pod: &Value) -> String {
    let sidecars = pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["restartPolicy"] == "Always")
        .filter_map(|c| c["name"].as_str());
    let total = pod["spec"]["containers"].as_array().map_or(1, Vec::len) + sidecars.clone().count();
    let ready = |field: &str, only: &dyn Fn(&Value) -> bool| {
        pod["status"][field]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["ready"] == true && only(c))
            .count()
    };
    let sidecar_names: Vec<&str> = sidecars.collect();
    let ready = ready("containerStatuses", &|_| true)
        + ready("initContainerStatuses", &|c| {
            c["name"]
                .as_str()
                .is_some_and(|n| sidecar_names.contains(&n))
        });
    format!("{ready}/{total}")
}

fn name(object: &Value) -> String {
    text(&object["metadata"]["name"])
}

fn status_count(object: &Value, field: &str) -> String {
    object["status"][field].as_i64().unwrap_or(0).to_string()
}

fn desired_replicas(workload: &Value) -> i64 {
    workload["spec"]["replicas"].as_i64().unwrap_or(1)
}

fn ready_replicas(workload: &Value) -> String {
    format!(
        "{}/{}",
        workload["status"]["readyReplicas"].as_i64().unwrap_or(0),
        desired_replicas(workload)
    )
}

fn node_status(node: &Value) -> String {
    let ready = condition(node, "Ready").is_some_and(|c| c["status"] == "True");
    let status = if ready { "Ready" } else { "NotReady" };
    if node["spec"]["unschedulable"] == true {
        format!("{status},SchedulingDisabled")
    } else {
        status.into()
    }
}

fn node_roles(node: &Value) -> String {
    let roles: Vec<&str> = node["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(key, _)| key.strip_prefix("node-role.kubernetes.io/"))
        .collect();
    let roles: Vec<String> = roles.into_iter().map(str::to_string).collect();
    joined_or_none(&roles)
}

/// Items joined by commas, or `<none>`.
fn joined_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "<none>".into()
    } else {
        items.join(",")
    }
}

/// `PORT/PROTOCOL`, or `PORT:NODEPORT/PROTOCOL` with a node port, as
/// kubectl prints a Service's ports.
fn service_ports(service: &Value) -> String {
    let ports: Vec<String> = service["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let protocol = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_u64().filter(|n| *n > 0) {
                Some(node_port) => format!("{}:{node_port}/{protocol}", text(&p["port"])),
                None => format!("{}/{protocol}", text(&p["port"])),
            }
        })
        .collect();
    joined_or_none(&ports)
}

/// The first cluster IP, else `<none>`.
fn service_cluster_ip(service: &Value) -> String {
    let spec = &service["spec"];
    spec["clusterIPs"][0]
        .as_str()
        .or(spec["clusterIP"].as_str())
        .filter(|ip| !ip.is_empty())
        .unwrap_or("<none>")
        .to_string()
}

/// kubectl's EXTERNAL-IP: the external IPs; for a LoadBalancer its
/// ingress addresses first, `<pending>` while it has none; an
/// ExternalName's name.
fn service_external_ip(service: &Value) -> String {
    let strings = |value: &Value| -> Vec<String> {
        value
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    };
    let external = strings(&service["spec"]["externalIPs"]);
    match service["spec"]["type"].as_str().unwrap_or("ClusterIP") {
        "ClusterIP" | "NodePort" if external.is_empty() => "<none>".into(),
        "ClusterIP" | "NodePort" => external.join(","),
        "LoadBalancer" => {
            let mut addresses: Vec<String> = service["status"]["loadBalancer"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["ip"].as_str().or(i["hostname"].as_str()))
                .filter(|a| !a.is_empty())
                .map(str::to_string)
                .collect();
            addresses.extend(external);
            if addresses.is_empty() {
                "<pending>".into()
            } else {
                addresses.join(",")
            }
        }
        "ExternalName" => text(&service["spec"]["externalName"]),
        _ => "<unknown>".into(),
    }
}

fn service_selector(service: &Value) -> String {
    let selector: Vec<String> = service["spec"]["selector"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", text(v))).collect())
        .unwrap_or_default();
    joined_or_none(&selector)
}

fn endpoint_addresses(endpoints: &Value) -> String {
    let mut addresses = Vec::new();
    for subset in endpoints["subsets"].as_array().into_iter().flatten() {
        for address in subset["addresses"].as_array().into_iter().flatten() {
            for port in subset["ports"].as_array().into_iter().flatten() {
                addresses.push(format!("{}:{}", text(&address["ip"]), text(&port["port"])));
            }
        }
    }
    joined_or_none(&addresses)
}

/// The first three of `count` items, and how many more, as kubectl
/// lists a slice's ports and addresses; `<unset>` for none.
fn first_three(list: impl Iterator<Item = String>) -> String {
    let list: Vec<String> = list.collect();
    match list.len() {
        0 => "<unset>".into(),
        n if n > 3 => format!("{} + {} more...", list[..3].join(","), n - 3),
        _ => list.join(","),
    }
}

fn slice_ports(slice: &Value) -> String {
    first_three(slice["ports"].as_array().into_iter().flatten().map(|p| {
        match (&p["port"], p["name"].as_str()) {
            (Value::Number(n), _) => n.to_string(),
            (_, Some(name)) => name.to_string(),
            _ => "*".to_string(),
        }
    }))
}

fn slice_addresses(slice: &Value) -> String {
    first_three(
        slice["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
            .map(|a| text(&a)),
    )
}

fn or_not_applicable(value: &Value) -> String {
    match text(value) {
        t if t.is_empty() => "N/A".to_string(),
        t => t,
    }
}

const NAME: Column = Column::new("NAME", "Name of the object", name);
const AGE: Column = Column::new("AGE", "Time since the object was created", age);

static POD: &[Column] = &[
    NAME,
    Column::new("READY", "Ready containers of all containers", ready_count),
    Column::new("STATUS", "Waiting reason, else phase", instance_status),
    Column::new("RESTARTS", "Container restarts", restart_count),
    Column::new("NODE", "Node the instance is bound to", node_of).wide(),
    Column::new("ENDPOINT", "IP and published ports", instance_endpoint).wide(),
    AGE,
];

static DEPLOYMENT: &[Column] = &[
    NAME,
    Column::new("READY", "Ready replicas of desired", ready_replicas),
    Column::new("UP-TO-DATE", "Replicas of the current template", |d| {
        status_count(d, "updatedReplicas")
    }),
    Column::new("AVAILABLE", "Available replicas", |d| {
        status_count(d, "availableReplicas")
    }),
    AGE,
];

static REPLICA_SET: &[Column] = &[
    NAME,
    Column::new("DESIRED", "Desired replicas", |r| {
        desired_replicas(r).to_string()
    }),
    Column::new("CURRENT", "Replicas running this template", |r| {
        status_count(r, "replicas")
    }),
    Column::new("READY", "Ready replicas", |r| {
        status_count(r, "readyReplicas")
    }),
    AGE,
];

static MICROSERVICE: &[Column] = &[
    NAME,
    Column::new("REPLICAS", "Desired replicas", |m| {
        desired_replicas(m).to_string()
    }),
    Column::new("READY", "Ready replicas of desired", ready_replicas),
    Column::new("UP-TO-DATE", "Replicas of the current template", |m| {
        status_count(m, "updatedReplicas")
    })
    .wide(),
    Column::new("AVAILABLE", "Available replicas", |m| {
        status_count(m, "availableReplicas")
    })
    .wide(),
    AGE,
];

static NODE: &[Column] = &[
    NAME,
    Column::new("STATUS", "Ready or NotReady", node_status),
    Column::new("ROLES", "node-role.kubernetes.io labels", node_roles),
    Column::new("CPU", "Allocatable CPU", |n| {
        text(&n["status"]["allocatable"]["cpu"])
    })
    .wide(),
    Column::new("MEMORY", "Allocatable memory", |n| {
        text(&n["status"]["allocatable"]["memory"])
    })
    .wide(),
    Column::new("INSTANCES", "Allocatable instance slots", |n| {
        text(&n["status"]["allocatable"]["pods"])
    })
    .wide(),
    Column::new(
        "DRIVERS",
        "Container drivers of the agent, its default first",
        |n| {
            let annotations = &n["metadata"]["annotations"];
            let default = annotations[c4m_core::annotations::DEFAULT_DRIVER]
                .as_str()
                .unwrap_or_default();
            let mut drivers: Vec<&str> = annotations[c4m_core::annotations::DRIVERS]
                .as_str()
                .unwrap_or_default()
                .split(',')
                .filter(|d| !d.is_empty())
                .collect();
            // `name=version`; the default first, marked with `*`.
            drivers.sort_by_key(|d| d.split('=').next() != Some(default));
            drivers
                .iter()
                .map(|d| match d.split_once('=') {
                    Some((name, version)) if name == default => format!("{name}*={version}"),
                    _ => d.to_string(),
                })
                .collect::<Vec<_>>()
                .join(",")
        },
    )
    .wide(),
    AGE,
    Column::new("VERSION", "Agent version", |n| {
        text(&n["status"]["nodeInfo"]["kubeletVersion"])
    }),
];

static SERVICE: &[Column] = &[
    NAME,
    Column::new("TYPE", "Service type", |s| {
        s["spec"]["type"]
            .as_str()
            .unwrap_or("ClusterIP")
            .to_string()
    }),
    Column::new("CLUSTER-IP", "The Service's cluster IP", service_cluster_ip),
    Column::new(
        "EXTERNAL-IP",
        "Where the Service is reached from outside the cluster",
        service_external_ip,
    ),
    Column::new("PORT(S)", "Ports and protocols", service_ports),
    AGE,
    Column::new(
        "SELECTOR",
        "Labels of the instances served",
        service_selector,
    )
    .wide(),
];

static ENDPOINTS: &[Column] = &[
    NAME,
    Column::new("ENDPOINTS", "Ready addresses", endpoint_addresses),
    AGE,
];

static ENDPOINT_SLICE: &[Column] = &[
    NAME,
    Column::new("ADDRESSTYPE", "Type of the addresses", |s| {
        text(&s["addressType"])
    }),
    Column::new("PORTS", "Ports of the endpoints", slice_ports),
    Column::new("ENDPOINTS", "Addresses of the endpoints", slice_addresses),
    AGE,
];

static PRIORITY_CLASS: &[Column] = &[
    NAME,
    Column::new("VALUE", "Priority", |c| text(&c["value"])),
    Column::new("GLOBAL-DEFAULT", "Whether it is the default class", |c| {
        (c["globalDefault"] == true).to_string()
    }),
    AGE,
];

static NAMESPACE: &[Column] = &[
    NAME,
    Column::new(
        "STATUS",
        "The phase of the namespace: Active, or Terminating while its content is deleted",
        |n| text(&n["status"]["phase"]),
    ),
    AGE,
];

static VPC: &[Column] = &[
    NAME,
    Column::new("CIDR", "spec.cidr", |v| text(&v["spec"]["cidr"])),
    AGE,
];

static POD_DISRUPTION_BUDGET: &[Column] = &[
    NAME,
    Column::new("MIN-AVAILABLE", "spec.minAvailable", |b| {
        or_not_applicable(&b["spec"]["minAvailable"])
    }),
    Column::new("MAX-UNAVAILABLE", "spec.maxUnavailable", |b| {
        or_not_applicable(&b["spec"]["maxUnavailable"])
    }),
    Column::new(
        "ALLOWED-DISRUPTIONS",
        "Instances that may be disrupted now",
        |b| {
            b["status"]["disruptionsAllowed"]
                .as_u64()
                .unwrap_or(0)
                .to_string()
        },
    ),
    AGE,
];

/// When an Event last happened: `lastTimestamp`, else (events.k8s.io
/// writers) the series' last observation or `eventTime`.
fn event_last_seen(event: &Value) -> String {
    [
        &event["lastTimestamp"],
        &event["series"]["lastObservedTime"],
        &event["eventTime"],
    ]
    .into_iter()
    .find(|t| t.is_string())
    .map_or_else(|| age(event), since)
}

/// `kind/name` of the object an Event is about, as kubectl prints it.
fn event_object(event: &Value) -> String {
    let involved = &event["involvedObject"];
    format!(
        "{}/{}",
        text(&involved["kind"]).to_lowercase(),
        text(&involved["name"])
    )
}

// Kubernetes' own Event columns (pkg/printers/internalversion).
static EVENT: &[Column] = &[
    Column::new("LAST SEEN", "When it last happened", event_last_seen),
    Column::new("TYPE", "Normal or Warning", |e| text(&e["type"])),
    Column::new("REASON", "Why, in one CamelCase word", |e| {
        text(&e["reason"])
    }),
    Column::new("OBJECT", "The object it is about", event_object),
    Column::new("SUBOBJECT", "The part of the object", |e| {
        text(&e["involvedObject"]["fieldPath"])
    })
    .wide(),
    Column::new("SOURCE", "The component that reported it", |e| {
        let source = &e["source"];
        match (text(&source["component"]), text(&source["host"])) {
            (component, host) if host.is_empty() => component,
            (component, host) => format!("{component}, {host}"),
        }
    })
    .wide(),
    Column::new("MESSAGE", "What happened", |e| text(&e["message"])),
    Column::new("FIRST SEEN", "When it first happened", |e| {
        since(&e["firstTimestamp"])
    })
    .wide(),
    Column::new("COUNT", "How many times it happened", |e| {
        e["count"].as_i64().unwrap_or(1).to_string()
    })
    .wide(),
    Column::new("NAME", "Name of the Event", name).wide(),
];

static JOB: &[Column] = &[
    NAME,
    Column::new("STATUS", "The Job's state", job_status),
    Column::new(
        "COMPLETIONS",
        "Succeeded pods of the completions wanted",
        job_completions,
    ),
    Column::new(
        "DURATION",
        "Time from the Job's start to its completion (or now)",
        job_duration,
    ),
    AGE,
    Column::new("CONTAINERS", "Names of the containers", |j| {
        template_containers(&j["spec"]["template"], "name")
    })
    .wide(),
    Column::new("IMAGES", "Images of the containers", |j| {
        template_containers(&j["spec"]["template"], "image")
    })
    .wide(),
    Column::new("SELECTOR", "The Job's pod selector", |j| {
        match_labels(&j["spec"]["selector"])
    })
    .wide(),
];

static DAEMON_SET: &[Column] = &[
    NAME,
    Column::new("DESIRED", "Nodes that should run the daemon", |d| {
        status_count(d, "desiredNumberScheduled")
    }),
    Column::new("CURRENT", "Nodes running the daemon", |d| {
        status_count(d, "currentNumberScheduled")
    }),
    Column::new("READY", "Nodes with the daemon ready", |d| {
        status_count(d, "numberReady")
    }),
    Column::new("UP-TO-DATE", "Nodes running the current template", |d| {
        status_count(d, "updatedNumberScheduled")
    }),
    Column::new("AVAILABLE", "Nodes with the daemon available", |d| {
        status_count(d, "numberAvailable")
    }),
    Column::new("NODE SELECTOR", "The template's node selector", |d| {
        let selector: Vec<String> = d["spec"]["template"]["spec"]["nodeSelector"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", text(v)))
            .collect();
        if selector.is_empty() {
            "<none>".into()
        } else {
            selector.join(",")
        }
    }),
    AGE,
];

static CRON_JOB: &[Column] = &[
    NAME,
    Column::new("SCHEDULE", "The cron schedule", |c| {
        text(&c["spec"]["schedule"])
    }),
    Column::new("TIMEZONE", "The schedule's time zone", |c| {
        or_none(&c["spec"]["timeZone"])
    }),
    Column::new("SUSPEND", "Whether new Jobs are suspended", |c| {
        if c["spec"]["suspend"] == true {
            "True".into()
        } else {
            "False".into()
        }
    }),
    Column::new("ACTIVE", "Jobs running", |c| {
        c["status"]["active"]
            .as_array()
            .map_or(0, Vec::len)
            .to_string()
    }),
    Column::new("LAST SCHEDULE", "Time since the last scheduled Job", |c| {
        c["status"]["lastScheduleTime"]
            .as_str()
            .and_then(c4m_core::parse_rfc3339)
            .map_or_else(
                || "<none>".to_string(),
                |at| {
                    human_duration(
                        std::time::SystemTime::now()
                            .duration_since(at)
                            .unwrap_or_default(),
                    )
                },
            )
    }),
    AGE,
    Column::new("CONTAINERS", "Names of the containers", |c| {
        template_containers(&c["spec"]["jobTemplate"]["spec"]["template"], "name")
    })
    .wide(),
    Column::new("IMAGES", "Images of the containers", |c| {
        template_containers(&c["spec"]["jobTemplate"]["spec"]["template"], "image")
    })
    .wide(),
    Column::new("SELECTOR", "The Jobs' pod selector", |c| {
        or_none(&json_labels(&c["spec"]["jobTemplate"]["spec"]["selector"]))
    })
    .wide(),
];

fn or_none(value: &Value) -> String {
    match text(value) {
        s if s.is_empty() => "<none>".into(),
        s => s,
    }
}

fn json_labels(selector: &Value) -> Value {
    Value::String(match_labels(selector))
}

/// A Job's STATUS, in the order kubectl's printer checks its conditions.
fn job_status(job: &Value) -> String {
    let has = |kind: &str| condition(job, kind).is_some_and(|c| c["status"] == "True");
    if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if !job["metadata"]["deletionTimestamp"].is_null() {
        "Terminating"
    } else if has("Suspended") {
        "Suspended"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else if has("SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    }
    .into()
}

/// `succeeded/completions`, or `succeeded/1 of parallelism` for a Job
/// without completions, as kubectl prints them.
fn job_completions(job: &Value) -> String {
    let succeeded = job["status"]["succeeded"].as_i64().unwrap_or(0);
    match job["spec"]["completions"].as_i64() {
        Some(completions) => format!("{succeeded}/{completions}"),
        None => match job["spec"]["parallelism"].as_i64().unwrap_or(1) {
            parallelism if parallelism > 1 => format!("{succeeded}/1 of {parallelism}"),
            _ => format!("{succeeded}/1"),
        },
    }
}

/// From `status.startTime` to `status.completionTime`, or to now.
fn job_duration(job: &Value) -> String {
    let Some(started) = job["status"]["startTime"]
        .as_str()
        .and_then(c4m_core::parse_rfc3339)
    else {
        return String::new();
    };
    let ended = job["status"]["completionTime"]
        .as_str()
        .and_then(c4m_core::parse_rfc3339)
        .unwrap_or_else(std::time::SystemTime::now);
    human_duration(ended.duration_since(started).unwrap_or_default())
}

/// A duration as kubectl prints one (`45s`, `3m12s`, `5h3m`, `2d4h`):
/// apimachinery's `HumanDuration`.
pub fn human_duration(duration: std::time::Duration) -> String {
    let seconds = duration.as_secs();
    let minutes = seconds / 60;
    let hours = seconds / 3600;
    if seconds < 60 * 2 {
        format!("{seconds}s")
    } else if minutes < 10 {
        match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        }
    } else if minutes < 60 * 3 {
        format!("{minutes}m")
    } else if hours < 8 {
        match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        match hours % 24 {
            0 => format!("{}d", hours / 24),
            h => format!("{}d{h}h", hours / 24),
        }
    } else if hours < 24 * 365 * 2 {
        format!("{}d", hours / 24)
    } else if hours < 24 * 365 * 8 {
        format!("{}y{}d", hours / 24 / 365, (hours / 24) % 365)
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

/// One field of each container of a pod template, comma-separated.
fn template_containers(template: &Value, field: &str) -> String {
    template["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| text(&c[field]))
        .collect::<Vec<_>>()
        .join(",")
}

/// A selector's matchLabels as `k=v,k2=v2`.
fn match_labels(selector: &Value) -> String {
    selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", text(v)))
        .collect::<Vec<_>>()
        .join(",")
}

static HORIZONTAL_POD_AUTOSCALER: &[Column] = &[
    NAME,
    Column::new("REFERENCE", "The scale target", |h| {
        let target = &h["spec"]["scaleTargetRef"];
        format!("{}/{}", text(&target["kind"]), text(&target["name"]))
    }),
    Column::new(
        "TARGETS",
        "Each metric's current value against its target",
        autoscaler_targets,
    ),
    Column::new(
        "MINPODS",
        "The fewest replicas",
        |h| match h["spec"]["minReplicas"].as_i64() {
            Some(min) => min.to_string(),
            None => "<unset>".into(),
        },
    ),
    Column::new("MAXPODS", "The most replicas", |h| {
        h["spec"]["maxReplicas"].as_i64().unwrap_or(0).to_string()
    }),
    Column::new("REPLICAS", "Replicas of the target now", |h| {
        h["status"]["currentReplicas"]
            .as_i64()
            .unwrap_or(0)
            .to_string()
    }),
    AGE,
];

/// An autoscaler's TARGETS, as Kubernetes' printer writes them: the first
/// two metrics (`cpu: 42%/50%`, `memory: 12Mi/64Mi`), `+ N more...`.
fn autoscaler_targets(autoscaler: &Value) -> String {
    let Some(specs) = autoscaler["spec"]["metrics"]
        .as_array()
        .filter(|m| !m.is_empty())
    else {
        return "<none>".into();
    };
    let statuses = autoscaler["status"]["currentMetrics"].as_array();
    let cells: Vec<String> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let (source, status_source) = match spec["type"].as_str() {
                Some("Resource") => ("resource", "resource"),
                Some("ContainerResource") => ("containerResource", "containerResource"),
                Some("Pods") => ("pods", "pods"),
                Some("Object") => ("object", "object"),
                Some("External") => ("external", "external"),
                _ => return "<unknown type>".to_string(),
            };
            let spec = &spec[source];
            let current = statuses
                .and_then(|s| s.get(i))
                .map(|s| &s[status_source]["current"]);
            let target = &spec["target"];
            let name = text(&spec["name"]);
            let prefix = if source == "resource" || source == "containerResource" {
                format!("{name}: ")
            } else {
                String::new()
            };
            let (current, target) = if target["averageValue"].is_string() {
                (
                    current.map(|c| text(&c["averageValue"])),
                    text(&target["averageValue"]),
                )
            } else if target["averageUtilization"].is_number() {
                (
                    current
                        .and_then(|c| c["averageUtilization"].as_i64())
                        .map(|u| format!("{u}%")),
                    format!("{}%", target["averageUtilization"]),
                )
            } else {
                (current.map(|c| text(&c["value"])), text(&target["value"]))
            };
            let current = current
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| "<unknown>".into());
            format!("{prefix}{current}/{target}")
        })
        .collect();
    match cells.len() {
        n if n > 2 => format!("{} + {} more...", cells[..2].join(", "), n - 2),
        _ => cells.join(", "),
    }
}

static INGRESS: &[Column] = &[
    NAME,
    Column::new("CLASS", "The IngressClass", |i| {
        or_none(&i["spec"]["ingressClassName"])
    }),
    Column::new("HOSTS", "Hosts of the rules", ingress_hosts),
    Column::new("ADDRESS", "Addresses the Ingress is served on", |i| {
        load_balancer_addresses(&i["status"]["loadBalancer"])
    }),
    Column::new("PORTS", "Ports served", |i| {
        match i["spec"]["tls"].as_array().is_some_and(|t| !t.is_empty()) {
            true => "80, 443".into(),
            false => "80".into(),
        }
    }),
    AGE,
];

/// An Ingress' HOSTS as Kubernetes' printer writes them: `*` for a rule
/// without a host, three at most then `+ N more...`.
fn ingress_hosts(ingress: &Value) -> String {
    let hosts: Vec<String> = ingress["spec"]["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| match text(&r["host"]) {
            h if h.is_empty() => "*".to_string(),
            h => h,
        })
        .collect();
    match hosts.len() {
        0 => "*".into(),
        n if n > 3 => format!("{} + {} more...", hosts[..3].join(","), n - 3),
        _ => hosts.join(","),
    }
}

/// A `status.loadBalancer`'s ingress IPs and hostnames, comma-separated,
/// cut to 16 characters as kubectl's default output cuts them.
fn load_balancer_addresses(status: &Value) -> String {
    let addresses: Vec<String> = status["ingress"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|i| [text(&i["ip"]), text(&i["hostname"])])
        .filter(|a| !a.is_empty())
        .collect();
    let joined = addresses.join(",");
    match joined.len() {
        n if n > 16 => format!("{}...", &joined[..13]),
        _ => joined,
    }
}

static INGRESS_CLASS: &[Column] = &[
    NAME,
    Column::new("CONTROLLER", "The controller serving the class", |c| {
        text(&c["spec"]["controller"])
    }),
    Column::new("PARAMETERS", "The class' parameters object", |c| {
        let parameters = &c["spec"]["parameters"];
        if !parameters.is_object() {
            return "<none>".into();
        }
        let mut kind = text(&parameters["kind"]);
        if let Some(group) = parameters["apiGroup"].as_str() {
            kind = format!("{kind}.{group}");
        }
        format!("{kind}/{}", text(&parameters["name"]))
    }),
    AGE,
];

// The Gateway API kinds print the columns of their CRDs'
// additionalPrinterColumns: a JSONPath's first match, empty when none.

/// The `status` of the condition `condition_type`, or empty.
fn condition_status(object: &Value, condition_type: &str) -> String {
    condition(object, condition_type)
        .map(|c| text(&c["status"]))
        .unwrap_or_default()
}

static GATEWAY_CLASS: &[Column] = &[
    NAME,
    Column::new("CONTROLLER", "spec.controllerName", |c| {
        text(&c["spec"]["controllerName"])
    }),
    Column::new("ACCEPTED", "The Accepted condition", |c| {
        condition_status(c, "Accepted")
    }),
    AGE,
    Column::new("DESCRIPTION", "spec.description", |c| {
        text(&c["spec"]["description"])
    })
    .wide(),
];

static GATEWAY: &[Column] = &[
    NAME,
    Column::new("CLASS", "spec.gatewayClassName", |g| {
        text(&g["spec"]["gatewayClassName"])
    }),
    Column::new("ADDRESS", "status.addresses[*].value", |g| {
        text(&g["status"]["addresses"][0]["value"])
    }),
    Column::new("PROGRAMMED", "The Programmed condition", |g| {
        condition_status(g, "Programmed")
    }),
    AGE,
];

static ROUTE: &[Column] = &[
    NAME,
    Column::new(
        "HOSTNAMES",
        "spec.hostnames",
        |r| match &r["spec"]["hostnames"] {
            Value::Array(hosts) if !hosts.is_empty() => Value::Array(hosts.clone()).to_string(),
            _ => String::new(),
        },
    ),
    AGE,
];

static DEFAULT: &[Column] = &[NAME, AGE];

/// The columns objects of `kind` are listed with.
pub fn columns(kind: &ResourceKind) -> &'static [Column] {
    match kind.kind {
        "Pod" => POD,
        "Deployment" => DEPLOYMENT,
        "ReplicaSet" => REPLICA_SET,
        "Microservice" => MICROSERVICE,
        "Node" => NODE,
        "Service" => SERVICE,
        "Endpoints" => ENDPOINTS,
        "EndpointSlice" => ENDPOINT_SLICE,
        "PriorityClass" => PRIORITY_CLASS,
        "PodDisruptionBudget" => POD_DISRUPTION_BUDGET,
        "Vpc" => VPC,
        "Namespace" => NAMESPACE,
        "Event" => EVENT,
        "Job" => JOB,
        "DaemonSet" => DAEMON_SET,
        "CronJob" => CRON_JOB,
        "HorizontalPodAutoscaler" => HORIZONTAL_POD_AUTOSCALER,
        "Ingress" => INGRESS,
        "IngressClass" => INGRESS_CLASS,
        "GatewayClass" => GATEWAY_CLASS,
        "Gateway" => GATEWAY,
        "HTTPRoute" | "GRPCRoute" => ROUTE,
        "PersistentVolume" => storage::PERSISTENT_VOLUME,
        "PersistentVolumeClaim" => storage::PERSISTENT_VOLUME_CLAIM,
        "StorageClass" => storage::STORAGE_CLASS,
        "VolumeSnapshot" => storage::VOLUME_SNAPSHOT,
        "VolumeSnapshotClass" => storage::VOLUME_SNAPSHOT_CLASS,
        "VolumeSnapshotContent" => storage::VOLUME_SNAPSHOT_CONTENT,
        "StatefulSet" => storage::STATEFUL_SET,
        _ => DEFAULT,
    }
}

/// The cells of one object, one per column of its kind.
pub fn row(kind: &ResourceKind, object: &Value) -> Vec<String> {
    columns(kind).iter().map(|c| (c.cell)(object)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn headers(kind: &str, priority: u8) -> Vec<&'static str> {
        columns(ResourceKind::from_name(kind).unwrap())
            .iter()
            .filter(|c| c.priority <= priority)
            .map(|c| c.name)
            .collect()
    }

    /// STATUS, READY and RESTARTS of a pod with an init container and a
    /// sidecar, as kubectl prints them against Kubernetes.
    #[test]
    fn init_containers_and_sidecars_show_as_kubectl_prints_them() {
        let pod = |init: Value, app: Value, initialized: bool| {
            json!({
                "spec": {
                    "initContainers": [{"name": "setup"}, {"name": "proxy", "restartPolicy": "Always"}],
                    "containers": [{"name": "app"}],
                },
                "status": {
                    "phase": if initialized { "Running" } else { "Pending" },
                    "conditions": [{"type": "Initialized", "status": if initialized { "True" } else { "False" }}],
                    "initContainerStatuses": init,
                    "containerStatuses": app,
                },
            })
        };
        let waiting = json!([{"name": "app", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}]);
        let first = pod(
            json!([
                {"name": "setup", "restartCount": 0, "state": {"running": {}}},
                {"name": "proxy", "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}},
            ]),
            waiting.clone(),
            false,
        );
        assert_eq!(instance_status(&first), "Init:0/2");
        assert_eq!(ready_count(&first), "0/2");
        let crashing = pod(
            json!([
                {"name": "setup", "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}}},
                {"name": "proxy", "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}},
            ]),
            waiting.clone(),
            false,
        );
        assert_eq!(instance_status(&crashing), "Init:CrashLoopBackOff");
        assert_eq!(restart_count(&crashing), "3");
        let failed = pod(
            json!([{"name": "setup", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]),
            waiting.clone(),
            false,
        );
        assert_eq!(instance_status(&failed), "Init:Error");
        let sidecar_starting = pod(
            json!([
                {"name": "setup", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                {"name": "proxy", "started": false, "state": {"waiting": {"reason": "ContainerCreating"}}},
            ]),
            waiting,
            false,
        );
        assert_eq!(instance_status(&sidecar_starting), "Init:ContainerCreating");
        let running = pod(
            json!([
                {"name": "setup", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                {"name": "proxy", "started": true, "ready": true, "restartCount": 1, "state": {"running": {}}},
            ]),
            json!([{"name": "app", "ready": true, "restartCount": 2, "state": {"running": {}}}]),
            true,
        );
        assert_eq!(instance_status(&running), "Running");
        assert_eq!(ready_count(&running), "2/2");
        assert_eq!(restart_count(&running), "3");
    }

    #[test]
    fn an_instance_endpoint_shows_its_ip_ports_and_host_bindings() {
        let pod = |ip: &str, ports: Value| {
            json!({
                "metadata": {"annotations": {c4m_core::annotations::PORTS: ports.to_string()}},
                "status": {"podIP": ip},
            })
        };
        assert_eq!(instance_endpoint(&pod("", json!([]))), "-");
        assert_eq!(instance_endpoint(&pod("10.0.0.5", json!([]))), "10.0.0.5");
        // The process driver: host ports on the node's address.
        let process = json!([
            {"containerPort": 8080, "hostIP": "127.0.0.1", "hostPort": 41000},
            {"containerPort": 9090, "hostIP": "127.0.0.1", "hostPort": 41001},
        ]);
        assert_eq!(
            instance_endpoint(&pod("127.0.0.1", process)),
            "127.0.0.1:41000,41001"
        );
        // In a VPC: the instance's own address, and its published hostPort.
        let vpc = json!([
            {"containerPort": 8080, "hostIP": "10.88.0.2", "hostPort": 8080},
            {"containerPort": 8080, "hostIP": "192.0.2.7", "hostPort": 30080},
        ]);
        assert_eq!(
            instance_endpoint(&pod("10.88.0.2", vpc)),
            "10.88.0.2:8080,192.0.2.7:30080->8080"
        );
    }

    #[test]
    fn default_columns_match_kubectl() {
        assert_eq!(
            headers("pods", 0),
            ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
        );
        assert_eq!(
            headers("deployments", 0),
            ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
        );
        assert_eq!(
            headers("nodes", 0),
            ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
        );
        assert_eq!(
            headers("microservices", 0),
            ["NAME", "REPLICAS", "READY", "AGE"]
        );
        assert_eq!(
            headers("rs", 0),
            ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]
        );
        assert_eq!(headers("configmaps", 1), ["NAME", "AGE"]);
        assert_eq!(
            headers("ds", 0),
            [
                "NAME",
                "DESIRED",
                "CURRENT",
                "READY",
                "UP-TO-DATE",
                "AVAILABLE",
                "NODE SELECTOR",
                "AGE"
            ]
        );
        assert_eq!(
            headers("cj", 0),
            [
                "NAME",
                "SCHEDULE",
                "TIMEZONE",
                "SUSPEND",
                "ACTIVE",
                "LAST SCHEDULE",
                "AGE"
            ]
        );
        assert_eq!(
            headers("jobs", 0),
            ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
        );
    }

    #[test]
    fn service_cells_follow_kubectl() {
        let services = ResourceKind::from_name("svc").unwrap();
        assert_eq!(
            headers("svc", 1),
            [
                "NAME",
                "TYPE",
                "CLUSTER-IP",
                "EXTERNAL-IP",
                "PORT(S)",
                "AGE",
                "SELECTOR"
            ]
        );
        let cells = |service: Value| {
            let row = row(services, &service);
            [
                row[1].clone(),
                row[2].clone(),
                row[3].clone(),
                row[4].clone(),
                row[6].clone(),
            ]
        };
        assert_eq!(
            cells(
                json!({"spec": {"type": "NodePort", "clusterIP": "10.96.0.10",
                "clusterIPs": ["10.96.0.10"], "selector": {"app": "web"},
                "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"},
                    {"port": 53, "nodePort": 30053, "protocol": "UDP"}]}})
            ),
            [
                "NodePort",
                "10.96.0.10",
                "<none>",
                "80:30080/TCP,53:30053/UDP",
                "app=web"
            ]
        );
        assert_eq!(
            cells(
                json!({"spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.0.11"],
                "ports": [{"port": 80, "nodePort": 31000}]}})
            ),
            [
                "LoadBalancer",
                "10.96.0.11",
                "<pending>",
                "80:31000/TCP",
                "<none>"
            ]
        );
        assert_eq!(
            cells(
                json!({"spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.0.11"],
                "ports": [{"port": 80, "nodePort": 31000}]},
                "status": {"loadBalancer": {"ingress": [{"ip": "192.168.1.2"}, {"ip": "192.168.1.3"}]}}})
            )[2],
            "192.168.1.2,192.168.1.3"
        );
        assert_eq!(
            cells(json!({"spec": {"type": "ExternalName", "externalName": "example.com"}})),
            ["ExternalName", "<none>", "example.com", "<none>", "<none>"]
        );
        assert_eq!(
            cells(
                json!({"spec": {"clusterIP": "None", "clusterIPs": ["None"], "ports": [{"port": 80}]}})
            )[..3],
            ["ClusterIP", "None", "<none>"]
        );
    }

    #[test]
    fn endpoint_slice_cells_follow_kubectl() {
        let slices = ResourceKind::from_name("endpointslices").unwrap();
        assert_eq!(
            headers("endpointslices", 1),
            ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
        );
        let slice = json!({"metadata": {"name": "web-abcde"}, "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}, {"name": "dns"}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]},
                {"addresses": ["10.0.0.3"]}, {"addresses": ["10.0.0.4"]}]});
        assert_eq!(
            row(slices, &slice)[..4],
            [
                "web-abcde",
                "IPv4",
                "8080,dns",
                "10.0.0.1,10.0.0.2,10.0.0.3 + 1 more..."
            ]
        );
        let empty = json!({"metadata": {"name": "web-abcde"}, "addressType": "IPv4",
            "endpoints": []});
        assert_eq!(row(slices, &empty)[2..4], ["<unset>", "<unset>"]);
    }

    #[test]
    fn edge_kinds_print_as_kubectl_prints_them() {
        assert_eq!(
            headers("ing", 0),
            ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]
        );
        assert_eq!(
            headers("gatewayclasses", 0),
            ["NAME", "CONTROLLER", "ACCEPTED", "AGE"]
        );
        assert_eq!(
            headers("gtw", 0),
            ["NAME", "CLASS", "ADDRESS", "PROGRAMMED", "AGE"]
        );
        assert_eq!(headers("httproutes", 0), ["NAME", "HOSTNAMES", "AGE"]);
        let cells = |plural: &str, object: Value| {
            let kind = ResourceKind::from_name(plural).unwrap();
            let mut row = row(kind, &object);
            row.pop(); // AGE
            row
        };
        let ingress = json!({"metadata": {"name": "web"},
            "spec": {"ingressClassName": "c4m", "tls": [{"hosts": ["a.test"]}],
                "rules": [{"host": "a.test"}, {"http": {}}, {"host": "b.test"}, {"host": "c.test"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}]}}});
        assert_eq!(
            cells("ingresses", ingress),
            [
                "web",
                "c4m",
                "a.test,*,b.test + 1 more...",
                "10.0.0.1,10.0...",
                "80, 443"
            ]
        );
        let bare = json!({"metadata": {"name": "bare"}, "spec": {}});
        assert_eq!(cells("ingresses", bare), ["bare", "<none>", "*", "", "80"]);
        let gateway = json!({"metadata": {"name": "edge"},
            "spec": {"gatewayClassName": "c4m"},
            "status": {"addresses": [{"value": "10.0.0.1"}, {"value": "10.0.0.2"}],
                "conditions": [{"type": "Accepted", "status": "True"},
                    {"type": "Programmed", "status": "False"}]}});
        assert_eq!(
            cells("gateways", gateway),
            ["edge", "c4m", "10.0.0.1", "False"]
        );
        let route = json!({"metadata": {"name": "r"}, "spec": {"hostnames": ["a.test", "b.test"]}});
        assert_eq!(cells("grpcroutes", route), ["r", r#"["a.test","b.test"]"#]);
        let class = json!({"metadata": {"name": "c4m"}, "spec": {"controller": "c4m.io/ingress",
            "parameters": {"apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "p"}}});
        assert_eq!(
            cells("ingressclasses", class),
            [
                "c4m",
                "c4m.io/ingress",
                "IngressParameters.k8s.example.com/p"
            ]
        );
    }

    #[test]
    fn job_cells_follow_kubectl() {
        let jobs = ResourceKind::from_name("jobs").unwrap();
        let job = json!({
            "metadata": {"name": "pi"},
            "spec": {"completions": 3, "parallelism": 2},
            "status": {"succeeded": 3, "startTime": "2026-01-01T00:00:00Z",
                "completionTime": "2026-01-01T00:03:12Z",
                "conditions": [
                    {"type": "SuccessCriteriaMet", "status": "True"},
                    {"type": "Complete", "status": "True"}]},
        });
        assert_eq!(row(jobs, &job)[..4], ["pi", "Complete", "3/3", "3m12s"]);
        let queue = json!({"metadata": {"name": "q"}, "spec": {"parallelism": 4},
            "status": {"conditions": [{"type": "FailureTarget", "status": "True"}]}});
        assert_eq!(
            row(jobs, &queue)[..4],
            ["q", "FailureTarget", "0/1 of 4", ""]
        );
    }

    #[test]
    fn autoscaler_cells_follow_kubectl() {
        let hpa = json!({"metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 4,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 50}}}]},
            "status": {"currentReplicas": 2}});
        let kind = ResourceKind::from_name("hpa").unwrap();
        assert_eq!(
            headers("hpa", 0),
            [
                "NAME",
                "REFERENCE",
                "TARGETS",
                "MINPODS",
                "MAXPODS",
                "REPLICAS",
                "AGE"
            ]
        );
        let cells = row(kind, &hpa);
        assert_eq!(
            cells[1..6],
            ["Deployment/web", "cpu: <unknown>/50%", "1", "4", "2"]
        );
        let mut measured = hpa.clone();
        measured["status"]["currentMetrics"] = json!([{"type": "Resource", "resource": {
            "name": "cpu", "current": {"averageUtilization": 73, "averageValue": "730m"}}}]);
        measured["spec"]["metrics"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "Resource", "resource": {"name": "memory",
                "target": {"type": "AverageValue", "averageValue": "64Mi"}}}));
        assert_eq!(
            row(kind, &measured)[2],
            "cpu: 73%/50%, memory: <unknown>/64Mi"
        );
        let mut bare = hpa;
        bare["spec"] =
            json!({"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 3});
        assert_eq!(row(kind, &bare)[2..4], ["<none>", "<unset>"]);
    }

    #[test]
    fn durations_print_as_kubectl_prints_them() {
        let d = |s| human_duration(std::time::Duration::from_secs(s));
        assert_eq!(d(45), "45s");
        assert_eq!(d(119), "119s");
        assert_eq!(d(192), "3m12s");
        assert_eq!(d(600), "10m");
        assert_eq!(d(3 * 3600 + 60), "3h1m");
        assert_eq!(d(10 * 3600), "10h");
        assert_eq!(d(50 * 3600), "2d2h");
    }

    #[test]
    fn cells() {
        let pods = ResourceKind::from_name("pods").unwrap();
        let pod = json!({
            "metadata": {"name": "web-1"},
            "spec": {"nodeName": "a"},
            "status": {"phase": "Running", "podIP": "10.0.0.1",
                "containerStatuses": [{"ready": true, "restartCount": 2}]},
        });
        assert_eq!(
            row(pods, &pod),
            ["web-1", "1/1", "Running", "2", "a", "10.0.0.1", "-"]
        );
        let node = json!({"metadata": {"name": "n", "labels": {"node-role.kubernetes.io/control-plane": ""}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let nodes = ResourceKind::from_name("nodes").unwrap();
        assert_eq!(row(nodes, &node)[..3], ["n", "Ready", "control-plane"]);
    }

    #[test]
    fn events_are_listed_as_kubectl_lists_them() {
        assert_eq!(
            headers("events", 0),
            ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
        );
        let events = ResourceKind::from_name("events").unwrap();
        let event = json!({
            "metadata": {"name": "web-1.1"},
            "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{main}"},
            "type": "Warning", "reason": "BackOff", "message": "Back-off restarting",
            "source": {"component": "kubelet", "host": "n1"}, "count": 3,
        });
        assert_eq!(
            row(events, &event),
            [
                "-",
                "Warning",
                "BackOff",
                "pod/web-1",
                "spec.containers{main}",
                "kubelet, n1",
                "Back-off restarting",
                "-",
                "3",
                "web-1.1"
            ]
        );
    }
}
