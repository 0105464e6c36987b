//! c4m end to end: the real binaries (`c4m`, `c4m-agent`, `c4m-demo`)
//! driven as a user would, one module per area, all in one test binary so
//! they build once. Tests that need root, daemons or programs beyond a
//! plain Linux machine are `#[ignore]`d with what they need; CI runs them
//! with `--include-ignored`.

mod common;

mod api_connections;
mod autoscaling;
mod bookshop;
mod claims;
mod cluster;
mod containerd;
mod cri;
mod deletion;
mod docker;
mod drivers;
mod edge;
mod events;
mod hollow;
mod kubectl;
mod kubectl_dry_run;
mod kubectl_protobuf;
mod kubectl_storage;
mod kubectl_stream;
mod oci;
mod overlay;
mod placement;
mod pod_spec;
mod pods;
mod policy;
mod python_client;
mod quickstart;
mod service_ips;
mod services;
mod services_dns;
mod statefulset_nodes;
mod statefulsets;
mod storage;
mod storage_lifecycle;
mod volume_cli;
mod volumes;
mod vpc;
mod workloads;
