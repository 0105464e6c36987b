//! What the c4m binaries share: the node agent's flags and composition
//! (run by `c4m up`, `c4m agent` and the slim `c4m-agent`), and the
//! command-line plumbing every binary needs.
//!
//! `c4m-agent` exists for memory: a node runs the agent for as long as it
//! is up, and the agent's resident code is mostly the pages of its binary
//! it has touched. A binary holding only the agent keeps fewer of them
//! than `c4m`, which also holds the CLI and the control plane.

mod cli;
mod node;

pub use cli::{
    CredentialFlags, Shutdown, data_dir, default_home, init_logging, parse_duration,
    parse_key_value, run, shutdown_on_signal,
};
pub use node::{AgentArgs, ClusterFlags, NodeFlags, bind_agent, run_agent};
