//! `c4m kubeconfig`: a kubeconfig for kubectl and the Kubernetes client
//! libraries, with the same endpoint and bearer token the CLI uses.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::commands::Connection;

/// `c4m kubeconfig` flags.
#[derive(Args)]
pub struct KubeconfigArgs {
    /// Name of the cluster, user and context in the kubeconfig.
    #[arg(long, default_value = "c4m")]
    context: String,
    /// Namespace kubectl uses when none is given.
    #[arg(long, short = 'n', default_value = "default")]
    namespace: String,
}

/// Prints the kubeconfig to stdout.
pub fn print(args: KubeconfigArgs, connection: &Connection) -> Result<()> {
    let (endpoint, credentials) = connection.resolve()?;
    print!(
        "{}",
        render(&args, &endpoint, credentials.map(|c| c.bearer()))
    );
    Ok(())
}

/// The kubeconfig YAML. Without a token (a `--dev` control plane) the user
/// entry is empty.
fn render(args: &KubeconfigArgs, endpoint: &str, token: Option<String>) -> String {
    let user = match token {
        Some(token) => json!({"token": token}),
        None => json!({}),
    };
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": args.context, "cluster": {"server": endpoint}}],
        "users": [{"name": args.context, "user": user}],
        "contexts": [{"name": args.context, "context": {
            "cluster": args.context, "user": args.context, "namespace": args.namespace,
        }}],
        "current-context": args.context,
    });
    // serde_json's Value always serialises to YAML.
    let yaml = serde_yaml::to_string(&config).unwrap_or_default();
    let mut out = String::new();
    if endpoint.starts_with("http://") {
        out.push_str(
            "# c4m's API is plain HTTP (meant for loopback or a trusted network):\n\
             # the token below travels unencrypted. TLS comes later.\n",
        );
    }
    out + &yaml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_names_endpoint_and_token() {
        let args = KubeconfigArgs {
            context: "c4m".into(),
            namespace: "default".into(),
        };
        let text = render(&args, "http://127.0.0.1:8140", Some("id.secret".into()));
        let config: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(
            config["clusters"][0]["cluster"]["server"],
            "http://127.0.0.1:8140"
        );
        assert_eq!(config["users"][0]["user"]["token"], "id.secret");
        assert_eq!(config["current-context"], "c4m");
        assert!(text.starts_with("# c4m's API is plain HTTP"));
        let anonymous = render(&args, "http://127.0.0.1:8140", None);
        let config: serde_json::Value = serde_yaml::from_str(&anonymous).unwrap();
        assert_eq!(config["users"][0]["user"], serde_json::json!({}));
    }
}
