//! `aero-central devices --site SITE_ID`: a site's devices (the edge's own included) with
//! their kind, networks and whether they are revoked; never their key hashes.

use super::{cell_networks, cell_time};
use crate::routes::devices::DeviceView;
use crate::store::{Store, listing};
use aero_shared::table;
use aero_shared::wire::DeviceRecord;
use uuid::Uuid;

/// Prints the site's devices as a table, or as `{"devices":[...]}` with `json`.
pub async fn run(store: &dyn Store, site_id: Uuid, json: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        store.get_site(site_id).await?.is_some(),
        "no site {site_id}: `aero-central sites` lists them"
    );
    let devices = listing::every(
        |after, limit| async move { store.list_devices(site_id, after.as_ref(), limit).await },
        |d: &DeviceRecord| (d.created_at, d.id),
    )
    .await?;
    let devices: Vec<DeviceView> = devices.into_iter().map(DeviceView::from).collect();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "devices": devices }))?
        );
        return Ok(());
    }
    let rows: Vec<Vec<String>> = devices
        .iter()
        .map(|d| {
            vec![
                d.id.to_string(),
                d.name.clone(),
                d.kind.as_str().to_string(),
                cell_networks(&d.allowed_networks),
                cell_time(Some(d.created_at)),
                cell_time(d.revoked_at),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(
            &["ID", "NAME", "KIND", "NETWORKS", "CREATED", "REVOKED"],
            &rows
        )
    );
    Ok(())
}
