//! Integration tests: each starts the real `registry` binary on an
//! ephemeral 127.0.0.1 port with its own store and speaks HTTP to it.

mod api;
mod auth;
mod bench_tool;
mod blobs;
mod browser;
mod config;
mod crash;
mod faults;
mod gc;
mod hostile;
mod manifests;
mod nodes;
mod notifications;
mod on_s3;
mod pull_through;
mod replicate;
mod restart;
mod support;
mod tls;
mod uploads;
mod verify;
mod web;
