//! The audit log of HQ's writes and its filters.

use aero_central::store::{Actor, AuditActor, AuditFilter, Store};
use aero_shared::wire::SiteRecord;
use std::sync::Arc;
use uuid::Uuid;

use crate::helpers::*;

pub(crate) async fn hq_writes_are_audited(store: Arc<dyn Store>) {
    let site = new_site(&store).await;
    let d = device(site.id, &unique("hash"));
    store.create_device(&actor(), &d).await.unwrap();
    store.revoke_device(&actor(), d.id, now()).await.unwrap();
    let entries = store
        .list_audit(&AuditFilter::site(site.id), 10)
        .await
        .unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        vec!["device.revoke", "device.create", "site.create"]
    );
    assert!(entries.iter().all(|e| e.actor_name == "contract-test"));
}

/// The audit log narrows to a venue, an actor (by id, or by name ignoring case) and an action,
/// each alone or together.
pub(crate) async fn the_audit_log_filters_by_venue_actor_and_action(store: Arc<dyn Store>) {
    let person = |name: &str| Actor {
        kind: "user",
        id: Some(Uuid::now_v7()),
        name: unique(name),
        ip: None,
        request_id: None,
    };
    let (ada, bob) = (person("Ada"), person("Bob"));
    let mut sites = Vec::new();
    for who in [&ada, &bob] {
        let site = SiteRecord {
            id: Uuid::now_v7(),
            name: unique("site"),
            timezone: "UTC".into(),
            allowed_networks: vec![],
            created_at: now(),
        };
        store.create_site(who, &site).await.unwrap();
        sites.push(site.id);
    }
    // Bob registers a device at Ada's venue.
    store
        .create_device(&bob, &device(sites[0], &unique("hash")))
        .await
        .unwrap();
    let listed = |filter: AuditFilter| {
        let store = Arc::clone(&store);
        async move {
            let mut rows: Vec<(String, String, Option<Uuid>)> = store
                .list_audit(&filter, 50)
                .await
                .unwrap()
                .into_iter()
                .map(|e| (e.action, e.actor_name, e.site_id))
                .collect();
            rows.sort();
            rows
        }
    };
    let row =
        |action: &str, who: &Actor, site: Uuid| (action.to_string(), who.name.clone(), Some(site));

    assert_eq!(
        listed(AuditFilter::site(sites[0])).await,
        [
            row("device.create", &bob, sites[0]),
            row("site.create", &ada, sites[0])
        ]
    );
    assert_eq!(
        listed(AuditFilter::new(
            Some(sites[0]),
            None,
            Some("device.create")
        ))
        .await,
        [row("device.create", &bob, sites[0])]
    );
    let shouted = ada.name.to_uppercase();
    assert_eq!(
        listed(AuditFilter::new(None, Some(&shouted), None)).await,
        [row("site.create", &ada, sites[0])],
        "a name matches ignoring case"
    );
    let bob_id = bob.id.unwrap().to_string();
    assert_eq!(
        AuditFilter::new(None, Some(&bob_id), None).actor,
        Some(AuditActor::Id(bob.id.unwrap()))
    );
    assert_eq!(
        listed(AuditFilter::new(None, Some(&bob_id), None)).await,
        [
            row("device.create", &bob, sites[0]),
            row("site.create", &bob, sites[1])
        ]
    );
    assert_eq!(
        listed(AuditFilter::new(None, Some(&bob_id), Some("Site.Create"))).await,
        [row("site.create", &bob, sites[1])],
        "actions are named in lower case"
    );
    assert!(
        listed(AuditFilter::new(Some(sites[1]), Some(&ada.name), None))
            .await
            .is_empty()
    );
}
