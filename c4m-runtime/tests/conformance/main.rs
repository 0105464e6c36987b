//! The driver conformance suite: one set of cases (`suite.rs`) that every
//! container driver runs against the real thing (the `oci` driver with runc
//! and conmon; `docker`, `containerd` and `cri` against daemons the test
//! starts itself, from `c4m-testkit`). A module per driver says how to
//! connect to it; every case must pass, and a driver whose prerequisites
//! are missing fails loudly.
//!
//! Each driver's suite is one test (`<driver>_conforms`) so its daemon is
//! started once; it runs every case, then fails naming each case that failed.

mod containerd;
mod cri;
mod docker;
mod kit;
mod oci;
mod suite;
