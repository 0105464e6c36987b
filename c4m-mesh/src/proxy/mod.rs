//! The HTTP proxy: the route model (always, with the `routes` feature) and
//! the proxy core, tower layers over hyper 1 (with the `proxy` feature).

pub mod api;
pub mod routes;
