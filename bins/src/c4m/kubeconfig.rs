//! `c4m kubeconfig`: a kubeconfig for kubectl and the Kubernetes client
//! libraries, with the same endpoint and bearer token the CLI uses.

use anyhow::{Context, Result};
use base64::prelude::{BASE64_STANDARD, Engine};
use c4m_api::Client;
use clap::Args;
use serde_json::json;

use crate::commands::Connection;

/// `c4m kubeconfig` flags.
#[derive(Args)]
pub(crate) struct KubeconfigArgs {
    /// Name of the cluster, user and context in the kubeconfig.
    #[arg(long, default_value = "c4m")]
    context: String,
    /// Namespace kubectl uses when none is given.
    #[arg(long, short = 'n', default_value = "default")]
    namespace: String,
}

/// Prints the kubeconfig to stdout: the API's HTTPS endpoint with its
/// certificate as the authority when it has one (kubectl sends tokens only
/// over TLS), else its plain HTTP endpoint.
pub(crate) async fn print(args: KubeconfigArgs, connection: &Connection) -> Result<()> {
    let (endpoint, credentials) = connection.resolve()?;
    let client = Client::new(&endpoint, credentials.as_ref())?;
    let certificate = client
        .tls_certificate()
        .await
        .context("cannot fetch the API's TLS certificate")?;
    let token = credentials.map(|c| c.bearer());
    print!(
        "{}",
        render(&args, &endpoint, certificate.as_deref(), token)
    );
    Ok(())
}

/// The kubeconfig YAML. Without a token (a `--dev` control plane) the user
/// entry is empty.
fn render(
    args: &KubeconfigArgs,
    endpoint: &str,
    certificate_pem: Option<&str>,
    token: Option<String>,
) -> String {
    let user = match token {
        Some(token) => json!({"token": token}),
        None => json!({}),
    };
    let cluster = match certificate_pem {
        Some(pem) => json!({
            "server": endpoint.replacen("http://", "https://", 1),
            "certificate-authority-data": BASE64_STANDARD.encode(pem),
        }),
        None => json!({"server": endpoint}),
    };
    let plain_http = cluster["server"]
        .as_str()
        .is_some_and(|s| s.starts_with("http://"));
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": args.context, "cluster": cluster}],
        "users": [{"name": args.context, "user": user}],
        "contexts": [{"name": args.context, "context": {
            "cluster": args.context, "user": args.context, "namespace": args.namespace,
        }}],
        "current-context": args.context,
    });
    // serde_json's Value always serialises to YAML.
    let yaml = serde_yaml::to_string(&config).unwrap_or_default();
    if plain_http {
        "# c4m's API serves only plain HTTP here: kubectl sends no token over it,\n\
         # so this works only with a control plane started with --dev.\n"
            .to_string()
            + &yaml
    } else {
        yaml
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_names_endpoint_authority_and_token() {
        let args = KubeconfigArgs {
            context: "c4m".into(),
            namespace: "default".into(),
        };
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let token = Some("id.secret".to_string());
        let text = render(&args, "http://127.0.0.1:8140", Some(pem), token);
        let config: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        let cluster = &config["clusters"][0]["cluster"];
        assert_eq!(cluster["server"], "https://127.0.0.1:8140");
        let authority = cluster["certificate-authority-data"].as_str().unwrap();
        assert_eq!(BASE64_STANDARD.decode(authority).unwrap(), pem.as_bytes());
        assert_eq!(config["users"][0]["user"]["token"], "id.secret");
        assert_eq!(config["current-context"], "c4m");
        assert!(!text.starts_with('#'));
        let anonymous = render(&args, "http://127.0.0.1:8140", None, None);
        assert!(anonymous.starts_with("# c4m's API serves only plain HTTP"));
        let config: serde_json::Value = serde_yaml::from_str(&anonymous).unwrap();
        assert_eq!(config["users"][0]["user"], json!({}));
    }
}
