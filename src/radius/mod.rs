//! RADIUS on the wire: the only module with sockets.
//!
//! `packet` frames datagrams, `crypto` does the authenticators and PAP, `nas` maps sources
//! to secrets, `dedup` answers retransmissions, `listener` runs the staged checks on what
//! `batch` receives and sends the replies through `outbox` (its workers placed by `pinning`),
//! `kernel_drops` counts what the kernel dropped before `listener` could read it.

pub mod batch;
pub mod crypto;
pub mod dedup;
pub mod dict;
pub mod kernel_drops;
pub mod listener;
pub mod nas;
pub mod outbox;
pub mod packet;
pub mod pinning;
