//! Housekeeping the server does on its own: expiring staged chunks and abandoned resumable
//! uploads, purging old sync tombstones, and scheduled garbage collection. Each runs on a blocking thread, on its own
//! interval, and logs rather than fails.

use std::time::Duration;

use crate::engine::{Engine, GcOptions};
use crate::sync::Sync as SyncService;
use crate::uploads::Uploads;

fn every(
    period: Duration,
    what: &'static str,
    job: impl Fn() -> anyhow::Result<()> + Send + Sync + Clone + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.tick().await; // the first tick is immediate; start one period in
        loop {
            tick.tick().await;
            let job = job.clone();
            match tokio::task::spawn_blocking(job).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, what, "housekeeping failed"),
                Err(_) => return,
            }
        }
    })
}

/// When housekeeping runs and what it keeps; the binary's wiring fills it from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// How often staged chunks expire and tombstones are purged.
    pub sweep: Duration,
    /// How long a staged chunk waits for a manifest, and a tombstone stays in the feed.
    pub staged_ttl_secs: u64,
    pub tombstone_retention_secs: u64,
    /// How long a deleted drive file stays in the trash.
    pub trash_days: u64,
    /// Scheduled collection: how often (`None`: never), and with what options.
    pub gc_every: Option<Duration>,
    pub gc: GcOptions,
}

/// Start the housekeeping tasks; abort the handles to stop them.
pub fn spawn(
    schedule: Schedule,
    engine: Engine,
    sync: SyncService,
    uploads: Uploads,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    let (ttl, retention_ms) = (schedule.staged_ttl_secs, schedule.tombstone_retention_secs as i64 * 1000);
    let trash_ms = (schedule.trash_days as i64).saturating_mul(24 * 3600 * 1000);
    let e = engine.clone();
    tasks.push(every(schedule.sweep.max(Duration::from_secs(1)), "sweep", move || {
        let expired = e.expire_staged(ttl)?;
        let now_ms = e.clock().now_ms() as i64;
        let purged = sync.purge_tombstones(now_ms - retention_ms)?;
        let trashed = crate::drive::expire_trash(&e, now_ms - trash_ms)?;
        let uploads = uploads.expire()?;
        let swept = &e.metrics().swept;
        swept.with_label_values(&["staged_chunks"]).inc_by(expired);
        swept.with_label_values(&["tombstones"]).inc_by(purged);
        swept.with_label_values(&["trash"]).inc_by(trashed);
        e.metrics().housekeeping_runs.inc();
        if expired + purged + uploads > 0 {
            tracing::info!(expired, purged, uploads, "expired staged chunks and uploads, purged tombstones");
        }
        Ok(())
    }));
    if let Some(period) = schedule.gc_every {
        let opts = schedule.gc;
        tasks.push(every(period, "gc", move || {
            engine.gc(opts)?;
            Ok(())
        }));
    }
    tasks
}
