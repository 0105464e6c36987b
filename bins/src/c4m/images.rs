//! `c4m image`: a node's image store (what the `oci` driver runs), reached
//! through the control plane, which proxies to the node's agent.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use crate::commands::Connection;

/// `c4m image`.
#[derive(Args)]
pub(crate) struct ImageArgs {
    /// The node whose store to use (default: the only node).
    #[arg(long, global = true)]
    node: Option<String>,
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(Subcommand)]
enum ImageCommand {
    /// List the node's images.
    Ls,
    /// Import an OCI image layout tar or a docker archive (`docker save`).
    Import {
        /// The archive.
        file: PathBuf,
        /// Repository for images the archive names only by tag (default:
        /// the file name without extension).
        #[arg(long)]
        name: Option<String>,
    },
    /// Build an image here, with no registry: a static busybox (shell and
    /// tools) plus host executables, each with the shared libraries it
    /// loads, then import it onto the node.
    Build {
        /// `name[:tag]` of the image (tag default: `latest`).
        name: String,
        /// The static busybox to build on (Debian: busybox-static).
        #[arg(long, default_value = "/bin/busybox")]
        busybox: PathBuf,
        /// A host executable to add as /bin/NAME (repeat for more).
        #[arg(long = "add", value_name = "EXECUTABLE")]
        executables: Vec<PathBuf>,
    },
    /// Pull an image from its registry onto the node (loopback registries
    /// over HTTP, others over HTTPS).
    Pull {
        /// `registry/repository:tag` or `registry/repository@sha256:...`.
        reference: String,
        /// Registry user name.
        #[arg(long, requires = "password_env")]
        username: Option<String>,
        /// Environment variable holding the registry password.
        #[arg(long, default_value = "C4M_REGISTRY_PASSWORD")]
        password_env: String,
    },
    /// Remove an image by name (untag) or digest, then collect unused
    /// layers.
    Rm {
        /// `name[:tag]`, `sha256:...` or a digest prefix.
        reference: String,
    },
}

pub(crate) async fn image(args: ImageArgs, connection: &Connection) -> Result<()> {
    let client = connection.client()?;
    let node = match args.node {
        Some(node) => node,
        None => only_node(&client).await?,
    };
    match args.command {
        ImageCommand::Ls => {
            let images = client.node_images(&node).await?;
            let mut rows = vec![vec![
                "NAME".to_string(),
                "ID".to_string(),
                "LAYERS".to_string(),
                "SIZE".to_string(),
            ]];
            for image in images {
                // The digest comes from the node: never slice past its end.
                let id = image
                    .digest
                    .strip_prefix("sha256:")
                    .and_then(|hex| hex.get(..c4m_image::SHORT_ID_LEN))
                    .unwrap_or(&image.digest)
                    .to_string();
                let names = if image.names.is_empty() {
                    vec!["<none>".to_string()]
                } else {
                    image.names.clone()
                };
                for name in names {
                    rows.push(vec![
                        name,
                        id.clone(),
                        image.layers.len().to_string(),
                        c4m_core::format_memory_bytes(image.size),
                    ]);
                }
            }
            print!("{}", crate::output::columns(&rows));
        }
        ImageCommand::Import { file, name } => {
            let name = match name {
                Some(name) => name,
                None => file
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .map(str::to_ascii_lowercase)
                    .context("give the image a name with --name")?,
            };
            let archive = tokio::fs::File::open(&file)
                .await
                .with_context(|| format!("open {}", file.display()))?;
            let images = client
                .import_image(&node, &name, reqwest::Body::from(archive))
                .await?;
            print_imported(images);
        }
        ImageCommand::Build {
            name,
            busybox,
            executables,
        } => {
            let (repository, tag) = match name.rsplit_once(':') {
                Some((repository, tag)) if !tag.contains('/') => (repository, tag),
                _ => (name.as_str(), "latest"),
            };
            let executables: Vec<&std::path::Path> =
                executables.iter().map(PathBuf::as_path).collect();
            let archive = c4m_image::busybox_image_tar(&busybox, &executables, tag)
                .with_context(|| format!("build image {name}"))?;
            let images = client
                .import_image(&node, repository, reqwest::Body::from(archive))
                .await?;
            print_imported(images);
        }
        ImageCommand::Pull {
            reference,
            username,
            password_env,
        } => {
            let password = match &username {
                Some(_) => std::env::var(&password_env)
                    .with_context(|| format!("--username needs the password in ${password_env}"))?,
                None => String::new(),
            };
            let spinner = indicatif::ProgressBar::new_spinner();
            spinner.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            spinner.set_message(format!("pulling {reference} onto {node}"));
            spinner.enable_steady_tick(std::time::Duration::from_millis(100));
            let credentials = username.as_deref().map(|user| (user, password.as_str()));
            let pulled = client.pull_image(&node, &reference, credentials).await;
            spinner.finish_and_clear();
            let image = pulled?;
            println!(
                "pulled {} {} ({} layers, {})",
                reference,
                image.digest,
                image.layers.len(),
                c4m_core::format_memory_bytes(image.size)
            );
        }
        ImageCommand::Rm { reference } => {
            let image = client.remove_image(&node, &reference).await?;
            println!("removed {reference} ({})", image.digest);
        }
    }
    Ok(())
}

fn print_imported(images: Vec<c4m_core::Image>) {
    for image in images {
        println!("imported {} {}", image.names.join(" "), image.digest);
    }
}

/// The cluster's node when there is exactly one.
async fn only_node(client: &c4m_api::Client) -> Result<String> {
    let nodes = client
        .list(crate::commands::kind("nodes")?, None, None)
        .await?;
    let names: Vec<String> = nodes["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|node| node["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    match &names[..] {
        [one] => Ok(one.clone()),
        [] => bail!("no node has joined the cluster"),
        _ => bail!("several nodes ({}): pick one with --node", names.join(", ")),
    }
}
