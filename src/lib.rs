//! ravpnd — RADIUS authorization for AnyConnect-compatible VPN gateways.
//!
//! One request, one straight path:
//! [`radius::listener`] frames the datagram, finds the NAS, checks the Message-Authenticator
//! and the duplicate cache → [`policy`] finds the user in the [`store`], asks [`auth`] for the
//! password verdict, then checks the device ([`policy::device`]: match or auto-register)
//! → [`reply`] builds the signed response → the listener sends it with the rest of its batch
//! ([`radius::outbox`]) and logs one line.
//! Registration failures go to [`notify`], a background mailer off the request path.
//!
//! Around it: [`config`] (typed, validated), [`store`] (the only sled user), [`admin`]
//! (HTTP API the [`cli`] talks to, `/metrics`), [`metrics`], and [`server`] (lifecycle).

pub mod accounting;
pub mod admin;
pub mod auth;
pub mod cli;
pub mod config;
pub mod connection_cap;
mod heap;
pub mod ipam;
pub mod metrics;
pub mod notify;
pub mod policy;
mod prefetch;
pub mod profiles;
pub mod radius;
pub mod reply;
pub mod server;
mod sip_key;
pub mod store;
#[cfg(test)]
mod test_alloc;
