//! The edge's site credential (`edge-credential.json`): issued once by central's enrollment,
//! kept owner-readable only, written atomically so a crash never leaves half a credential.

use aero_shared::wire::{EnrollRequest, EnrollResponse};
use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use uuid::Uuid;

pub const CREDENTIAL_FILE: &str = "edge-credential.json";

/// What the edge needs to talk to central as its site.
#[derive(Clone, Deserialize)]
pub struct Credential {
    pub central_url: String,
    pub site_id: Uuid,
    pub device_id: Uuid,
    pub api_key: SecretString,
    /// The first outbox seq this edge may use (a re-enrolled site continues its sequence).
    pub next_seq: i64,
    /// The central database that issued the credential; the edge syncs with no other.
    /// (Absent in credentials from before store ids: the first answer from central binds it.)
    #[serde(default)]
    pub store_id: Option<Uuid>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("central_url", &self.central_url)
            .field("site_id", &self.site_id)
            .field("device_id", &self.device_id)
            .field("api_key", &"**redacted**")
            .field("next_seq", &self.next_seq)
            .field("store_id", &self.store_id)
            .finish()
    }
}

/// The on-disk form; `SecretString` deliberately does not serialize, so the key is exposed
/// here and nowhere else.
#[derive(Serialize)]
struct CredentialFile<'a> {
    central_url: &'a str,
    site_id: Uuid,
    device_id: Uuid,
    api_key: &'a str,
    next_seq: i64,
    store_id: Option<Uuid>,
}

pub fn path_in(data_dir: &Path) -> PathBuf {
    data_dir.join(CREDENTIAL_FILE)
}

impl Credential {
    /// Reads the credential; `Ok(None)` when this edge has not been enrolled.
    pub fn load(data_dir: &Path) -> anyhow::Result<Option<Self>> {
        let path = path_in(data_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
        };
        let credential = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a valid credential", path.display()))?;
        Ok(Some(credential))
    }

    /// Writes the credential with mode 0600: temp file, fsync, rename, fsync of the directory.
    pub fn save(&self, data_dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let body = serde_json::to_vec_pretty(&CredentialFile {
            central_url: &self.central_url,
            site_id: self.site_id,
            device_id: self.device_id,
            api_key: self.api_key.expose_secret(),
            next_seq: self.next_seq,
            store_id: self.store_id,
        })?;
        aero_shared::files::write_private_atomically(&path_in(data_dir), &body)
    }

    /// The central URL without a trailing slash, ready for a path to be appended.
    pub fn central(&self) -> &str {
        self.central_url.trim_end_matches('/')
    }
}

/// Redeems a one-time enrollment token at central and stores the resulting credential.
/// Refuses when the data dir already holds one: re-enrolling must be a deliberate operator act
/// (remove the file), never something that silently orphans the old site's outbox.
pub async fn enroll(central_url: &str, token: &str, data_dir: &Path) -> anyhow::Result<Credential> {
    if Credential::load(data_dir)?.is_some() {
        anyhow::bail!(
            "{} already exists: this edge is enrolled",
            path_in(data_dir).display()
        );
    }
    redeem(central_url, token, data_dir).await
}

/// Enrolls a box that is already enrolled, keeping its database: its pending ops, dead letters
/// and replica stay, and sync resumes under the new credential. For a box central fenced (the
/// site was enrolled elsewhere, e.g. a cloned VM) or one whose credential a restored central no
/// longer knows, or a box restored from a backup onto a data directory without a credential.
/// The new enrollment fences every other box of the site. The token must be for the site this
/// box's database belongs to.
pub async fn enroll_again(
    central_url: &str,
    token: &str,
    data_dir: &Path,
) -> anyhow::Result<Credential> {
    let held_site = match Credential::load(data_dir)? {
        Some(previous) => Some(previous.site_id),
        None => crate::replica::site_of(data_dir)?,
    };
    let Some(held_site) = held_site else {
        return enroll(central_url, token, data_dir).await;
    };
    let credential = exchange(central_url, token).await?;
    anyhow::ensure!(
        credential.site_id == held_site,
        "the token is for site {}, but this box holds site {held_site}'s data; its credential \
         was not replaced (issue a token for site {held_site})",
        credential.site_id,
    );
    let (_replica, conn) =
        crate::replica::Replica::open(data_dir, credential.site_id, credential.next_seq)?;
    conn.execute(
        "UPDATE sync_state SET fenced = NULL, last_error = NULL,
            central_store_id = COALESCE(?1, central_store_id) WHERE id = 1",
        [credential.store_id],
    )?;
    credential.save(data_dir)?;
    Ok(credential)
}

async fn redeem(central_url: &str, token: &str, data_dir: &Path) -> anyhow::Result<Credential> {
    let credential = exchange(central_url, token).await?;
    credential.save(data_dir)?;
    Ok(credential)
}

/// Trades the token for a credential at central (nothing is written locally).
async fn exchange(central_url: &str, token: &str) -> anyhow::Result<Credential> {
    let central_url = central_url.trim_end_matches('/').to_string();
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let response = client
        .post(format!("{central_url}/v1/edge/enroll"))
        .json(&EnrollRequest {
            token: token.trim().to_string(),
            name: None,
        })
        .send()
        .await
        .with_context(|| format!("contacting {central_url}"))?;
    let status = response.status();
    if !status.is_success() {
        let detail = response.text().await.unwrap_or_default();
        anyhow::bail!("central refused the enrollment ({status}): {detail}");
    }
    let enrolled: EnrollResponse = response.json().await.context("decoding the enrollment")?;
    Ok(Credential {
        central_url,
        site_id: enrolled.site_id,
        device_id: enrolled.device_id,
        api_key: SecretString::from(enrolled.api_key),
        next_seq: enrolled.next_seq,
        store_id: Some(enrolled.store_id),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Credential {
        Credential {
            central_url: "http://127.0.0.1:8080".into(),
            site_id: Uuid::now_v7(),
            device_id: Uuid::now_v7(),
            api_key: SecretString::from("aero_secret-key-value".to_string()),
            next_seq: 3,
            store_id: Some(Uuid::now_v7()),
        }
    }

    #[test]
    fn round_trips_with_owner_only_mode_and_redacted_debug() {
        let dir = tempfile::tempdir().expect("tempdir");
        let credential = sample();
        credential.save(dir.path()).expect("save");
        let loaded = Credential::load(dir.path())
            .expect("load")
            .expect("present");
        assert_eq!(loaded.api_key.expose_secret(), "aero_secret-key-value");
        assert_eq!(loaded.next_seq, 3);
        assert!(!format!("{loaded:?}").contains("secret-key-value"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path_in(dir.path()))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // No temp files are left behind.
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);
    }

    #[test]
    fn missing_credential_is_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(Credential::load(dir.path()).expect("load").is_none());
    }
}
