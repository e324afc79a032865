//! Shared fixtures: a daemon on ephemeral loopback ports, radclient and raw-packet helpers.

pub mod daemon;
pub mod ocserv;
pub mod packet;
pub mod radclient;
pub mod samba;
pub mod smtp;
pub mod tcp_proxy;

pub use daemon::TestDaemon;
