//! What the edge's integration tests share: an edge for a new site, built on a fresh data
//! directory with a clock the test moves. Its credential names no reachable central and its
//! sync engine is never started, so every op it queues stays in its outbox.

use aero_edge::config::Settings;
use aero_edge::credential::Credential;
use aero_shared::auth::jwt::StaffIdentity;
use aero_shared::auth::principal::Role;
use aero_shared::clock::ManualClock;
use aero_shared::wire::UserRecord;
use serde_json::json;
use std::sync::Arc;
use uuid::Uuid;

/// The edge, its site, and the directory its data lives in (removed when dropped).
pub struct OfflineEdge {
    pub edge: aero_edge::Edge,
    pub site: Uuid,
    pub dir: tempfile::TempDir,
}

/// Builds an edge for a new site on `clock`, with rate limits out of the way.
pub fn offline_edge(clock: &ManualClock) -> OfflineEdge {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = Uuid::now_v7();
    let credential: Credential = serde_json::from_value(json!({
        "central_url": "http://127.0.0.1:9", "site_id": site, "device_id": Uuid::now_v7(),
        "api_key": "aero_unused", "next_seq": 1,
    }))
    .expect("credential");
    let mut settings = Settings {
        data_dir: Some(dir.path().to_path_buf()),
        ..Settings::default()
    };
    settings.limits.requests_per_second = 10_000;
    settings.limits.burst = 10_000;
    let edge = aero_edge::build_with_clock(&settings, credential, Arc::new(clock.clone()))
        .expect("build the edge");
    OfflineEdge { edge, site, dir }
}

impl OfflineEdge {
    /// A token the edge signed for `username` with `role` ("staff", "manager") at its site; the
    /// account is put in the replica first, as a pull from central would, since a staff token
    /// is only honoured while its account is there at the version it names.
    pub async fn staff_token(&self, username: &str, role: &str) -> String {
        let user = UserRecord {
            id: Uuid::now_v7(),
            username: username.into(),
            password_hash: String::new(),
            role: Role::parse(role).expect("a role"),
            site_ids: vec![self.site],
            created_at: chrono::Utc::now(),
            disabled_at: None,
            token_version: 0,
        };
        let identity = StaffIdentity {
            sub: user.id,
            username: username.into(),
            role: role.into(),
            sites: vec![self.site],
            version: user.token_version,
        };
        self.edge
            .state
            .writer
            .write(move |c| {
                c.execute(
                    "INSERT INTO users (id, username, disabled_at, data) VALUES (?1, ?2, NULL, ?3)",
                    rusqlite::params![user.id, user.username, serde_json::to_string(&user)?],
                )?;
                Ok(())
            })
            .await
            .expect("staff account in the replica");
        let (token, _) = self
            .edge
            .state
            .security
            .jwt
            .issue(identity, chrono::Utc::now())
            .expect("staff token");
        token
    }
}
