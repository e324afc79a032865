//! RADIUS on the wire: the only module with sockets.
//!
//! `packet` frames datagrams, `crypto` does the authenticators and PAP, `nas` maps sources
//! to secrets, `dedup` answers retransmissions, `listener` runs the staged checks.

pub mod crypto;
pub mod dedup;
pub mod dict;
pub mod listener;
pub mod nas;
pub mod packet;
