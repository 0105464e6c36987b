//! `c4m expose`: a Service for a workload, an instance or a Service, as
//! `kubectl expose` makes one: the object's selector (an instance's
//! labels; a Microservice's own label), the port given or the ports its
//! containers declare (named `port-N` when several), the target port given
//! or the port itself, the object's labels.

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use serde_json::{Map, Value, json};

use crate::commands::{Connection, kind};

/// `c4m expose`.
#[derive(Args)]
pub(crate) struct ExposeArgs {
    /// What to expose: deployment, replicaset, microservice, pod (instance)
    /// or service.
    kind: String,
    /// Its name.
    #[arg(value_name = "NAME")]
    object: String,
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// The Service's port [default: the ports the containers declare].
    #[arg(long)]
    port: Option<u16>,
    /// The port (number or name) traffic goes to in the instances [default:
    /// the Service's port].
    #[arg(long)]
    target_port: Option<String>,
    /// ClusterIP, NodePort, LoadBalancer or ExternalName.
    #[arg(long = "type")]
    service_type: Option<String>,
    /// The Service's name [default: the exposed object's].
    #[arg(long = "name")]
    service_name: Option<String>,
    /// TCP, UDP or SCTP [default: the container port's, else TCP].
    #[arg(long)]
    protocol: Option<String>,
    /// The Service's selector (`k=v,k2=v2`) [default: the object's].
    #[arg(short = 'l', long)]
    selector: Option<String>,
}

/// The selector of the instances `object` (of `kind`) stands for.
fn selector_of(kind: &str, object: &Value) -> Result<Map<String, Value>> {
    let map = |value: &Value| value.as_object().cloned().unwrap_or_default();
    Ok(match kind {
        "Pod" => map(&object["metadata"]["labels"]),
        "Service" => map(&object["spec"]["selector"]),
        "Microservice" => {
            let name = object["metadata"]["name"].as_str().unwrap_or_default();
            Map::from_iter([(c4m_core::labels::MICROSERVICE.to_string(), json!(name))])
        }
        "Deployment" | "ReplicaSet" => {
            let selector = &object["spec"]["selector"];
            if selector["matchExpressions"]
                .as_array()
                .is_some_and(|e| !e.is_empty())
            {
                bail!(
                    "couldn't convert expressions - {} to map-based selector format",
                    selector["matchExpressions"]
                );
            }
            map(&selector["matchLabels"])
        }
        other => bail!(
            "cannot expose a {other}: expose a deployment, replicaset, microservice, pod or service"
        ),
    })
}

/// The (port, protocol) pairs `object` declares.
fn ports_of(kind: &str, object: &Value) -> Vec<(u64, String)> {
    let pair = |p: &Value, field: &str| {
        Some((
            p[field].as_u64()?,
            p["protocol"].as_str().unwrap_or("TCP").to_string(),
        ))
    };
    let containers = |spec: &Value| -> Vec<(u64, String)> {
        spec["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| pair(&p, "containerPort"))
            .collect()
    };
    match kind {
        "Pod" => containers(&object["spec"]),
        "Deployment" | "ReplicaSet" => containers(&object["spec"]["template"]["spec"]),
        "Service" => object["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| pair(p, "port"))
            .collect(),
        "Microservice" => object["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| pair(p, "containerPort"))
            .collect(),
        _ => Vec::new(),
    }
}

/// The Service `kubectl expose` would make for `object` (of `kind`).
fn service_for(kind: &str, object: &Value, args: &ExposeArgs) -> Result<Value> {
    let selector = match &args.selector {
        Some(text) => text
            .split(',')
            .map(|pair| {
                let (k, v) = pair
                    .split_once('=')
                    .ok_or_else(|| anyhow!("--selector {text:?}: expected k=v,k2=v2"))?;
                Ok((k.trim().to_string(), json!(v.trim())))
            })
            .collect::<Result<Map<_, _>>>()?,
        None => selector_of(kind, object)?,
    };
    if selector.is_empty() {
        bail!(
            "couldn't retrieve selectors via --selector flag or introspection: the {} has none",
            kind.to_ascii_lowercase()
        );
    }
    let declared = match args.port {
        Some(port) => vec![(
            u64::from(port),
            ports_of(kind, object)
                .into_iter()
                .find(|(p, _)| *p == u64::from(port))
                .map_or_else(|| "TCP".to_string(), |(_, protocol)| protocol),
        )],
        None => ports_of(kind, object),
    };
    if declared.is_empty() {
        bail!("couldn't find port via --port flag or introspection");
    }
    let target = args.target_port.as_ref().map(|t| match t.parse::<u64>() {
        Ok(number) => json!(number),
        Err(_) => json!(t),
    });
    let several = declared.len() > 1;
    let ports: Vec<Value> = declared
        .iter()
        .enumerate()
        .map(|(i, (port, protocol))| {
            let mut entry = json!({
                "port": port,
                "protocol": args.protocol.as_deref().unwrap_or(protocol),
                "targetPort": target.clone().unwrap_or(json!(port)),
            });
            if several {
                entry["name"] = json!(format!("port-{}", i + 1));
            }
            entry
        })
        .collect();
    let name = args.service_name.as_deref().unwrap_or(&args.object);
    let mut metadata = json!({"name": name, "namespace": args.namespace});
    if let Some(labels) = object["metadata"]["labels"].as_object()
        && !labels.is_empty()
    {
        metadata["labels"] = json!(labels);
    }
    let mut spec = json!({"ports": ports, "selector": selector});
    if let Some(service_type) = &args.service_type {
        spec["type"] = json!(service_type);
    }
    Ok(json!({"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": spec}))
}

pub(crate) async fn expose(args: ExposeArgs, connection: &Connection) -> Result<()> {
    let exposed = kind(&args.kind)?;
    let client = connection.client()?;
    let object = client
        .get(exposed, Some(&args.namespace), &args.object)
        .await
        .with_context(|| format!("cannot read {} {}", exposed.plural, args.object))?;
    let service = service_for(exposed.kind, &object, &args)?;
    let document = c4m_core::Document {
        source: "c4m expose".into(),
        index: 1,
        value: service.clone(),
    };
    c4m_core::validate(&document)?;
    client
        .create(kind("services")?, Some(&args.namespace), &service)
        .await?;
    println!(
        "service/{} exposed",
        service["metadata"]["name"].as_str().unwrap_or_default()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> ExposeArgs {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            expose: ExposeArgs,
        }
        use clap::Parser;
        let argv = [&["c4m", "deployment", "web"][..], extra].concat();
        Cli::parse_from(argv).expose
    }

    fn deployment() -> Value {
        json!({"metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                "template": {"spec": {"containers": [{"name": "c", "ports": [
                    {"containerPort": 8080}, {"containerPort": 9090, "protocol": "UDP"}]}]}}}})
    }

    #[test]
    fn a_deployment_is_exposed_as_kubectl_exposes_it() {
        let service = service_for(
            "Deployment",
            &deployment(),
            &args(&[
                "--port",
                "80",
                "--target-port",
                "8080",
                "--type",
                "NodePort",
            ]),
        )
        .unwrap();
        assert_eq!(
            service,
            json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
                "spec": {"type": "NodePort", "selector": {"app": "web"},
                    "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}]}})
        );
        // Without --port: every declared port, named port-N.
        let service = service_for("Deployment", &deployment(), &args(&[])).unwrap();
        assert_eq!(
            service["spec"]["ports"],
            json!([{"name": "port-1", "port": 8080, "protocol": "TCP", "targetPort": 8080},
                {"name": "port-2", "port": 9090, "protocol": "UDP", "targetPort": 9090}])
        );
    }

    #[test]
    fn selectors_come_from_the_object_or_the_flag() {
        let ms = json!({"metadata": {"name": "api"}, "spec": {"ports": [{"containerPort": 7070}]}});
        let service = service_for("Microservice", &ms, &args(&["--name", "api-svc"])).unwrap();
        assert_eq!(
            service["spec"]["selector"],
            json!({"c4m.io/microservice": "api"})
        );
        assert_eq!(service["metadata"]["name"], "api-svc");
        let pod = json!({"metadata": {"name": "p", "labels": {"run": "p"}},
            "spec": {"containers": [{"name": "c"}]}});
        let error = service_for("Pod", &pod, &args(&[]))
            .unwrap_err()
            .to_string();
        assert_eq!(error, "couldn't find port via --port flag or introspection");
        let service = service_for("Pod", &pod, &args(&["--port", "80", "-l", "a=b,c=d"])).unwrap();
        assert_eq!(service["spec"]["selector"], json!({"a": "b", "c": "d"}));
        let mut expressions = deployment();
        expressions["spec"]["selector"] =
            json!({"matchExpressions": [{"key": "a", "operator": "Exists"}]});
        assert!(service_for("Deployment", &expressions, &args(&["--port", "80"])).is_err());
    }
}
