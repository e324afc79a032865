//! Integration tests: the real `ravpnd` binary, real `radclient`, real UDP.

mod support;

mod bad_input;
mod cli_config;
mod cli_users;
mod devices;
mod ocserv;
mod profiles;
mod radius_basic;
mod restart;
mod sessions;
