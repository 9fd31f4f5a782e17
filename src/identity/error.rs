//! What can go wrong in identity, in the domain's own words. The HTTP layer maps each variant
//! to a status in one place (`http::identity`).

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// An identifier, recovery address or profile field that is not in its format.
    #[error("{field}: {why}")]
    BadField { field: &'static str, why: String },
    #[error("the password must be {min} to {max} characters long")]
    WeakPassword { min: usize, max: usize },
    #[error("this purpose needs {0}")]
    BadPurpose(&'static str),
    #[error("the confirmation must be the word DELETE")]
    NoConfirmation,
    /// Wrong, expired, used up, or never sent: the client cannot tell which.
    #[error("the code is wrong, expired or already used")]
    BadCode,
    #[error("an account with this identifier already exists")]
    IdentifierTaken,
    /// Unknown identifier or wrong password: one answer for both.
    #[error("the identifier or the password is wrong")]
    BadCredentials,
    #[error("the current password is wrong")]
    WrongPassword,
    #[error("too many attempts; try again in {retry_after} seconds")]
    RateLimited { retry_after: u64 },
    #[error("no such resource")]
    NotFound,
    #[error("store: {0}")]
    Store(#[from] crate::error::Error),
    #[error("{0}")]
    Internal(String),
}

impl IdentityError {
    pub fn field(field: &'static str, why: impl Into<String>) -> Self {
        IdentityError::BadField { field, why: why.into() }
    }
}

impl From<rocksdb::Error> for IdentityError {
    fn from(e: rocksdb::Error) -> Self {
        IdentityError::Store(e.into())
    }
}

pub type Result<T, E = IdentityError> = std::result::Result<T, E>;
