//! c4m's wire protocols.
//!
//! - [`agent`]: the gRPC service between node agents and the control plane
//!   (generated from `proto/agent.proto`).
//! - [`Client`]: a client for the control plane's HTTP/JSON API, used by the
//!   `c4m` CLI and by tests, with the request and response types the API and
//!   the client share ([`ApplyRequest`], [`ServiceEndpoints`], ...).
//! - [`stream`]: Kubernetes' exec and port-forward channel protocols over
//!   WebSocket, which the CLI, the control plane and the agent speak.
//! - [`protobuf`] (feature `protobuf`): Kubernetes objects between JSON
//!   and Kubernetes' protobuf, for the API server and the client.
//! - [`table`]: the columns each kind is listed with, shared by `c4m get`
//!   and the API's `Table` answers to `kubectl get`.

mod client;
mod error;
#[cfg(feature = "protobuf")]
pub mod protobuf;
pub mod stream;
pub mod table;
mod types;

/// The agent ↔ control plane gRPC protocol.
#[allow(missing_docs, clippy::all)]
pub mod agent {
    tonic::include_proto!("c4m.agent.v1");
}

pub use client::{
    Client, Credentials, LogQuery, SCHEDULER_POLICY_HISTORY_PATH, SCHEDULER_POLICY_PATH,
    TLS_CERTIFICATE_PATH, bearer_matches, log_since_seconds, object_path,
};
pub use error::{Error, Result};
pub use types::{
    ApplyAction, ApplyObject, ApplyRequest, ApplyResponse, ApplyResult, EndpointInfo,
    ServiceEndpoints, Status, WatchEvent,
};
