//! Data pages: storage (the quota split by service), files (a folder of the drive), backups
//! (devices' backups and their files), and the portal's one drive write, moving a file.

use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Json;
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{page, status, when};
use super::session::{Guarded, Web};
use super::text::{encode_component, encode_path, human_size};
use crate::drive::{Entry, Transfer};
use crate::http::error::ApiError;
use crate::http::json::JsonBody;
use crate::http::{blocking, rfc3339_millis, AppState};

/// One slice of the storage bar: its key (`data-service`), label and bytes.
struct Slice {
    key: String,
    label: String,
    bytes: u64,
}

/// The bar as SVG (widths are geometry, so the strict CSP needs no inline style), in parts per
/// thousand of the plan's limit, or of the slices' sum when the logical sizes exceed it.
fn bar(slices: &[Slice], limit: u64) -> Markup {
    let sum: u64 = slices.iter().map(|s| s.bytes).sum();
    let total = sum.max(limit).max(1);
    let mut x = 0u64;
    let mut placed = Vec::with_capacity(slices.len());
    for s in slices {
        let w = (u128::from(s.bytes) * 1000 / u128::from(total)) as u64;
        let w = if s.bytes > 0 { w.max(2) } else { 0 };
        placed.push((s, x, w));
        x += w;
    }
    html! {
        svg.bar viewBox="0 0 1000 24" preserveAspectRatio="none" role="img"
            aria-label=(format!("{} used of {}", human_size(sum), human_size(limit))) {
            rect.free x="0" y="0" width="1000" height="24" {}
            @for (i, (s, x, w)) in placed.iter().enumerate() {
                rect class=(format!("s{}", i % 6)) data-service=(s.key) x=(x) y="0" width=(w) height="24" {
                    title { (s.label) ": " (human_size(s.bytes)) }
                }
            }
        }
    }
}

pub async fn storage(State(app): State<AppState>, web: Web) -> Result<Response, ApiError> {
    let account = web.session.account;
    let q = crate::http::quota::view(&app, &account).await?;
    let sync = app.sync.clone();
    let collections = blocking(move || sync.summary(&account)).await?;
    let mut slices = vec![
        Slice { key: "drive".into(), label: "Files".into(), bytes: q.services.drive },
        Slice { key: "backups".into(), label: "Backups".into(), bytes: q.services.backups },
    ];
    for (name, c) in &collections {
        slices.push(Slice { key: format!("sync-{name}"), label: format!("Synced {name}"), bytes: c.bytes });
    }
    slices.push(Slice { key: "trash".into(), label: "Trash".into(), bytes: q.services.trash });
    slices.push(Slice { key: "versions".into(), label: "Old versions".into(), bytes: q.services.versions });
    let percent = if q.limit == 0 { 100 } else { (u128::from(q.used) * 100 / u128::from(q.limit)) as u64 };
    let content = html! {
        p #usage data-used=(q.used) data-limit=(q.limit) {
            (human_size(q.used)) " of " (human_size(q.limit)) " used (" (percent) "%), plan " strong { (q.plan) } "."
        }
        (bar(&slices, q.limit))
        table.legend {
            thead { tr { th { "Service" } th { "Size" } } }
            tbody {
                @for (i, s) in slices.iter().enumerate() {
                    tr { td { span class=(format!("key s{}", i % 6)) aria-hidden="true" {} (s.label) } td data-bytes=(s.bytes) { (human_size(s.bytes)) } }
                }
                tr { td { "Item records" } td { (human_size(q.metadata)) } }
            }
        }
        p.hint { "Sizes are what each service holds; a file kept in two places is stored and counted once, so they may add up to more than the total." }
        h2 { "When the space runs out" }
        p { "Uploads and new backups stop; reading and deleting always work. Free space by "
            a href="/portal/files" { "deleting files" } " (the trash empties itself after 30 days), deleting "
            a href="/portal/backups" { "old backups" } ", or ask for a bigger plan." }
    };
    Ok(page("Storage", Some(&web), "/portal/storage", content))
}

#[derive(Deserialize)]
pub struct FolderQuery {
    #[serde(default)]
    dir: String,
}

/// The breadcrumbs of a folder path.
fn crumbs(dir: &str) -> Markup {
    let mut at = String::new();
    let mut trail = Vec::new();
    for seg in dir.split('/').filter(|s| !s.is_empty()) {
        if !at.is_empty() {
            at.push('/');
        }
        at.push_str(seg);
        trail.push((at.clone(), seg));
    }
    html! {
        nav aria-label="Folder" {
            ol.crumbs {
                li { a href="/portal/files" { "My files" } }
                @for (path, seg) in &trail {
                    li { a href=(format!("/portal/files?dir={}", encode_component(path))) { (seg) } }
                }
            }
        }
    }
}

pub async fn files(State(app): State<AppState>, web: Web, Query(q): Query<FolderQuery>) -> Result<Response, ApiError> {
    let dir = q.dir.trim_matches('/').to_string();
    let children = app.drive.children(web.session.account, &dir).await?;
    let content = html! {
        (crumbs(&dir))
        form #upload data-upload=(dir) aria-label="Upload files" {
            div.field {
                label for="files" { "Upload files to this folder" }
                input #files name="files" type="file" multiple;
            }
            progress #upload-progress max="100" value="0" aria-label="Upload progress" {}
            button type="submit" { "Upload" }
            (status())
        }
        @if children.is_empty() {
            p { "This folder is empty." }
        } @else {
            div.scroll {
                table #file-list {
                    thead { tr { th { "Name" } th { "Size" } th.wide { "Modified" } th { span.sr { "Actions" } } } }
                    tbody {
                        @for c in &children {
                            @let name = c.path.rsplit('/').next().unwrap_or(&c.path);
                            @match &c.entry {
                                Entry::Folder(_) => tr.folder {
                                    td { a href=(format!("/portal/files?dir={}", encode_component(&c.path))) { (name) "/" } }
                                    td { "—" } td.wide { "—" } td {}
                                },
                                Entry::File(rec) => tr.file data-path=(c.path) {
                                    td.name { (name) }
                                    td { (human_size(rec.size)) }
                                    td.wide { (when(&rfc3339_millis(rec.modified))) }
                                    td.actions {
                                        a href=(format!("/portal/api/v1/files/{}", encode_path(&c.path))) download=(name)
                                            aria-label=(format!("Download {name}")) { "Download" }
                                        details {
                                            summary aria-label=(format!("Rename or move {name}")) { "Rename / move" }
                                            form data-flow="move" data-from=(c.path) data-then="reload" {
                                                label for=(format!("to-{}", rec.version)) { "New path" }
                                                input id=(format!("to-{}", rec.version)) name="to" type="text" value=(c.path) required;
                                                button type="submit" { "Move" }
                                                (status())
                                            }
                                        }
                                        form.inline data-api=(format!("DELETE /files/{}", encode_path(&c.path))) data-then="reload" {
                                            button type="submit" aria-label=(format!("Delete {name}")) { "Delete" }
                                            (status())
                                        }
                                    }
                                },
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page("Files", Some(&web), "/portal/files", content))
}

#[derive(Deserialize)]
pub struct Move {
    from: String,
    to: String,
}

/// Rename or move a file or folder: the drive service's move (what WebDAV `MOVE` does), which
/// the `/v1` API has no call for. An existing `to` is refused (`409`), never replaced; missing
/// folders on the way to it are made.
pub async fn move_file(
    State(app): State<AppState>,
    _: Guarded,
    web: Web,
    JsonBody(m): JsonBody<Move>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (_, limit) = app.plan_and_limit(&web.session.account).await?;
    let (from, to, account) = (m.from.trim_matches('/'), m.to.trim_matches('/'), web.session.account);
    // Folders on the way that do not exist yet are made, as `PUT /v1/files` makes them.
    let mut at = 0;
    while let Some(i) = to[at..].find('/') {
        let folder = &to[..at + i];
        if app.drive.stat(account, folder).await?.is_none() {
            app.drive.mkdir(account, folder, limit).await?;
        }
        at += i + 1;
    }
    app.drive.transfer(account, Transfer::Move, from, to, false, limit).await?;
    Ok(Json(serde_json::json!({ "path": to })))
}

pub async fn backups(State(app): State<AppState>, web: Web) -> Result<Response, ApiError> {
    let (b, account) = (app.backups.clone(), web.session.account);
    let list = blocking(move || b.list(&account, None)).await?;
    let mut devices: Vec<&str> = list.iter().map(|s| s.head.device_id.as_str()).collect();
    devices.sort_unstable();
    devices.dedup();
    let content = html! {
        @if list.is_empty() { p { "No device has made a backup yet." } }
        @for d in &devices {
            h2 { (d) }
            div.scroll {
                table {
                    thead { tr { th { "Made" } th { "Label" } th { "Files" } th { "Size" } } }
                    tbody {
                        @for s in list.iter().filter(|s| s.head.device_id == *d) {
                            tr {
                                td { a href=(format!("/portal/backups/{}", crate::backup::format_id(s.id))) { (when(&rfc3339_millis(s.head.created_at))) } }
                                td { (s.head.label) }
                                td { (s.head.files) }
                                td { (human_size(s.head.size)) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page("Backups", Some(&web), "/portal/backups", content))
}

/// Most entries one backup page lists; the rest are named by count.
const ENTRIES_SHOWN: usize = 2000;

pub async fn backup(State(app): State<AppState>, web: Web, Path(id): Path<String>) -> Result<Response, ApiError> {
    let n = crate::backup::parse_id(&id).ok_or_else(ApiError::not_found)?;
    let (b, account) = (app.backups.clone(), web.session.account);
    let (summary, entries) = blocking(move || b.manifest(&account, n)).await?;
    let id = crate::backup::format_id(summary.id);
    let content = html! {
        p { (summary.head.device_id) ", " (when(&rfc3339_millis(summary.head.created_at))) ": "
            (summary.head.files) " files, " (human_size(summary.head.size)) "." }
        div.scroll {
            table {
                thead { tr { th { "Path" } th { "Size" } th { "Modified" } } }
                tbody {
                    @for e in entries.iter().take(ENTRIES_SHOWN) {
                        tr {
                            td { a href=(format!("/portal/api/v1/backups/{id}/files/{}", encode_component(&e.meta.path))) { (e.meta.path) } }
                            td { (human_size(e.size)) }
                            td { (e.meta.mtime) }
                        }
                    }
                }
            }
        }
        @if entries.len() > ENTRIES_SHOWN { p { "… and " (entries.len() - ENTRIES_SHOWN) " more." } }
        p { a href="/portal/backups" { "All backups" } }
    };
    Ok(page("Backup", Some(&web), "/portal/backups", content))
}
