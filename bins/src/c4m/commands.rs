//! The client commands: talk to a control plane's HTTP API.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use c4m_api::{ApplyObject, ApplyRequest, Client, Credentials};
use c4m_bins::{CredentialFlags, default_home, parse_duration, parse_key_value};
use c4m_core::ResourceKind;
use clap::Args;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::output::{self, Format};

/// Where the control plane is and how to authenticate.
#[derive(Args, Clone, Default)]
pub(crate) struct Connection {
    /// Control plane URL (default: from ~/.c4m/client.json, written by `c4m up`).
    #[arg(long, global = true, env = "C4M_ENDPOINT_URL")]
    pub endpoint: Option<String>,
    #[command(flatten)]
    pub credentials: CredentialFlags,
}

/// `client.json`: where `c4m up` tells the CLI how to reach it.
#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ClientConfig {
    pub endpoint: String,
    #[serde(default)]
    pub access_token: String,
    #[serde(default)]
    pub secret_key: String,
}

impl Connection {
    /// A client for the control plane these flags (or `client.json`) name.
    pub(crate) fn client(&self) -> Result<Client> {
        let (endpoint, credentials) = self.resolve()?;
        Ok(Client::new(&endpoint, credentials.as_ref())?)
    }

    /// The endpoint and credentials these flags (or `client.json`) name.
    pub(crate) fn resolve(&self) -> Result<(String, Option<Credentials>)> {
        let given = self.credentials.credentials();
        let stored = if self.endpoint.is_none() || given.is_none() {
            let path = default_home()?.join("client.json");
            match std::fs::read_to_string(&path) {
                Ok(text) => Some(
                    serde_json::from_str::<ClientConfig>(&text).with_context(|| {
                        format!("{} is not a valid client config", path.display())
                    })?,
                ),
                Err(_) if self.endpoint.is_some() => None,
                Err(_) => bail!(
                    "no control plane configured: start one with `c4m up`, or set C4M_ENDPOINT_URL (and C4M_ACCESS_TOKEN, C4M_SECRET_KEY)"
                ),
            }
        } else {
            None
        };
        let endpoint = self
            .endpoint
            .clone()
            .or_else(|| stored.as_ref().map(|s| s.endpoint.clone()))
            .unwrap_or_default();
        let credentials = match (given, &stored) {
            (Some(given), _) => Some(given),
            (None, Some(stored)) if !stored.access_token.is_empty() => Some(Credentials {
                access_token: stored.access_token.clone(),
                secret_key: stored.secret_key.clone(),
            }),
            _ => None,
        };
        Ok((endpoint, credentials))
    }
}

pub(crate) fn kind(name: &str) -> Result<&'static ResourceKind> {
    ResourceKind::from_name(name).ok_or_else(|| {
        let known: Vec<&str> = c4m_core::KINDS.iter().map(|k| k.plural).collect();
        anyhow!("unknown kind {name:?}; known kinds: {}", known.join(", "))
    })
}

/// Reads every document of `-f` arguments: files, folders (their .yaml,
/// .yml and .json files, sorted) or `-` for stdin.
fn read_manifests(paths: &[PathBuf]) -> Result<Vec<c4m_core::Document>> {
    let mut documents = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read stdin")?;
            documents.extend(c4m_core::parse_documents("<stdin>", &text)?);
            continue;
        }
        let files = if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension()
                        .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
                })
                .collect();
            files.sort();
            files
        } else {
            vec![path.clone()]
        };
        for file in files {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            documents.extend(c4m_core::parse_documents(
                &file.display().to_string(),
                &text,
            )?);
        }
    }
    if documents.is_empty() {
        bail!(
            "no objects found in {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(documents)
}

/// `c4m apply`.
#[derive(Args)]
pub(crate) struct ApplyArgs {
    /// File, folder or - (stdin); repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    /// Namespace for objects that name none.
    #[arg(short, long)]
    namespace: Option<String>,
}

pub(crate) async fn apply(args: ApplyArgs, connection: &Connection) -> Result<()> {
    let documents = read_manifests(&args.files)?;
    // Validate everything locally first: a bad document fails before anything is sent.
    for document in &documents {
        c4m_core::validate(document)?;
    }
    let request = ApplyRequest {
        objects: documents
            .into_iter()
            .map(|d| ApplyObject {
                source: d.source,
                document: d.index,
                object: d.value,
            })
            .collect(),
        default_namespace: args.namespace,
    };
    let response = connection.client()?.apply(&request).await?;
    for warning in &response.warnings {
        eprintln!("warning: {warning}");
    }
    for result in &response.results {
        let action = serde_json::to_value(result.action)?;
        println!(
            "{}/{} {}",
            result.kind.to_ascii_lowercase(),
            result.name,
            action.as_str().unwrap_or_default()
        );
    }
    Ok(())
}

/// `c4m delete`.
#[derive(Args)]
pub(crate) struct DeleteArgs {
    /// Kind, then names.
    args: Vec<String>,
    /// Delete the objects in these files instead.
    #[arg(short = 'f', long = "filename")]
    files: Vec<PathBuf>,
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// Succeed when an object is already gone.
    #[arg(long)]
    ignore_not_found: bool,
}

pub(crate) async fn delete(args: DeleteArgs, connection: &Connection) -> Result<()> {
    let client = connection.client()?;
    let mut targets: Vec<(&'static ResourceKind, String, String)> = Vec::new();
    if !args.files.is_empty() {
        for document in read_manifests(&args.files)? {
            let validated = c4m_core::validate(&document)?;
            let meta = &validated.object["metadata"];
            let namespace = meta["namespace"]
                .as_str()
                .unwrap_or(&args.namespace)
                .to_string();
            targets.push((
                validated.kind,
                namespace,
                meta["name"].as_str().unwrap_or_default().to_string(),
            ));
        }
    } else {
        let (kind_name, names) = args
            .args
            .split_first()
            .ok_or_else(|| anyhow!("usage: c4m delete KIND NAME... or c4m delete -f FILE"))?;
        let kind = kind(kind_name)?;
        if names.is_empty() {
            bail!("name the {} to delete", kind.plural);
        }
        targets.extend(
            names
                .iter()
                .map(|n| (kind, args.namespace.clone(), n.clone())),
        );
    }
    for (kind, namespace, name) in targets {
        match client.delete(kind, Some(&namespace), &name).await {
            Ok(_) => println!("{}/{name} deleted", kind.kind.to_ascii_lowercase()),
            Err(e) if e.code() == Some(404) && args.ignore_not_found => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// `c4m get`.
#[derive(Args)]
pub(crate) struct GetArgs {
    /// Kind (instances, microservices, deployments, services, nodes, ...).
    kind: String,
    /// One object's name.
    name: Option<String>,
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// Every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// table, json or yaml.
    #[arg(short, long, default_value = "table")]
    output: Format,
    /// Label selector (app=web,tier!=db).
    #[arg(short = 'l', long)]
    selector: Option<String>,
}

pub(crate) async fn get(args: GetArgs, connection: &Connection) -> Result<()> {
    let kind = kind(&args.kind)?;
    let client = connection.client()?;
    let namespace = (!args.all_namespaces).then_some(args.namespace.as_str());
    let items = match &args.name {
        Some(name) => vec![client.get(kind, namespace, name).await?],
        None => {
            let list = client
                .list(kind, namespace, args.selector.as_deref())
                .await?;
            list["items"].as_array().cloned().unwrap_or_default()
        }
    };
    let text = match args.output {
        Format::Table => output::table(kind, &items, args.all_namespaces),
        Format::Json | Format::Yaml => {
            let value = match (&args.name, items.as_slice()) {
                (Some(_), [one]) => one.clone(),
                _ => {
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items})
                }
            };
            output::document(&value, args.output)?
        }
    };
    if args.output == Format::Table && items.is_empty() {
        eprintln!(
            "No {} found{}.",
            kind.plural,
            namespace
                .map(|ns| format!(" in namespace {ns}"))
                .unwrap_or_default()
        );
        return Ok(());
    }
    print!("{text}");
    Ok(())
}

/// `c4m describe`.
#[derive(Args)]
pub(crate) struct DescribeArgs {
    /// Kind.
    kind: String,
    /// Name.
    name: String,
    #[arg(short, long, default_value = "default")]
    namespace: String,
}

pub(crate) async fn describe(args: DescribeArgs, connection: &Connection) -> Result<()> {
    let kind = kind(&args.kind)?;
    let object = connection
        .client()?
        .get(kind, Some(&args.namespace), &args.name)
        .await?;
    print!("{}", output::describe(kind, &object));
    Ok(())
}

/// `c4m logs`.
#[derive(Args)]
pub(crate) struct LogsArgs {
    /// Instance name.
    instance: String,
    /// Keep streaming new output.
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines.
    #[arg(long)]
    tail: Option<usize>,
    /// Start each line with the time it was written (RFC 3339, UTC).
    #[arg(long)]
    timestamps: bool,
    /// Only lines written within this long (`10s`, `5m`, `1h`).
    #[arg(long, value_parser = parse_duration)]
    since: Option<Duration>,
    #[arg(short, long, default_value = "default")]
    namespace: String,
}

pub(crate) async fn logs(args: LogsArgs, connection: &Connection) -> Result<()> {
    let client = connection.client()?;
    let mut stream = Box::pin(
        client
            .logs(
                &args.namespace,
                &args.instance,
                &c4m_api::LogQuery {
                    follow: args.follow,
                    tail_lines: args.tail,
                    timestamps: args.timestamps,
                    // Rounded up, so a line of exactly that age is kept.
                    since_seconds: args
                        .since
                        .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0)),
                },
            )
            .await?,
    );
    let mut stdout = std::io::stdout();
    while let Some(chunk) = stream.next().await {
        stdout.write_all(&chunk?)?;
        stdout.flush()?;
    }
    Ok(())
}

/// Instances by name (`c4m status`, `c4m metrics`).
#[derive(Args)]
pub(crate) struct InstancesArgs {
    /// Instance names.
    #[arg(required = true)]
    instances: Vec<String>,
    #[arg(short, long, default_value = "default")]
    namespace: String,
}

pub(crate) async fn status(args: InstancesArgs, connection: &Connection) -> Result<()> {
    let client = connection.client()?;
    let pods = kind("pods")?;
    let mut rows = Vec::new();
    let mut failed = None;
    for name in &args.instances {
        match client.get(pods, Some(&args.namespace), name).await {
            Ok(pod) => rows.push(pod),
            Err(e) => {
                eprintln!("error: {e}");
                failed = Some(anyhow!("some instances could not be read"));
            }
        }
    }
    print!("{}", output::status_table(&rows));
    failed.map_or(Ok(()), Err)
}

pub(crate) async fn metrics(args: InstancesArgs, connection: &Connection) -> Result<()> {
    let client = connection.client()?;
    let mut rows = vec![vec!["NAME".to_string(), "CPU".into(), "MEMORY".into()]];
    let mut failed = None;
    for name in &args.instances {
        match client.instance_metrics(&args.namespace, name).await {
            Ok(m) => rows.push(vec![
                name.clone(),
                // Nanocores on the wire (`250000000n`), millicores here.
                m["containers"][0]["usage"]["cpu"]
                    .as_str()
                    .and_then(|cpu| c4m_core::parse_cpu_millis(cpu).ok())
                    .map_or_else(|| "-".to_string(), c4m_core::format_cpu_millis),
                output::memory_from_ki(
                    m["containers"][0]["usage"]["memory"]
                        .as_str()
                        .unwrap_or("-"),
                ),
            ]),
            Err(e) => {
                eprintln!("error: {e}");
                failed = Some(anyhow!("some instances have no metrics"));
            }
        }
    }
    print!("{}", output::columns(&rows));
    failed.map_or(Ok(()), Err)
}

/// `c4m run`.
#[derive(Args)]
pub(crate) struct RunArgs {
    /// Microservice name (default: from the command).
    #[arg(long)]
    name: Option<String>,
    /// Image (for container drivers).
    #[arg(long)]
    image: Option<String>,
    /// Memory limit, e.g. 128Mi.
    #[arg(long)]
    memory: Option<String>,
    /// CPU limit, e.g. 500m.
    #[arg(long)]
    cpu: Option<String>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e', value_parser = parse_key_value)]
    env: Vec<(String, String)>,
    /// Working directory.
    #[arg(long)]
    dir: Option<String>,
    /// User (name or uid) to run as.
    #[arg(long)]
    user: Option<String>,
    /// Replicas.
    #[arg(long, default_value_t = 1)]
    replicas: i32,
    /// Port the command listens on, NAME:PORT or PORT (repeatable).
    #[arg(long = "port")]
    ports: Vec<String>,
    /// Driver.
    #[arg(long, default_value = "process")]
    driver: String,
    /// A volume (name or ID, see `c4m volume`) mounted at PATH:
    /// NAME_OR_ID:PATH (repeatable).
    #[arg(long = "volume")]
    volumes: Vec<String>,
    /// The instance's own disk (ephemeral-storage limit): writes beyond it
    /// fail, e.g. 1Gi.
    #[arg(long)]
    disk: Option<String>,
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

fn resolve_user(user: &str) -> Result<u32> {
    if let Ok(uid) = user.parse() {
        return Ok(uid);
    }
    let passwd = std::fs::read_to_string("/etc/passwd").context("cannot read /etc/passwd")?;
    passwd
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            (fields.next()? == user).then(|| fields.nth(1)?.parse().ok())?
        })
        .ok_or_else(|| anyhow!("--user: no user named {user:?}"))
}

pub(crate) async fn run(args: RunArgs, connection: &Connection) -> Result<()> {
    if args.command.is_empty() && args.image.is_none() {
        bail!("give a command to run (c4m run -- COMMAND ARGS...) or --image");
    }
    let base = args
        .name
        .clone()
        .or_else(|| {
            let program = args.command.first().or(args.image.as_ref())?;
            let stem = Path::new(program.split(':').next()?)
                .file_name()?
                .to_string_lossy()
                .to_ascii_lowercase();
            let clean: String = stem
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect();
            Some(format!(
                "{}-{}",
                clean.trim_matches('-'),
                &uuid::Uuid::new_v4().simple().to_string()[..5]
            ))
        })
        .ok_or_else(|| anyhow!("--name is required"))?;
    let mut limits = serde_json::Map::new();
    if let Some(memory) = &args.memory {
        c4m_core::parse_memory_bytes(memory).context("--memory")?;
        limits.insert("memory".into(), json!(memory));
    }
    if let Some(cpu) = &args.cpu {
        c4m_core::parse_cpu_millis(cpu).context("--cpu")?;
        limits.insert("cpu".into(), json!(cpu));
    }
    if let Some(disk) = &args.disk {
        c4m_core::parse_memory_bytes(disk).context("--disk")?;
        limits.insert("ephemeral-storage".into(), json!(disk));
    }
    let ports: Vec<Value> = args
        .ports
        .iter()
        .map(|p| {
            let (name, number) = p.split_once(':').unwrap_or(("", p));
            let number: u16 = number
                .parse()
                .map_err(|_| anyhow!("--port {p:?}: expected NAME:PORT or PORT"))?;
            Ok(if name.is_empty() {
                json!({"containerPort": number})
            } else {
                json!({"name": name, "containerPort": number})
            })
        })
        .collect::<Result<_>>()?;
    let mut spec = json!({
        "replicas": args.replicas,
        "driver": args.driver,
        "env": args.env.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
    });
    if let Some((program, rest)) = args.command.split_first() {
        spec["command"] = json!([program]);
        spec["args"] = json!(rest);
    }
    if let Some(image) = &args.image {
        spec["image"] = json!(image);
    }
    if !limits.is_empty() {
        spec["resources"] = json!({"limits": limits});
    }
    if !ports.is_empty() {
        spec["ports"] = json!(ports);
    }
    if let Some(dir) = &args.dir {
        spec["workingDir"] = json!(dir);
    }
    if let Some(user) = &args.user {
        spec["user"] = json!(resolve_user(user)?);
    }
    if !args.volumes.is_empty() {
        let client = connection.client()?;
        let (mut volumes, mut mounts) = (Vec::new(), Vec::new());
        for (i, given) in args.volumes.iter().enumerate() {
            let (volume, path) = given
                .split_once(':')
                .filter(|(v, p)| !v.is_empty() && p.starts_with('/'))
                .ok_or_else(|| anyhow!("--volume {given:?}: expected NAME_OR_ID:/PATH"))?;
            let claim = crate::volumes::claim_name(&client, &args.namespace, volume).await?;
            let name = format!("volume-{i}");
            volumes.push(json!({"name": name, "persistentVolumeClaim": {"claimName": claim}}));
            mounts.push(json!({"name": name, "mountPath": path}));
        }
        spec["volumes"] = json!(volumes);
        spec["volumeMounts"] = json!(mounts);
    }
    let object = json!({
        "apiVersion": "c4m.io/v1",
        "kind": "Microservice",
        "metadata": {"name": base, "namespace": args.namespace},
        "spec": spec,
    });
    let document = c4m_core::Document {
        source: "c4m run".into(),
        index: 1,
        value: object.clone(),
    };
    c4m_core::validate(&document)?;
    connection
        .client()?
        .create(kind("microservices")?, Some(&args.namespace), &object)
        .await?;
    println!("microservice/{base} created");
    Ok(())
}

/// `c4m wait`.
#[derive(Args)]
pub(crate) struct WaitArgs {
    /// Give up after this long.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    timeout: Duration,
    #[arg(short, long, default_value = "default")]
    namespace: String,
}

pub(crate) async fn wait(args: WaitArgs, connection: &Connection) -> Result<()> {
    let client = connection.client()?;
    let started = Instant::now();
    loop {
        let mut waiting = Vec::new();
        for kind_name in ["microservices", "deployments"] {
            let list = client
                .list(kind(kind_name)?, Some(&args.namespace), None)
                .await?;
            for item in list["items"].as_array().into_iter().flatten() {
                let want = item["spec"]["replicas"].as_i64().unwrap_or(1);
                let ready = item["status"]["readyReplicas"].as_i64().unwrap_or(0);
                let total = item["status"]["replicas"].as_i64().unwrap_or(0);
                if ready < want || total != want {
                    waiting.push(format!(
                        "{}/{} ({ready}/{want} ready)",
                        kind_name.trim_end_matches('s'),
                        item["metadata"]["name"].as_str().unwrap_or_default()
                    ));
                }
            }
        }
        if waiting.is_empty() {
            println!("all workloads in namespace {} are ready", args.namespace);
            return Ok(());
        }
        if started.elapsed() > args.timeout {
            bail!(
                "timed out after {:?} waiting for {}",
                args.timeout,
                waiting.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
