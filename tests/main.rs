//! Integration tests: the real `ravpnd` binary, real `radclient`, real UDP.

mod support;

mod azure;
mod bad_input;
mod cli_config;
mod cli_users;
mod devices;
mod directory;
mod directory_health;
mod directory_lockout;
mod kernel_drops;
mod ocserv;
mod pinning;
mod profiles;
mod radius_basic;
mod restart;
mod samba_fixture;
mod session_release;
mod sessions;
mod smtp_stall;
