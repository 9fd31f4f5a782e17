//! Account pages: sign in, sign up, forgotten password, the account's details, security
//! (password, devices, activity, app passwords) and deleting the account. Each form here is
//! sent by the page's script to the `/v1` call its `data-api` names; this module only reads.

use axum::extract::State;
use axum::response::Response;
use maud::{html, Markup};

use super::layout::{page, status, when};
use super::session::Web;
use super::text::{encode_component, human_size};
use crate::http::error::ApiError;
use crate::http::AppState;

/// A labelled text field. `value` prefills it (and is what "changed" is measured against).
fn field(id: &str, label: &str, kind: &str, autocomplete: &str, value: Option<&str>, required: bool) -> Markup {
    html! {
        div.field {
            label for=(id) { (label) }
            input id=(id) name=(id) type=(kind) autocomplete=(autocomplete) value=[value] required[required];
        }
    }
}

/// The code field and the button that sends one (`purpose`; `for_field` names the field holding
/// the identifier for anonymous purposes).
fn code_field(purpose: &str, for_field: Option<&str>) -> Markup {
    html! {
        div.field {
            label for="code" { "Verification code" }
            div.inline {
                input #code name="code" type="text" inputmode="numeric" autocomplete="one-time-code"
                    pattern="[0-9]{6}" maxlength="6" required;
                button type="button" data-send-code=(purpose) data-for=[for_field] { "Send code" }
            }
        }
    }
}

pub async fn signin() -> Response {
    page(
        "Sign in",
        None,
        "",
        html! {
            form data-api="POST /portal/session" data-then="/portal/account" aria-label="Sign in" {
                (field("identifier", "Email or phone number", "text", "username", None, true))
                (field("password", "Password", "password", "current-password", None, true))
                button type="submit" { "Sign in" }
                (status())
            }
            p { a href="/portal/signup" { "Create an account" } " · " a href="/portal/forgot" { "Forgot password?" } }
        },
    )
}

pub async fn signup() -> Response {
    page(
        "Create an account",
        None,
        "",
        html! {
            form data-flow="signup" data-then="/portal/account" aria-label="Create an account" {
                (field("identifier", "Email or phone number (+ and digits)", "text", "username", None, true))
                (code_field("register", Some("identifier")))
                (field("nickname", "Nickname (optional)", "text", "nickname", None, false))
                (field("password", "Password (at least 8 characters)", "password", "new-password", None, true))
                button type="submit" { "Create account" }
                (status())
            }
            p { "Have an account? " a href="/portal/signin" { "Sign in" } }
        },
    )
}

pub async fn forgot() -> Response {
    page(
        "Reset your password",
        None,
        "",
        html! {
            form data-api="POST /password-reset" data-then="/portal/signin" aria-label="Reset your password" {
                (field("identifier", "Email or phone number", "text", "username", None, true))
                (code_field("reset_password", Some("identifier")))
                (field("new_password", "New password", "password", "new-password", None, true))
                button type="submit" { "Set new password" }
                (status())
            }
        },
    )
}

const GENDERS: &[(&str, &str)] = &[
    ("", "Not set"),
    ("female", "Female"),
    ("male", "Male"),
    ("other", "Other"),
    ("unspecified", "Prefer not to say"),
];

pub async fn account(State(app): State<AppState>, web: Web) -> Result<Response, ApiError> {
    let p = app.identity.profile(web.session.account).await?;
    let content = html! {
        dl.facts {
            dt { "Signed in as" } dd { (p.identifier) }
            dt { "Plan" } dd { (p.plan) }
            dt { "Member since" } dd { (p.created_at) }
        }
        h2 { "Personal information" }
        p { "Every change asks for a fresh code, sent to " (p.identifier) "." }
        form data-api="PATCH /account" data-changed-only data-then="reload" aria-label="Personal information" {
            (field("nickname", "Nickname", "text", "nickname", p.nickname.as_deref(), false))
            div.field {
                label for="gender" { "Gender" }
                select #gender name="gender" {
                    @for (v, label) in GENDERS {
                        option value=(v) selected[p.gender.as_deref().unwrap_or("") == *v] { (label) }
                    }
                }
            }
            (field("region", "Region (two letters, e.g. DE)", "text", "country", p.region.as_deref(), false))
            (field("locale", "Language (e.g. en-GB)", "text", "language", p.locale.as_deref(), false))
            h2 { "Recovery" }
            (field("recovery_email", "Recovery email", "email", "email", p.recovery_email.as_deref(), false))
            (field("recovery_phone", "Recovery phone (+ and digits)", "tel", "tel", p.recovery_phone.as_deref(), false))
            (code_field("change_details", None))
            button type="submit" { "Save changes" }
            (status())
        }
        p { a href="/portal/delete" { "Delete the account…" } }
    };
    Ok(page("Account", Some(&web), "/portal/account", content))
}

pub async fn security(State(app): State<AppState>, web: Web) -> Result<Response, ApiError> {
    let devices = app.identity.devices(&web.session).await?;
    let events = app.identity.activity(web.session.account).await?;
    let app_passwords = app.identity.app_passwords(&web.session).await?;
    let content = html! {
        h2 { "Password" }
        form data-api="POST /account/password" data-then="reload" aria-label="Change password" {
            (field("current_password", "Current password", "password", "current-password", None, true))
            (field("new_password", "New password", "password", "new-password", None, true))
            (code_field("change_details", None))
            button type="submit" { "Change password" }
            p.hint { "Every other device is signed out." }
            (status())
        }
        h2 #devices { "Devices" }
        div.scroll {
            table {
                thead { tr { th { "Device" } th { "System" } th { "Last active" } th { span.sr { "Action" } } } }
                tbody {
                    @for d in &devices {
                        tr data-device=(d.device_id) {
                            td { (d.name) @if d.current { " " span.badge { "this browser" } } @if d.app_password { " " span.badge { "app password" } } }
                            td { (d.model) " " (d.os) }
                            td { (when(&d.last_seen)) }
                            td {
                                form data-api=(format!("DELETE /devices/{}", encode_component(&d.device_id)))
                                    data-then=(if d.current { "/portal/signin" } else { "reload" }) {
                                    button type="submit" aria-label=(format!("Sign out {}", d.name)) { "Sign out" }
                                    (status())
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "App passwords" }
        p { "For WebDAV, CardDAV and CalDAV programs: sign in with your identifier and an app password." }
        @if !app_passwords.is_empty() {
            ul.plain {
                @for a in &app_passwords {
                    li {
                        (a.name) " — made " (when(&a.created_at)) ", last used " @if a.last_used.is_empty() { "never" } @else { (when(&a.last_used)) }
                        form.inline data-api=(format!("DELETE /app-passwords/{}", encode_component(&a.id))) data-then="reload" {
                            button type="submit" aria-label=(format!("Revoke {}", a.name)) { "Revoke" }
                        }
                    }
                }
            }
        }
        form data-api="POST /app-passwords" data-show="password" aria-label="New app password" {
            (field("name", "Name of the program", "text", "off", None, true))
            button type="submit" { "Make app password" }
            (status())
        }
        h2 { "Sign-in activity" }
        div.scroll {
            table {
                thead { tr { th { "When" } th { "What" } th { "Address" } th { "Device" } } }
                tbody {
                    @for e in events.iter().take(200) {
                        tr {
                            td { (when(&e.at)) }
                            td { (e.kind.replace('_', " ")) }
                            td { (e.ip) }
                            td { @if let Some(d) = &e.device { (d.name) } @else { "—" } }
                        }
                    }
                }
            }
        }
    };
    Ok(page("Security", Some(&web), "/portal/security", content))
}

pub async fn delete(State(app): State<AppState>, web: Web) -> Result<Response, ApiError> {
    let account = web.session.account;
    let q = crate::http::quota::view(&app, &account).await?;
    let sync = app.sync.clone();
    let collections = crate::http::blocking(move || sync.summary(&account)).await?;
    let backups = app.backups.clone();
    let backups = crate::http::blocking(move || backups.list(&account, None)).await?;
    let devices = app.identity.devices(&web.session).await?;
    let content = html! {
        p { "Deleting the account erases, at once and for good:" }
        ul {
            li { "your files: " (human_size(q.services.drive)) ", and the trash and old versions" }
            li { (backups.len()) " device backups (" (human_size(q.services.backups)) ")" }
            @for (name, c) in &collections {
                li { (c.count) " synced " (name) " records" }
            }
            li { "your sign-in history, " (devices.len()) " signed-in devices and app passwords" }
            li { "your account details and this sign-in" }
        }
        form data-api="DELETE /account" data-then="/portal/signin" aria-label="Delete the account" {
            (code_field("delete_account", None))
            div.field {
                label for="confirm" { "Type DELETE to confirm" }
                input #confirm name="confirm" type="text" autocomplete="off" required pattern="DELETE";
            }
            button.danger type="submit" { "Delete the account" }
            (status())
        }
    };
    Ok(page("Delete the account", Some(&web), "", content))
}
