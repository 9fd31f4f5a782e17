//! The drive: a person's files by path. `service` decides what happens to them (every front,
//! the v1 API, WebDAV or resumable uploads, calls it alike); `rules` holds the pure parsers of
//! paths, ranges, entity tags and cursors.

pub mod folders;
mod history;
mod props;
mod rules;
mod service;
pub mod trash;
pub mod versions;

pub use folders::{Child, Entry, Transfer};
pub use history::{expire_trash, Policy, TrashItem};
pub use props::PropChange;
pub use rules::*;
pub use service::{Drive, DriveError, Upload};
