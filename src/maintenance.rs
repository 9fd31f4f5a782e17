//! Housekeeping the server does on its own: expiring staged chunks, purging old sync
//! tombstones, and scheduled garbage collection. Each runs on a blocking thread, on its own
//! interval, and logs rather than fails.

use std::time::Duration;

use crate::config::Config;
use crate::engine::Engine;
use crate::sync::Sync as SyncService;

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

/// Start the housekeeping tasks; abort the handles to stop them.
pub fn spawn(config: &Config, engine: Engine, sync: SyncService) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    let (ttl, retention_ms) = (config.staged_ttl_secs, config.tombstone_retention_secs as i64 * 1000);
    let e = engine.clone();
    tasks.push(every(Duration::from_secs(config.sweep_secs.max(1)), "sweep", move || {
        let expired = e.expire_staged(ttl)?;
        let now_ms = e.clock().now_ms() as i64;
        let purged = sync.purge_tombstones(now_ms - retention_ms)?;
        if expired + purged > 0 {
            tracing::info!(expired, purged, "expired staged chunks and purged tombstones");
        }
        Ok(())
    }));
    if config.gc_interval_secs > 0 {
        let opts = config.gc();
        tasks.push(every(Duration::from_secs(config.gc_interval_secs), "gc", move || {
            engine.gc(opts)?;
            Ok(())
        }));
    }
    tasks
}
