//! HQ's view of its edges' sync health as a few chain-wide gauges, refreshed at each scrape.
//!
//! A chain has hundreds of sites: one series per site would multiply every dashboard query and
//! the time-series database's size with the chain's growth. These gauges stay at a fixed count
//! (the worst site, and how many sites are stale), which is what an alert needs; the per-site
//! detail is one request away at `GET /v1/sites/{site_id}/sync`.

use crate::store::{Store, StoreResult, listing};
use aero_shared::wire::SiteRecord;
use chrono::{DateTime, Duration, Utc};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A site whose edge has not pulled for this long (or never) counts as stale.
pub const STALE_AFTER: Duration = Duration::minutes(5);

/// Aggregates over every site's sync state.
#[derive(Debug, Default)]
pub struct EdgeHealth {
    pub sites: Gauge,
    pub stale_sites: Gauge,
    pub max_pull_age_seconds: Gauge,
    pub max_push_age_seconds: Gauge,
    pub max_pull_lag_changes: Gauge,
    pub max_oldest_pending_age_seconds: Gauge,
}

impl EdgeHealth {
    pub fn register(registry: &mut Registry) -> Self {
        let health = Self::default();
        registry.register("sites", "Sites in the chain", health.sites.clone());
        registry.register(
            "edge_stale_sites",
            "Sites whose edge has not pulled for 5 minutes, or never",
            health.stale_sites.clone(),
        );
        registry.register(
            "edge_max_pull_age_seconds",
            "Seconds since the last pull of the site that pulled least recently (sites that pulled)",
            health.max_pull_age_seconds.clone(),
        );
        registry.register(
            "edge_max_push_age_seconds",
            "Seconds since the last push of the site that pushed least recently (sites that pushed)",
            health.max_push_age_seconds.clone(),
        );
        registry.register(
            "edge_max_pull_lag_changes",
            "Changes in its scope the furthest-behind edge has not pulled yet",
            health.max_pull_lag_changes.clone(),
        );
        registry.register(
            "edge_max_oldest_pending_age_seconds",
            "Seconds the oldest op any edge reported waiting in its outbox has waited",
            health.max_oldest_pending_age_seconds.clone(),
        );
        health
    }

    /// Reads every site's sync state (one store read per site) and sets the gauges as of `now`.
    pub async fn refresh(&self, store: &dyn Store, now: DateTime<Utc>) -> StoreResult<()> {
        let sites = listing::every(
            |after, limit| async move { store.list_sites(after.as_ref(), limit).await },
            |s: &SiteRecord| (s.name.clone(), s.id),
        )
        .await?;
        let mut summary = Summary::default();
        for site in &sites {
            let sync = store.site_sync(site.id).await?;
            let age = |t: Option<DateTime<Utc>>| t.map(|t| (now - t).num_seconds().max(0));
            summary.add(
                age(sync.last_pull_at),
                age(sync.last_push_at),
                sync.pull_lag,
                age(sync.outbox.and_then(|o| o.oldest_pending_at)),
            );
        }
        self.sites.set(sites.len() as i64);
        self.stale_sites.set(summary.stale);
        self.max_pull_age_seconds.set(summary.max_pull_age);
        self.max_push_age_seconds.set(summary.max_push_age);
        self.max_pull_lag_changes.set(summary.max_pull_lag);
        self.max_oldest_pending_age_seconds
            .set(summary.max_oldest_pending_age);
        Ok(())
    }
}

#[derive(Debug, Default, PartialEq)]
struct Summary {
    stale: i64,
    max_pull_age: i64,
    max_push_age: i64,
    max_pull_lag: i64,
    max_oldest_pending_age: i64,
}

impl Summary {
    fn add(
        &mut self,
        pull_age: Option<i64>,
        push_age: Option<i64>,
        pull_lag: i64,
        oldest_pending_age: Option<i64>,
    ) {
        if pull_age.is_none_or(|age| age >= STALE_AFTER.num_seconds()) {
            self.stale += 1;
        }
        self.max_pull_age = self.max_pull_age.max(pull_age.unwrap_or(0));
        self.max_push_age = self.max_push_age.max(push_age.unwrap_or(0));
        self.max_pull_lag = self.max_pull_lag.max(pull_lag);
        self.max_oldest_pending_age = self
            .max_oldest_pending_age
            .max(oldest_pending_age.unwrap_or(0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_site_and_the_stale_count_summarise_the_chain() {
        let mut summary = Summary::default();
        summary.add(Some(10), Some(20), 0, None);
        summary.add(Some(400), None, 7, Some(90));
        summary.add(None, None, 3, Some(30));
        assert_eq!(
            summary,
            Summary {
                stale: 2,
                max_pull_age: 400,
                max_push_age: 20,
                max_pull_lag: 7,
                max_oldest_pending_age: 90,
            }
        );
    }
}
