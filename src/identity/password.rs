//! Passwords: Argon2id at the OWASP baseline (19 MiB, 2 iterations, 1 lane), always computed
//! on the blocking pool, at most a few at a time.
//!
//! Each hash holds 19 MiB for tens of milliseconds. Without a bound, a burst of logins would
//! start one blocking thread per request (tokio allows 512: ~10 GiB) and every login would be
//! slow at once; with a semaphore of a couple per core they queue fairly and memory stays flat.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use super::error::{IdentityError, Result};

pub const MIN_CHARS: usize = 8;
pub const MAX_CHARS: usize = 128;

const MEMORY_KIB: u32 = 19 * 1024;
const ITERATIONS: u32 = 2;
const LANES: u32 = 1;

fn argon2() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, LANES, None).expect("the OWASP parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Length only, counted in characters: any character is allowed, so that pass phrases in any
/// script work; the upper bound keeps one request from buying unbounded hashing input.
pub fn check_strength(password: &str) -> Result<()> {
    let n = password.chars().count();
    if (MIN_CHARS..=MAX_CHARS).contains(&n) {
        Ok(())
    } else {
        Err(IdentityError::WeakPassword { min: MIN_CHARS, max: MAX_CHARS })
    }
}

/// Blocking: a PHC string with a fresh salt.
pub fn hash_blocking(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| IdentityError::Internal(format!("argon2: {e}")))
}

/// Blocking. A stored string that does not parse verifies nothing.
pub fn verify_blocking(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => argon2().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// Stands for the hash of an account that does not exist: the OWASP parameters, a fixed salt,
/// and 32 bytes that no password is known to hash to. A constant, not a hash made on first use:
/// that made the first unknown identifier after each start cost a hash and a verification,
/// twice a real account's time.
const DUMMY_PHC: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$Y2Fpcm4gZHVtbXkgc2FsdA$0lsLWG44huyDxJ/VAKxmxGAWNRTP4PYSwh66i6qq8rQ";

/// Blocking. The same cost as a real verification, for identifiers without an account, so
/// that a login's answer time does not tell whether the account exists.
pub fn verify_dummy_blocking(password: &str) {
    let _ = verify_blocking(password, DUMMY_PHC);
}

/// What a sign-in may give Argon2: the offered password, or `None` for one longer than any
/// account can have (`MAX_CHARS`, enforced whenever a password is set). Such a password is
/// wrong without being hashed: Argon2 first hashes its whole input, so a password the size of
/// the body limit would buy far more work than a real one.
fn offered(password: &str) -> Option<&str> {
    let fits = password.len() <= 4 * MAX_CHARS && password.chars().count() <= MAX_CHARS;
    fits.then_some(password)
}

/// Verified in place of a password that is too long, so that refusing one costs exactly an
/// ordinary verification.
const STAND_IN: &str = "cairn stand-in for a password that is too long";

/// Blocking: the work of `Hashers::verify`. One Argon2 verification of at most `MAX_CHARS`
/// characters, whatever is offered and whether or not the account exists.
fn verify_offered(password: &str, phc: Option<&str>) -> bool {
    match (offered(password), phc) {
        (Some(p), Some(phc)) => verify_blocking(p, phc),
        (None, Some(phc)) => {
            let _ = verify_blocking(STAND_IN, phc);
            false
        }
        (p, None) => {
            verify_dummy_blocking(p.unwrap_or(STAND_IN));
            false
        }
    }
}

/// Runs Argon2 work on the blocking pool, a bounded number at a time.
#[derive(Clone)]
pub struct Hashers {
    permits: Arc<Semaphore>,
}

impl Hashers {
    pub fn new(parallel: usize) -> Self {
        Hashers { permits: Arc::new(Semaphore::new(parallel.max(1))) }
    }

    /// Sized to the machine: two per core keeps every core busy while one hash waits to start.
    pub fn for_this_machine() -> Self {
        Self::new(std::thread::available_parallelism().map_or(2, |n| n.get() * 2))
    }

    pub async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let _permit = self.permits.acquire().await.map_err(|_| IdentityError::Internal("hashers closed".into()))?;
        tokio::task::spawn_blocking(f).await.map_err(|e| IdentityError::Internal(format!("hashing task: {e}")))
    }

    pub async fn hash(&self, password: String) -> Result<String> {
        self.run(move || hash_blocking(&password)).await?
    }

    /// `None` for a missing account: a dummy verification of equal cost, then `false`. A
    /// password longer than any account can have is `false` after one verification of a
    /// stand-in of ordinary length.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool> {
        self.run(move || verify_offered(&password, phc.as_deref())).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strength_counts_characters() {
        assert!(check_strength("1234567").is_err());
        assert!(check_strength("12345678").is_ok());
        assert!(check_strength("ääääääää").is_ok());
        assert!(check_strength(&"x".repeat(64)).is_ok());
        assert!(check_strength(&"x".repeat(128)).is_ok());
        assert!(check_strength(&"x".repeat(129)).is_err());
    }

    #[test]
    fn hashes_verify_with_the_owasp_parameters() {
        let h = hash_blocking("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_blocking("correct horse", &h));
        assert!(!verify_blocking("correct horsf", &h));
        assert!(!verify_blocking("correct horse", "not a phc string"));
        verify_dummy_blocking("anything");
    }

    /// The dummy has the parameters of a real hash, so it costs what a real verification does.
    #[test]
    fn the_dummy_hash_has_the_owasp_parameters() {
        let real = hash_blocking("correct horse").unwrap();
        let params = |phc: &str| phc.split('$').take(4).collect::<Vec<_>>().join("$");
        assert_eq!(params(DUMMY_PHC), params(&real));
        let parsed = PasswordHash::new(DUMMY_PHC).unwrap();
        assert_eq!(parsed.hash.map(|h| h.len()), PasswordHash::new(&real).unwrap().hash.map(|h| h.len()));
        assert!(!verify_blocking("cairn dummy password", DUMMY_PHC));
    }

    /// Issue 11: a sign-in hashed whatever it was given, up to the 32 MiB body limit. A
    /// password longer than an account can have is wrong without reaching Argon2, even one
    /// that is the stored password's own (which no account can have; built here by hand).
    #[test]
    fn passwords_longer_than_any_account_can_have_are_never_hashed() {
        let long = "x".repeat(MAX_CHARS + 1);
        assert_eq!(offered(&"x".repeat(MAX_CHARS)).map(str::len), Some(MAX_CHARS));
        assert_eq!(offered(&"é".repeat(MAX_CHARS)).map(|p| p.chars().count()), Some(MAX_CHARS));
        assert_eq!(offered(&long), None);
        assert_eq!(offered(&"x".repeat(32 << 20)), None);
        let h = hash_blocking(&long).unwrap();
        assert!(!verify_offered(&long, Some(&h)));
        let ok = hash_blocking("correct horse").unwrap();
        assert!(verify_offered("correct horse", Some(&ok)));
        assert!(!verify_offered("correct horse", None));
        assert!(!verify_offered(&long, None));
    }
}
