//! Resumable uploads: a file that arrives over many requests, across dropped connections and
//! server restarts, and becomes a drive file when its last byte lands. `service` decides (any
//! front may call it: the tus front today, WebDAV tomorrow); `parse` holds the pure parsers of
//! the tus headers that carry client data.

pub mod parse;
mod service;

pub use service::{NewUpload, PatchPiece, Settings, UploadError, UploadState, Uploads};
