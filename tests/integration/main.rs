//! End-to-end tests: real binaries on ephemeral loopback ports (see `fdfs_tests`).

mod appender;
mod bad_input;
mod cli;
mod durability;
mod faults;
mod hostile;
mod http;
mod membership;
mod operations;
mod replication;
mod router;
mod security;
mod soak;
mod status;
mod wire;
