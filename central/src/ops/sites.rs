//! `aero-central sites`: every site with its venue's sync health (last push and pull, how many
//! changes its edge has yet to pull).

use super::{cell_networks, cell_time};
use crate::store::{Store, listing};
use aero_shared::table;
use aero_shared::wire::{SiteRecord, SiteSyncStatus};
use serde::Serialize;

/// A site and its sync health, as `--json` prints it.
#[derive(Serialize)]
pub struct SiteListing {
    #[serde(flatten)]
    pub site: SiteRecord,
    pub sync: SiteSyncStatus,
}

/// The listing, sites in the store's order.
pub async fn list(store: &dyn Store) -> anyhow::Result<Vec<SiteListing>> {
    let mut listing = Vec::new();
    let sites = listing::every(
        |after, limit| async move { store.list_sites(after.as_ref(), limit).await },
        |s: &SiteRecord| (s.name.clone(), s.id),
    )
    .await?;
    for site in sites {
        let sync = store.site_sync(site.id).await?;
        listing.push(SiteListing { site, sync });
    }
    Ok(listing)
}

/// Prints the listing as a table, or as `{"sites":[...]}` with `json`.
pub async fn run(store: &dyn Store, json: bool) -> anyhow::Result<()> {
    let sites = list(store).await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "sites": sites }))?
        );
        return Ok(());
    }
    let rows: Vec<Vec<String>> = sites
        .iter()
        .map(|l| {
            vec![
                l.site.id.to_string(),
                l.site.name.clone(),
                l.site.timezone.clone(),
                cell_networks(&l.site.allowed_networks),
                cell_time(l.sync.last_push_at),
                cell_time(l.sync.last_pull_at),
                l.sync.pull_lag.to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(
            &[
                "ID",
                "NAME",
                "TIMEZONE",
                "NETWORKS",
                "LAST PUSH",
                "LAST PULL",
                "PULL LAG"
            ],
            &rows
        )
    );
    if sites.is_empty() {
        eprintln!("no sites yet: create one with POST /v1/sites");
    }
    Ok(())
}
