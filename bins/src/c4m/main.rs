//! `c4m`: the command-line interface, and the control plane and agent
//! daemons (`c4m up`, `c4m control`, `c4m agent`; the agent also comes
//! alone as `c4m-agent`).

mod commands;
mod daemons;
mod expose;
mod images;
mod kubeconfig;
mod output;
mod policy;
mod streams;
mod volumes;
mod vpc;

use std::process::ExitCode;

use c4m_bins::Shutdown;
use clap::{Parser, Subcommand};

/// c4m: a lightweight orchestrator for microservices.
#[derive(Parser)]
#[command(name = "c4m", version)]
struct Cli {
    #[command(flatten)]
    connection: commands::Connection,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a single-node c4m: control plane and agent in one process.
    Up(daemons::UpArgs),
    /// Start a control plane (API server, scheduler, controllers, DNS).
    Control(daemons::ControlArgs),
    /// Start a node agent that joins a control plane.
    Agent(c4m_bins::AgentArgs),
    /// Create or update objects from files, folders or stdin (all or nothing).
    Apply(commands::ApplyArgs),
    /// Delete objects by kind and name, or those in files.
    Delete(commands::DeleteArgs),
    /// List objects of a kind, or show one.
    Get(commands::GetArgs),
    /// Make a Service for a deployment, replicaset, microservice,
    /// instance or service, as `kubectl expose` does.
    Expose(expose::ExposeArgs),
    /// Show one object in detail, with why it is not running if it is not.
    Describe(commands::DescribeArgs),
    /// Print an instance's output.
    Logs(commands::LogsArgs),
    /// Run a command in an instance (`-i` stdin, `-t` a terminal); exits
    /// with the command's exit code.
    Exec(streams::ExecArgs),
    /// Forward a local port to an instance's port.
    PortForward(streams::PortForwardArgs),
    /// Show the state of instances.
    Status(commands::InstancesArgs),
    /// Show the CPU and memory usage of instances.
    Metrics(commands::InstancesArgs),
    /// Run a command (or image) as a microservice.
    Run(commands::RunArgs),
    /// Wait until every workload has its replicas running and ready.
    Wait(commands::WaitArgs),
    /// Show, replace or audit the scheduler policy.
    Policy(policy::PolicyArgs),
    /// Manage a node's images (list, import, pull, remove, build).
    Image(images::ImageArgs),
    /// Print a kubeconfig so `kubectl --kubeconfig FILE` drives this c4m.
    Kubeconfig(kubeconfig::KubeconfigArgs),
    /// Create, list or delete VPCs (isolated instance networks).
    Vpc(vpc::VpcArgs),
    /// Create, list, delete, snapshot, restore or expand persistent volumes.
    Volume(volumes::VolumeArgs),
}

fn main() -> ExitCode {
    // `c4m agent` and `c4m up` start this binary as pods' namespace holders.
    c4m_agent::run_pod_holder_if_asked();
    let cli = Cli::parse();
    let daemon = matches!(
        cli.command,
        Command::Up(_) | Command::Control(_) | Command::Agent(_)
    );
    c4m_bins::init_logging(if daemon { "info" } else { "warn" });
    // After exec, stdin may still be read by a blocking thread: do not wait
    // for it. Anything else (daemons' store and image work) is waited for.
    let shutdown = match cli.command {
        Command::Exec(_) => Shutdown::Background,
        _ => Shutdown::Wait,
    };
    c4m_bins::run(
        async move {
            let connection = cli.connection;
            let done = |result: anyhow::Result<()>| result.map(|()| ExitCode::SUCCESS);
            match cli.command {
                Command::Exec(args) => streams::exec(args, &connection).await,
                Command::PortForward(args) => done(streams::port_forward(args, &connection).await),
                Command::Up(args) => done(daemons::up(args, &connection).await),
                Command::Control(args) => done(daemons::control(args, &connection).await),
                Command::Agent(args) => {
                    done(c4m_bins::run_agent(args, connection.credentials.credentials()).await)
                }
                Command::Apply(args) => done(commands::apply(args, &connection).await),
                Command::Delete(args) => done(commands::delete(args, &connection).await),
                Command::Get(args) => done(commands::get(args, &connection).await),
                Command::Expose(args) => done(expose::expose(args, &connection).await),
                Command::Describe(args) => done(commands::describe(args, &connection).await),
                Command::Logs(args) => done(commands::logs(args, &connection).await),
                Command::Status(args) => done(commands::status(args, &connection).await),
                Command::Metrics(args) => done(commands::metrics(args, &connection).await),
                Command::Run(args) => done(commands::run(args, &connection).await),
                Command::Wait(args) => done(commands::wait(args, &connection).await),
                Command::Policy(args) => done(policy::policy(args, &connection).await),
                Command::Image(args) => done(images::image(args, &connection).await),
                Command::Vpc(args) => done(vpc::vpc(args, &connection).await),
                Command::Volume(args) => done(volumes::volume(args, &connection).await),
                Command::Kubeconfig(args) => done(kubeconfig::print(args, &connection).await),
            }
        },
        shutdown,
    )
}
