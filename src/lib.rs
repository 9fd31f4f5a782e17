//! cairn: the storage backend of a consumer cloud. See DESIGN.md in docs/ for the shape.

pub mod backup;
pub mod chunk;
pub mod cli;
pub mod clock;
pub mod codec;
pub mod config;
pub mod datadir;
pub mod dictionary;
pub mod drive;
pub mod engine;
pub mod error;
pub mod groupware;
pub mod host_metrics;
pub mod http;
pub mod identity;
pub mod maintenance;
pub mod metrics;
pub mod ops;
pub mod pack;
pub mod quota;
pub mod snapshot;
pub mod store;
pub mod sync;
pub mod uploads;
