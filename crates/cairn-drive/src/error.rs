//! The client's failures, each with the sentence a person needs and an exit code a script can
//! branch on (1 other, 2 usage, 3 sign-in, 4 quota, 5 network).

use std::path::PathBuf;

use crate::api::ApiError;
use crate::report::size;

#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("{}", quota_message(.used, .limit, .need))]
    Quota { used: u64, limit: u64, need: u64 },
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: the file changed while it was being sent; run again", .0.display())]
    FileChanged(PathBuf),
    #[error("not signed in: run `cairn-drive login` first")]
    NotLoggedIn,
    #[error("{0}")]
    Usage(String),
    #[error("the state database {}: {source}", .path.display())]
    State { path: PathBuf, source: rusqlite::Error },
}

pub type Result<T, E = DriveError> = std::result::Result<T, E>;

fn quota_message(used: &u64, limit: &u64, need: &u64) -> String {
    format!(
        "not enough space: {} used of the {} the plan allows; this needs {} more, so free at least {} (delete files, empty the trash) or move to a larger plan",
        size(*used),
        size(*limit),
        size(*need),
        size(to_free(*used, *limit, *need))
    )
}

/// How much to delete so that `need` more bytes fit under `limit`.
pub fn to_free(used: u64, limit: u64, need: u64) -> u64 {
    (used + need).saturating_sub(limit)
}

impl DriveError {
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DriveError {
        let path = path.into();
        move |source| DriveError::Io { path, source }
    }

    /// A 507 met while `need` more bytes were still to be stored.
    pub fn with_need(self, need: u64) -> DriveError {
        match self {
            DriveError::Api(ApiError::Quota { used, limit }) => DriveError::Quota { used, limit, need },
            other => other,
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            DriveError::Api(ApiError::Unauthorized) | DriveError::NotLoggedIn => 3,
            DriveError::Api(ApiError::Quota { .. }) | DriveError::Quota { .. } => 4,
            DriveError::Api(ApiError::Network { .. }) => 5,
            DriveError::Usage(_) => 2,
            _ => 1,
        }
    }

    /// The error's code in `--json` output.
    pub fn code(&self) -> &'static str {
        match self.exit_code() {
            3 => "unauthorized",
            4 => "quota_exceeded",
            5 => "network",
            2 => "usage",
            _ => "failed",
        }
    }
}
