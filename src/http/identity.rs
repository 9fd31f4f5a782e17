//! The Identity table of API.md: codes, sign-up, sessions and devices, the account's details,
//! passwords, activity, deletion. Handlers parse, call `Identity`, and shape the answer.

use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{any, delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Deserializer};

use super::auth::{Admin, Authed, ClientIp};
use super::error::{ApiError, ErrorCode};
use super::json::JsonBody;
use super::{views, AppState};
use crate::identity::{DeviceInfo, IdentityError, Patch, ProfileChanges, Purpose};

/// The one place where identity's errors become HTTP answers.
impl From<IdentityError> for ApiError {
    fn from(e: IdentityError) -> Self {
        let msg = e.to_string();
        match e {
            IdentityError::BadField { field: "identifier", .. } => ApiError::new(ErrorCode::BadIdentifier, msg),
            IdentityError::BadField { field, .. } => ApiError::new(ErrorCode::BadField, msg).with("field", field),
            IdentityError::WeakPassword { min, max } => {
                ApiError::new(ErrorCode::WeakPassword, msg).with("min_length", min).with("max_length", max)
            }
            IdentityError::BadPurpose(_) => ApiError::new(ErrorCode::BadPurpose, msg),
            IdentityError::NoConfirmation => ApiError::new(ErrorCode::ConfirmationRequired, msg),
            IdentityError::BadCode => ApiError::new(ErrorCode::BadCode, msg),
            IdentityError::IdentifierTaken => ApiError::new(ErrorCode::IdentifierTaken, msg),
            IdentityError::BadCredentials => ApiError::new(ErrorCode::BadCredentials, msg),
            IdentityError::WrongPassword => ApiError::new(ErrorCode::WrongPassword, msg),
            IdentityError::RateLimited { retry_after } => {
                let mut e = ApiError::new(ErrorCode::RateLimited, msg).with("retry_after", retry_after);
                e.retry_after = Some(retry_after);
                e
            }
            IdentityError::NotFound => ApiError::not_found(),
            IdentityError::Store(e) => e.into(),
            IdentityError::Internal(what) => {
                tracing::error!(error = %what, "identity request failed inside the server");
                ApiError::new(ErrorCode::Internal, "the server could not complete the request")
            }
        }
    }
}

/// Largest identity body. Every call here takes a few short strings; the store-wide JSON limit
/// (32 MiB) would let one sign-in hand Argon2 and the JSON parser megabytes of password.
pub const MAX_IDENTITY_BODY: usize = 64 << 10;

/// A JSON body of an identity call: `JsonBody` under this module's smaller limit, whose `413`
/// names that limit.
struct IdentityJson<T>(T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for IdentityJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match JsonBody::<T>::from_request(req, state).await {
            Ok(JsonBody(v)) => Ok(IdentityJson(v)),
            Err(e) if e.code == ErrorCode::PayloadTooLarge => Err(ApiError::too_large(MAX_IDENTITY_BODY as u64)),
            Err(e) => Err(e),
        }
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/codes", post(send_code))
        .route("/v1/accounts", post(register))
        .route("/v1/sessions", post(login))
        .route("/v1/sessions/current", delete(logout))
        .route("/v1/account", get(profile).patch(update_profile).delete(delete_account))
        .route("/v1/account/password", post(change_password))
        .route("/v1/account/activity", get(activity))
        .route("/v1/password-reset", post(reset_password))
        .route("/v1/devices", get(devices))
        .route("/v1/devices/{id}", delete(sign_out_device))
        .route("/v1/app-passwords", get(app_passwords).post(create_app_password))
        .route("/v1/app-passwords/{id}", delete(revoke_app_password))
        // Innermost, so it wins over the router's own larger limit for these routes.
        .layer(DefaultBodyLimit::max(MAX_IDENTITY_BODY))
        // The whole /admin tree sits behind the admin guard, so that without the token its
        // routes cannot even be told apart from missing ones. Real admin routes are more
        // specific and win over this catch-all.
        .route("/admin", any(admin_not_found))
        .route("/admin/{*rest}", any(admin_not_found))
}

async fn admin_not_found(_: Admin) -> ApiError {
    ApiError::not_found()
}

#[derive(Deserialize)]
struct CodeBody {
    identifier: Option<String>,
    purpose: String,
}

async fn send_code(
    State(app): State<AppState>,
    ClientIp(ip): ClientIp,
    auth: Option<Authed>,
    IdentityJson(b): IdentityJson<CodeBody>,
) -> Result<impl IntoResponse, ApiError> {
    let purpose = Purpose::parse(&b.purpose).ok_or_else(|| {
        ApiError::new(
            ErrorCode::BadPurpose,
            "purpose must be register, reset_password, change_details or delete_account",
        )
    })?;
    if purpose.is_anonymous() {
        let identifier =
            b.identifier.ok_or_else(|| ApiError::new(ErrorCode::BadIdentifier, "this purpose needs an identifier"))?;
        app.identity.send_code(&identifier, purpose, ip).await?;
    } else {
        let auth = auth.ok_or_else(ApiError::unauthorized)?;
        app.identity.send_account_code(&auth.session, purpose, ip).await?;
    }
    Ok((StatusCode::ACCEPTED, Json(views::CodeSent { expires_in: app.identity.config().code_ttl_secs })))
}

#[derive(Deserialize)]
struct RegisterBody {
    identifier: String,
    /// Optional here so that a missing one is `400` only after the code was found right.
    password: Option<String>,
    code: Option<String>,
    nickname: Option<String>,
}

async fn register(
    State(app): State<AppState>,
    ClientIp(ip): ClientIp,
    IdentityJson(b): IdentityJson<RegisterBody>,
) -> Result<impl IntoResponse, ApiError> {
    let r = crate::identity::Registration {
        identifier: b.identifier,
        password: b.password.unwrap_or_default(),
        code: b.code.unwrap_or_default(),
        nickname: b.nickname,
    };
    let account = app.identity.register(r, ip).await?;
    Ok((StatusCode::CREATED, Json(views::Registered { account_id: account.to_string() })))
}

#[derive(Deserialize)]
struct DeviceBody {
    name: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    os: String,
}

#[derive(Deserialize)]
struct LoginBody {
    identifier: String,
    password: String,
    device: DeviceBody,
}

async fn login(
    State(app): State<AppState>,
    ClientIp(ip): ClientIp,
    IdentityJson(b): IdentityJson<LoginBody>,
) -> Result<impl IntoResponse, ApiError> {
    let device = DeviceInfo { name: b.device.name, model: b.device.model, os: b.device.os };
    let s = app.identity.login(&b.identifier, b.password, device, ip).await?;
    Ok((StatusCode::CREATED, Json(views::SessionOut::from(s))))
}

async fn logout(State(app): State<AppState>, ClientIp(ip): ClientIp, auth: Authed) -> Result<StatusCode, ApiError> {
    app.identity.logout(&auth.session, ip).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn profile(State(app): State<AppState>, auth: Authed) -> Result<impl IntoResponse, ApiError> {
    let view = app.identity.profile(auth.account).await?;
    Ok(Json(view))
}

/// Present as `null` is `Some(None)` (clear the field); absent is `None` (leave it).
fn patch<'de, D: Deserializer<'de>>(d: D) -> Result<Patch, D::Error> {
    Ok(Some(Option::<String>::deserialize(d)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    code: Option<String>,
    #[serde(default, deserialize_with = "patch")]
    nickname: Patch,
    #[serde(default, deserialize_with = "patch")]
    gender: Patch,
    #[serde(default, deserialize_with = "patch")]
    region: Patch,
    #[serde(default, deserialize_with = "patch")]
    locale: Patch,
    #[serde(default, deserialize_with = "patch")]
    recovery_email: Patch,
    #[serde(default, deserialize_with = "patch")]
    recovery_phone: Patch,
}

async fn update_profile(
    State(app): State<AppState>,
    ClientIp(ip): ClientIp,
    auth: Authed,
    IdentityJson(b): IdentityJson<PatchBody>,
) -> Result<impl IntoResponse, ApiError> {
    let changes = ProfileChanges {
        nickname: b.nickname,
        gender: b.gender,
        region: b.region,
        locale: b.locale,
        recovery_email: b.recovery_email,
        recovery_phone: b.recovery_phone,
    };
    let view = app.identity.update_profile(&auth.session, b.code.unwrap_or_default(), changes, ip).await?;
    Ok(Json(view))
}

#[derive(Deserialize)]
struct PasswordBody {
    current_password: String,
    new_password: String,
    code: Option<String>,
}

async fn change_password(
    State(app): State<AppState>,
    ClientIp(ip): ClientIp,
    auth: Authed,
    IdentityJson(b): IdentityJson<PasswordBody>,
) -> Result<StatusCode, ApiError> {
    let change = crate::identity::PasswordChange {
        current_password: b.current_password,
        new_password: b.new_password,
        code: b.code.unwrap_or_default(),
    };
    app.identity.change_password(&auth.session, change, ip).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct ResetBody {
    identifier: String,
    code: Option<String>,
    new_password: Option<String>,
}

async fn reset_password(
    State(app): State<AppState>,
    ClientIp(ip): ClientIp,
    IdentityJson(b): IdentityJson<ResetBody>,
) -> Result<StatusCode, ApiError> {
    let (code, password) = (b.code.unwrap_or_default(), b.new_password.unwrap_or_default());
    app.identity.reset_password(&b.identifier, code, password, ip).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn activity(State(app): State<AppState>, auth: Authed) -> Result<impl IntoResponse, ApiError> {
    let events = app.identity.activity(auth.account).await?;
    Ok(Json(views::Events { events }))
}

async fn devices(State(app): State<AppState>, auth: Authed) -> Result<impl IntoResponse, ApiError> {
    let devices = app.identity.devices(&auth.session).await?;
    Ok(Json(views::Devices { devices }))
}

async fn sign_out_device(
    State(app): State<AppState>,
    ClientIp(ip): ClientIp,
    auth: Authed,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.identity.sign_out_device(&auth.session, &id, ip).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppPasswordBody {
    name: String,
}

async fn create_app_password(
    State(app): State<AppState>,
    ClientIp(ip): ClientIp,
    auth: Authed,
    IdentityJson(b): IdentityJson<AppPasswordBody>,
) -> Result<impl IntoResponse, ApiError> {
    let created = app.identity.create_app_password(&auth.session, b.name, ip).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn app_passwords(State(app): State<AppState>, auth: Authed) -> Result<impl IntoResponse, ApiError> {
    let app_passwords = app.identity.app_passwords(&auth.session).await?;
    Ok(Json(views::AppPasswords { app_passwords }))
}

async fn revoke_app_password(
    State(app): State<AppState>,
    ClientIp(ip): ClientIp,
    auth: Authed,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.identity.revoke_app_password(&auth.session, &id, ip).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct DeleteBody {
    code: Option<String>,
    confirm: Option<String>,
}

async fn delete_account(
    State(app): State<AppState>,
    ClientIp(ip): ClientIp,
    auth: Authed,
    IdentityJson(b): IdentityJson<DeleteBody>,
) -> Result<impl IntoResponse, ApiError> {
    app.identity.delete_account(&auth.session, b.code.unwrap_or_default(), b.confirm.as_deref(), ip).await?;
    Ok((StatusCode::ACCEPTED, Json(views::AccountDeleted { account_id: auth.account.to_string(), deleted: true })))
}
