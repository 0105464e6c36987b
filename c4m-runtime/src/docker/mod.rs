//! The `docker` driver: containers run by a Docker Engine, spoken to over
//! its unix socket with bollard.
//!
//! The daemon keeps everything: a container `c4m-<id>` carries the labels
//! `io.c4m.container=<id>` and `io.c4m.spec=<the spec as JSON>` (and
//! `io.c4m.node=<node>` with [`DockerRuntime::for_node`]), so a new agent
//! rebuilds each [`ContainerStatus`] (with its spec) from `inspect` alone
//! and nothing is kept on the node's disk. Containers outlive the
//! agent as they outlive any Docker client.
//!
//! Networking: Docker cannot join a network namespace given by path (only
//! another container's), so this driver does not take the agent's per-instance
//! namespace ([`ContainerRuntime::takes_network_namespace`] is false) and
//! runs containers with `network_mode: host`, as the `process` driver runs
//! processes: a declared port is bound on the node itself.

mod create;
mod exec;
mod inspect;
mod logs;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectContainerOptions, ListContainersOptions,
    LogsOptions, RemoveContainerOptions, StatsOptions, StopContainerOptions,
};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use crate::state;
use crate::{Error, Result};
use c4m_core::Reference;
use c4m_core::{
    ContainerRuntime, ContainerSpec, ContainerStatus, ExecOutput, ExecRequest, ExecSession,
    LogOptions, ResourceUsage,
};

/// The label holding the c4m container id.
const ID_LABEL: &str = "io.c4m.container";
/// The label holding the [`ContainerSpec`] as JSON.
const SPEC_LABEL: &str = "io.c4m.spec";
/// The label naming the node whose agent started the container.
const NODE_LABEL: &str = "io.c4m.node";
/// How long a request may wait for the daemon's answer (bollard's timeout
/// covers the response head, not a streamed body).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long past its grace a stop may take: the daemon kills, then waits.
const STOP_MARGIN: Duration = Duration::from_secs(30);

/// The `docker` driver. See the module docs.
#[derive(Clone)]
pub struct DockerRuntime {
    docker: Docker,
    socket: PathBuf,
    engine_version: String,
    host_address: IpAddr,
    /// The node whose containers this driver lists, if it keeps to one.
    node: Option<String>,
}

impl std::fmt::Debug for DockerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerRuntime")
            .field("socket", &self.socket)
            .field("engine_version", &self.engine_version)
            .finish_non_exhaustive()
    }
}

/// The Docker container name of c4m container `id`.
fn container_name(id: &str) -> String {
    format!("c4m-{id}")
}

impl DockerRuntime {
    /// Connects to the Docker Engine listening on `socket`, agreeing on the
    /// API version the engine speaks. Fails, naming the socket, when no
    /// engine answers there.
    pub async fn connect(socket: &Path) -> Result<DockerRuntime> {
        let unreachable =
            |source: c4m_core::BoxError| Error::daemon_unreachable("docker", socket, source);
        let address = socket
            .to_str()
            .ok_or_else(|| unreachable("the socket path is not UTF-8".into()))?;
        let docker = Docker::connect_with_unix(
            address,
            REQUEST_TIMEOUT.as_secs(),
            bollard::API_DEFAULT_VERSION,
        )
        .map_err(|e| unreachable(e.into()))?
        .negotiate_version()
        .await
        .map_err(|e| unreachable(e.into()))?;
        let version = docker.version().await.map_err(|e| unreachable(e.into()))?;
        Ok(DockerRuntime {
            docker,
            socket: socket.to_path_buf(),
            engine_version: version.version.unwrap_or_else(|| "unknown".into()),
            host_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            node: None,
        })
    }

    /// Labels the containers it starts with `node` and lists only those:
    /// agents of several nodes (or clusters) may share one daemon, and
    /// each must adopt, and remove, only its own.
    #[must_use]
    pub fn for_node(mut self, node: &str) -> DockerRuntime {
        self.node = Some(node.to_string());
        self
    }

    /// Reports declared ports as reachable at `address` (the node's), where
    /// host networking binds them. Loopback by default.
    #[must_use]
    pub fn with_host_address(mut self, address: IpAddr) -> DockerRuntime {
        self.host_address = address;
        self
    }

    /// Turns a bollard error about container `id` into c4m's: a missing
    /// container is [`Error::ContainerNotFound`], a daemon that does not
    /// answer [`Error::DaemonUnreachable`].
    fn error(&self, id: &str, error: DockerError) -> Error {
        match error {
            DockerError::DockerResponseServerError {
                status_code: 404,
                message,
            } if message.contains("No such container") => Error::ContainerNotFound(id.into()),
            DockerError::SocketNotFoundError(_)
            | DockerError::HyperLegacyError { .. }
            | DockerError::IOError { .. }
            | DockerError::RequestTimeoutError => {
                Error::daemon_unreachable("docker", &self.socket, error)
            }
            other => Error::container(id, "docker", other),
        }
    }

    async fn inspect(&self, id: &str) -> Result<bollard::models::ContainerInspectResponse> {
        state::check_id(id)?;
        self.docker
            .inspect_container(&container_name(id), None::<InspectContainerOptions>)
            .await
            .map_err(|e| self.error(id, e))
    }

    /// The image `reference` as the daemon has it, pulled as `spec`'s
    /// `imagePullPolicy` says (with its registry login, if any).
    async fn ensure_image(
        &self,
        spec: &ContainerSpec,
        reference: &Reference,
    ) -> Result<bollard::models::ImageInspect> {
        let id = spec.id.as_str();
        let name = reference.to_string();
        if spec.pull_policy != c4m_core::PullPolicy::Always {
            match self.docker.inspect_image(&name).await {
                Ok(image) => return Ok(image),
                Err(DockerError::DockerResponseServerError {
                    status_code: 404, ..
                }) if spec.pull_policy == c4m_core::PullPolicy::Never => {
                    return Err(Error::ImageNeverPull { reference: name });
                }
                Err(DockerError::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(e) => return Err(self.error(id, e)),
            }
        }
        let credentials =
            spec.pull_credentials
                .as_ref()
                .map(|login| bollard::auth::DockerCredentials {
                    username: Some(login.username.clone()),
                    password: Some(login.password.clone()),
                    serveraddress: Some(reference.registry.clone()),
                    ..Default::default()
                });
        let options = CreateImageOptions {
            from_image: Some(reference.name()),
            // A digest is pulled by digest; never an empty tag, which pulls
            // every tag of the repository.
            tag: reference.digest.clone().or_else(|| reference.tag.clone()),
            ..Default::default()
        };
        // The daemon's answer is the cause, without the id twice.
        let failed = |what: String, error: DockerError| match self.error(id, error) {
            unreachable @ Error::DaemonUnreachable { .. } => unreachable,
            Error::Container { source, .. } => Error::container(id, what, source),
            other => Error::container(id, what, other),
        };
        self.docker
            .create_image(Some(options), None, credentials)
            .try_for_each(|_progress| futures::future::ready(Ok(())))
            .await
            .map_err(|e| match self.error(id, e) {
                unreachable @ Error::DaemonUnreachable { .. } => unreachable,
                // The kubelet's ErrImagePull, then ImagePullBackOff.
                Error::Container { source, .. } => Error::Image {
                    reference: name.clone(),
                    source: format!("not on the docker daemon and pulling it failed: {source}")
                        .into(),
                },
                other => Error::Image {
                    reference: name.clone(),
                    source: other.into(),
                },
            })?;
        self.docker.inspect_image(&name).await.map_err(|e| {
            failed(
                format!("image {name} was pulled, but inspecting it failed"),
                e,
            )
        })
    }

    /// Creates and starts container `spec.id` from scratch.
    async fn create_and_start(&self, spec: &ContainerSpec) -> Result<()> {
        let id = spec.id.as_str();
        let image = spec.image.as_deref().ok_or_else(|| Error::Runtime {
            id: id.into(),
            message: "the docker driver needs an image".into(),
        })?;
        let reference = Reference::parse(image).map_err(|e| Error::Image {
            reference: image.to_string(),
            source: Box::new(e),
        })?;
        let image = self.ensure_image(spec, &reference).await?;
        let body = create::container_body(
            spec,
            self.node.as_deref(),
            &reference.to_string(),
            image.config.as_ref(),
        )?;
        let name = container_name(id);
        self.docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(|e| self.error(id, e))?;
        if let Err(e) = self.docker.start_container(&name, None).await {
            let error = self.error(id, e);
            // Leave nothing half made behind: the next start begins afresh.
            if let Err(cleanup) = self.remove(id).await {
                tracing::warn!(container = %id, error = %cleanup, "cleanup after a failed start");
            }
            return Err(error);
        }
        Ok(())
    }
}

#[async_trait]
impl ContainerRuntime for DockerRuntime {
    fn name(&self) -> &str {
        "docker"
    }

    fn version(&self) -> String {
        self.engine_version.clone()
    }

    async fn start(&self, spec: &ContainerSpec) -> Result<ContainerStatus> {
        crate::refuse_unsupported("docker", spec, true, false)?;
        let id = spec.id.as_str();
        match self.inspect(id).await {
            Ok(previous) => {
                if previous.state.as_ref().and_then(|s| s.running) == Some(true) {
                    return Err(Error::Runtime {
                        id: id.into(),
                        message: "already running".into(),
                    });
                }
                // A restart is a new container, as Kubernetes restarts
                // them: a fresh writable layer, the spec given now.
                self.remove(id).await?;
            }
            Err(Error::ContainerNotFound(_)) => {}
            Err(e) => return Err(e),
        }
        self.create_and_start(spec).await?;
        self.status(id).await
    }

    async fn status(&self, id: &str) -> Result<ContainerStatus> {
        let inspected = self.inspect(id).await?;
        inspect::status(id, &inspected, self.host_address)
    }

    async fn list(&self) -> Result<Vec<ContainerStatus>> {
        let label = match &self.node {
            Some(node) => format!("{NODE_LABEL}={node}"),
            None => ID_LABEL.to_string(),
        };
        let filters = HashMap::from([("label".to_string(), vec![label])]);
        let summaries = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|e| self.error("*", e))?;
        let mut statuses = Vec::new();
        for summary in summaries {
            let Some(id) = summary.labels.as_ref().and_then(|l| l.get(ID_LABEL)) else {
                continue;
            };
            match self.status(id).await {
                Ok(status) => statuses.push(status),
                // Removed since the listing.
                Err(Error::ContainerNotFound(_)) => {}
                Err(e) => tracing::warn!(container = %id, error = %e, "skipping container"),
            }
        }
        statuses.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(statuses)
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<()> {
        state::check_id(id)?;
        // The API counts whole seconds; a part of one is a whole one.
        let seconds = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        let docker = self
            .docker
            .clone()
            .with_timeout(REQUEST_TIMEOUT.max(grace + STOP_MARGIN));
        docker
            .stop_container(
                &container_name(id),
                Some(StopContainerOptions {
                    t: Some(i32::try_from(seconds).unwrap_or(i32::MAX)),
                    signal: None,
                }),
            )
            .await
            .map_err(|e| self.error(id, e))
    }

    async fn remove(&self, id: &str) -> Result<()> {
        state::check_id(id)?;
        let removed = self
            .docker
            .remove_container(
                &container_name(id),
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                }),
            )
            .await;
        match removed {
            Ok(()) => Ok(()),
            // Already being removed by an earlier call: the daemon's 409
            // says so only in its text.
            Err(DockerError::DockerResponseServerError {
                status_code: 409,
                message,
            }) if message.contains("already in progress") => Ok(()),
            Err(e) => match self.error(id, e) {
                Error::ContainerNotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn stats(&self, id: &str) -> Result<ResourceUsage> {
        state::check_id(id)?;
        let stats = self
            .docker
            .stats(
                &container_name(id),
                Some(StatsOptions {
                    stream: false,
                    one_shot: true,
                }),
            )
            .next()
            .await
            .ok_or_else(|| Error::Runtime {
                id: id.into(),
                message: "docker: the stats answer was empty".into(),
            })?
            .map_err(|e| self.error(id, e))?;
        Ok(inspect::usage(&stats))
    }

    async fn logs(
        &self,
        id: &str,
        options: LogOptions,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        // Asked first, so an unknown id is an error rather than an empty
        // stream.
        self.inspect(id).await?;
        let since = options
            .since
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| i32::try_from(d.as_secs()).unwrap_or(i32::MAX));
        let frames = self.docker.logs(
            &container_name(id),
            Some(LogsOptions {
                follow: options.follow,
                stdout: true,
                stderr: true,
                // Whole seconds here; `logs::decode` drops what is older
                // than the exact time.
                since,
                until: 0,
                // Always dated: `since` needs each record's time.
                timestamps: true,
                tail: options
                    .tail_lines
                    .map_or_else(|| "all".to_string(), |n| n.to_string()),
            }),
        );
        let this = self.clone();
        let id = id.to_string();
        Ok(logs::decode(
            frames.map_err(move |e| this.error(&id, e)).boxed(),
            &options,
        )
        .boxed())
    }

    async fn exec(&self, id: &str, command: &[String], timeout: Duration) -> Result<ExecOutput> {
        exec::run(self, id, command, timeout).await
    }

    async fn exec_interactive(&self, id: &str, request: ExecRequest) -> Result<ExecSession> {
        exec::interactive(self, id, request).await
    }
}
