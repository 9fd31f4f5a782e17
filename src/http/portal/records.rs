//! Synced records as pages: contacts and calendar (read, searchable), notes (read, searchable,
//! editable). Records are read from the sync service's feed; a note is written by the page's
//! script with `PUT /v1/sync/notes/{id}` and `If-Match` (a `412` shows the other version).

use axum::extract::{Path, Query, State};
use axum::response::Response;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use super::layout::{page, status};
use super::session::Web;
use super::text::{self, encode_component, Shown};
use crate::http::error::ApiError;
use crate::http::{blocking, AppState};
use crate::store::keys::AccountId;

/// Most records one page reads from a collection; a bigger one shows the first ones and says so.
const RECORDS_READ: usize = 5000;

#[derive(Deserialize)]
pub struct Search {
    #[serde(default)]
    q: String,
}

/// The live records of a collection, `(id, version, payload)`, in feed order.
async fn live(
    app: &AppState,
    account: AccountId,
    collection: &'static str,
) -> Result<(Vec<(String, u64, Value)>, bool), ApiError> {
    let sync = app.sync.clone();
    blocking(move || {
        let (mut out, mut since) = (Vec::new(), 0);
        loop {
            let feed = sync.feed(&account, collection, since, 1000)?;
            for r in feed.records {
                if let (false, Some(p)) = (r.deleted, r.payload) {
                    out.push((r.id, r.version, serde_json::from_str(&p).unwrap_or(Value::Null)));
                }
            }
            since = feed.next;
            if !feed.more || out.len() >= RECORDS_READ {
                let more = feed.more;
                out.truncate(RECORDS_READ);
                return Ok::<_, crate::sync::SyncError>((out, more));
            }
        }
    })
    .await
}

fn search_form(q: &str, label: &str) -> Markup {
    html! {
        form.search method="get" role="search" {
            label for="q" { (label) }
            div.inline {
                input #q name="q" type="search" value=(q);
                button type="submit" { "Search" }
            }
        }
    }
}

/// A searchable list page of one collection, each record shown by `show`.
async fn list_page(
    app: AppState,
    web: Web,
    q: Search,
    collection: &'static str,
    title: &str,
    show: fn(&str, &Value) -> Shown,
    link: Option<&str>,
) -> Result<Response, ApiError> {
    let (records, more) = live(&app, web.session.account, collection).await?;
    let shown: Vec<(String, Shown)> =
        records.iter().map(|(id, _, p)| (id.clone(), show(id, p))).filter(|(_, s)| s.matches(&q.q)).collect();
    let content = html! {
        (search_form(&q.q, &format!("Search {}", title.to_lowercase())))
        @if let Some(base) = link { p { a.button href=(format!("{base}/new")) { "New note" } } }
        p.count { (shown.len()) " of " (records.len()) }
        ul.records #records {
            @for (id, s) in &shown {
                li data-id=(id) {
                    @if let Some(base) = link {
                        a.title href=(format!("{base}/{}", encode_component(id))) { (s.title) }
                    } @else {
                        span.title { (s.title) }
                    }
                    @for l in &s.lines { span.line { (l) } }
                }
            }
        }
        @if more { p { "Only the first " (RECORDS_READ) " records are shown." } }
    };
    Ok(page(title, Some(&web), &format!("/portal/{collection}"), content))
}

pub async fn contacts(State(app): State<AppState>, web: Web, Query(q): Query<Search>) -> Result<Response, ApiError> {
    list_page(app, web, q, "contacts", "Contacts", text::contact, None).await
}

pub async fn calendar(State(app): State<AppState>, web: Web, Query(q): Query<Search>) -> Result<Response, ApiError> {
    list_page(app, web, q, "calendar", "Calendar", text::event, None).await
}

pub async fn notes(State(app): State<AppState>, web: Web, Query(q): Query<Search>) -> Result<Response, ApiError> {
    list_page(app, web, q, "notes", "Notes", text::note, Some("/portal/notes")).await
}

/// One note's editor; `new` is a blank one (its id is chosen by the script).
pub async fn note(State(app): State<AppState>, web: Web, Path(id): Path<String>) -> Result<Response, ApiError> {
    let (version, title, body) = if id == "new" {
        (None, String::new(), String::new())
    } else {
        let (sync, account, rid) = (app.sync.clone(), web.session.account, id.clone());
        let v = blocking(move || sync.get(&account, "notes", &rid)).await?;
        let p: Value = v.payload.as_deref().and_then(|p| serde_json::from_str(p).ok()).unwrap_or(Value::Null);
        let title = p.get("title").and_then(Value::as_str).unwrap_or("").to_string();
        let body = p.get("text").and_then(Value::as_str).unwrap_or("").to_string();
        (Some(v.version), title, body)
    };
    let content = html! {
        form #note data-flow="note" data-id=[(version.is_some()).then_some(&id)] data-version=[version]
            data-then="/portal/notes" aria-label="Note" {
            div.field {
                label for="title" { "Title" }
                input #title name="title" type="text" value=(title) maxlength="200";
            }
            div.field {
                label for="text" { "Text" }
                textarea #text name="text" rows="12" { (body) }
            }
            button type="submit" { "Save" }
            (status())
        }
        @if let Some(v) = version {
            form data-api=(format!("DELETE /sync/notes/{}", encode_component(&id))) data-if-match=(v) data-then="/portal/notes" {
                button.danger type="submit" { "Delete note" }
                (status())
            }
        }
        p { a href="/portal/notes" { "All notes" } }
    };
    Ok(page(if version.is_some() { "Edit note" } else { "New note" }, Some(&web), "/portal/notes", content))
}
