//! `c4m-agent`: the node agent alone. It takes `c4m agent`'s flags and runs
//! the same agent, from a binary without the CLI and the control plane.

use std::process::ExitCode;

use c4m_bins::{AgentArgs, CredentialFlags, Shutdown};
use clap::Parser;

/// c4m's node agent: joins a control plane and runs the instances it is
/// assigned.
#[derive(Parser)]
#[command(name = "c4m-agent", version)]
struct Cli {
    #[command(flatten)]
    credentials: CredentialFlags,
    #[command(flatten)]
    agent: AgentArgs,
}

fn main() -> ExitCode {
    c4m_agent::run_pod_holder_if_asked();
    let cli = Cli::parse();
    c4m_bins::init_logging("info");
    c4m_bins::run(
        async move {
            c4m_bins::run_agent(cli.agent, cli.credentials.credentials()).await?;
            Ok(ExitCode::SUCCESS)
        },
        Shutdown::Wait,
    )
}
