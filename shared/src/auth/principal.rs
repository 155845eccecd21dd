//! Who is calling (a person or a machine), what each role or device kind may do, and where.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use uuid::Uuid;

/// Staff roles. Owners and admins are chain-wide (HQ); managers and staff belong to sites.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Admin,
    Manager,
    Staff,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Admin => "admin",
            Self::Manager => "manager",
            Self::Staff => "staff",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "owner" => Some(Self::Owner),
            "admin" => Some(Self::Admin),
            "manager" => Some(Self::Manager),
            "staff" => Some(Self::Staff),
            _ => None,
        }
    }

    /// Chain-wide roles see every site; site roles only the sites they are assigned to.
    pub fn is_chain_wide(self) -> bool {
        matches!(self, Self::Owner | Self::Admin)
    }

    pub fn permissions(self) -> &'static [Permission] {
        use Permission::*;
        match self {
            Self::Owner | Self::Admin => Permission::ALL,
            Self::Manager => &[
                ReadSites,
                ReadSyncHealth,
                ReadReports,
                ReadAudit,
                ReadCatalog,
                ReadPlugs,
                ControlPlugs,
                ReadStatus,
                LookupCustomers,
                RegisterCustomers,
                SignWaivers,
                CreateOrders,
                ReadOrders,
                RefundOrders,
                ReadBalances,
                SpendBalances,
                AdjustBalances,
                CheckIn,
                ReadSessions,
                PostScores,
                ReadLeaderboards,
                WatchLive,
                ManageDeadLetters,
                ReadWaiverTexts,
            ],
            Self::Staff => &[
                ReadSites,
                ReadCatalog,
                ReadPlugs,
                ReadStatus,
                LookupCustomers,
                RegisterCustomers,
                SignWaivers,
                CreateOrders,
                ReadOrders,
                ReadBalances,
                SpendBalances,
                CheckIn,
                ReadSessions,
                PostScores,
                ReadLeaderboards,
                WatchLive,
                ReadWaiverTexts,
            ],
        }
    }
}

/// Kinds of machine that hold an API key. `Edge` is a venue's edge node itself: it is issued by
/// enrollment, never through the device API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    Kiosk,
    Pos,
    Tablet,
    Game,
    Scoreboard,
    Edge,
}

impl DeviceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kiosk => "kiosk",
            Self::Pos => "pos",
            Self::Tablet => "tablet",
            Self::Game => "game",
            Self::Scoreboard => "scoreboard",
            Self::Edge => "edge",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "kiosk" => Some(Self::Kiosk),
            "pos" => Some(Self::Pos),
            "tablet" => Some(Self::Tablet),
            "game" => Some(Self::Game),
            "scoreboard" => Some(Self::Scoreboard),
            "edge" => Some(Self::Edge),
            _ => None,
        }
    }

    pub fn permissions(self) -> &'static [Permission] {
        use Permission::*;
        match self {
            Self::Kiosk => &[
                ReadStatus,
                ReadCatalog,
                LookupCustomers,
                RegisterCustomers,
                SignWaivers,
                CreateOrders,
                ReadBalances,
                SpendBalances,
                CheckIn,
                WatchLive,
                ReadSessions,
                ReadWaiverTexts,
            ],
            Self::Pos => &[
                ReadStatus,
                ReadCatalog,
                LookupCustomers,
                RegisterCustomers,
                CreateOrders,
                ReadOrders,
                ReadBalances,
                SpendBalances,
                CheckIn,
                WatchLive,
                ReadSessions,
                ReadWaiverTexts,
            ],
            Self::Tablet => &[
                ReadStatus,
                LookupCustomers,
                RegisterCustomers,
                SignWaivers,
                WatchLive,
                ReadWaiverTexts,
            ],
            Self::Game => &[
                ReadStatus,
                PostScores,
                ReadLeaderboards,
                ReadBalances,
                SpendBalances,
                WatchLive,
                ReadWaiverTexts,
            ],
            Self::Scoreboard => &[
                ReadStatus,
                ReadLeaderboards,
                WatchLive,
                ReadSessions,
                ReadWaiverTexts,
            ],
            Self::Edge => &[Sync],
        }
    }
}

/// What a route needs. Every route names exactly one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Permission {
    ManageSites,
    ReadSites,
    IssueEnrollmentTokens,
    ManageDevices,
    ManageUsers,
    ManageCatalog,
    ReadCatalog,
    ManagePlugs,
    ReadPlugs,
    ControlPlugs,
    ReadAudit,
    ReadReports,
    ReadSyncHealth,
    Sync,
    ReadStatus,
    LookupCustomers,
    RegisterCustomers,
    SignWaivers,
    CreateOrders,
    /// List a venue's orders of a day (the counter's till view; a self-service kiosk has no
    /// business listing other customers' purchases).
    ReadOrders,
    RefundOrders,
    /// A customer's balances on their own (the kiosk lookup carries them too).
    ReadBalances,
    /// Spend arcade credits (or another balance) at a game station or the counter.
    SpendBalances,
    AdjustBalances,
    CheckIn,
    /// The jump sessions running now: gate staff, kiosks, and scoreboards showing who is on.
    ReadSessions,
    PostScores,
    ReadLeaderboards,
    WatchLive,
    /// Retry or discard an edge's dead letters.
    ManageDeadLetters,
    /// The venue's current waiver text: every terminal and staff member of a site may show it,
    /// since a waiver is signed wherever the customer happens to be.
    ReadWaiverTexts,
}

impl Permission {
    pub const ALL: &'static [Permission] = &[
        Self::ManageSites,
        Self::ReadSites,
        Self::IssueEnrollmentTokens,
        Self::ManageDevices,
        Self::ManageUsers,
        Self::ManageCatalog,
        Self::ReadCatalog,
        Self::ManagePlugs,
        Self::ReadPlugs,
        Self::ControlPlugs,
        Self::ReadAudit,
        Self::ReadReports,
        Self::ReadSyncHealth,
        Self::ReadStatus,
        Self::LookupCustomers,
        Self::RegisterCustomers,
        Self::SignWaivers,
        Self::CreateOrders,
        Self::ReadOrders,
        Self::RefundOrders,
        Self::ReadBalances,
        Self::SpendBalances,
        Self::AdjustBalances,
        Self::CheckIn,
        Self::ReadSessions,
        Self::PostScores,
        Self::ReadLeaderboards,
        Self::WatchLive,
        Self::ManageDeadLetters,
        Self::ReadWaiverTexts,
    ];

    /// Sensitive operations also require the caller to be inside the allowed networks. Site
    /// management is one: it can widen a site's own allowed networks.
    pub fn is_sensitive(self) -> bool {
        matches!(
            self,
            Self::ManageSites
                | Self::RefundOrders
                | Self::AdjustBalances
                | Self::ControlPlugs
                | Self::ManageDevices
                | Self::IssueEnrollmentTokens
                | Self::ManageUsers
        )
    }
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq)]
pub enum Principal {
    Staff {
        user_id: Uuid,
        username: String,
        role: Role,
        /// Empty for chain-wide roles.
        sites: Vec<Uuid>,
    },
    Device {
        device_id: Uuid,
        site_id: Uuid,
        kind: DeviceKind,
        /// Empty means "the site's allowed networks apply".
        allowed_networks: Vec<IpNet>,
    },
}

impl Principal {
    /// A stable key for rate limiting and idempotency scoping.
    pub fn id(&self) -> Uuid {
        match self {
            Self::Staff { user_id, .. } => *user_id,
            Self::Device { device_id, .. } => *device_id,
        }
    }

    pub fn kind_label(&self) -> &'static str {
        match self {
            Self::Staff { .. } => "user",
            Self::Device { .. } => "device",
        }
    }

    pub fn display_name(&self) -> String {
        match self {
            Self::Staff { username, .. } => username.clone(),
            Self::Device {
                kind, device_id, ..
            } => format!("{}:{device_id}", kind.as_str()),
        }
    }

    pub fn has(&self, permission: Permission) -> bool {
        match self {
            Self::Staff { role, .. } => role.permissions().contains(&permission),
            Self::Device { kind, .. } => kind.permissions().contains(&permission),
        }
    }

    pub fn is_chain_wide(&self) -> bool {
        matches!(self, Self::Staff { role, .. } if role.is_chain_wide())
    }

    pub fn can_access_site(&self, site_id: Uuid) -> bool {
        match self {
            Self::Staff { role, sites, .. } => role.is_chain_wide() || sites.contains(&site_id),
            Self::Device { site_id: own, .. } => *own == site_id,
        }
    }

    /// The one site a site-bound caller acts for, if exactly one.
    pub fn home_site(&self) -> Option<Uuid> {
        match self {
            Self::Device { site_id, .. } => Some(*site_id),
            Self::Staff { sites, role, .. } if !role.is_chain_wide() && sites.len() == 1 => {
                Some(sites[0])
            }
            Self::Staff { .. } => None,
        }
    }
}

/// True when `addr` is inside any of `networks`. IPv4-mapped IPv6 addresses count as IPv4.
pub fn address_allowed(addr: IpAddr, networks: &[IpNet]) -> bool {
    let addr = match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr),
        v4 => v4,
    };
    networks.iter().any(|net| net.contains(&addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staff_cannot_refund_but_managers_can() {
        let staff = Principal::Staff {
            user_id: Uuid::nil(),
            username: "s".into(),
            role: Role::Staff,
            sites: vec![Uuid::nil()],
        };
        assert!(!staff.has(Permission::RefundOrders));
        let manager = Principal::Staff {
            user_id: Uuid::nil(),
            username: "m".into(),
            role: Role::Manager,
            sites: vec![Uuid::nil()],
        };
        assert!(manager.has(Permission::RefundOrders));
    }

    #[test]
    fn machines_do_what_their_kind_is_for() {
        use DeviceKind::*;
        use Permission::*;
        let sells = |kind: DeviceKind| kind.permissions().contains(&CreateOrders);
        assert!(sells(Kiosk) && sells(Pos));
        assert!(!sells(Game) && !sells(Scoreboard) && !sells(Tablet));
        let spends = |kind: DeviceKind| kind.permissions().contains(&SpendBalances);
        assert!(spends(Game) && spends(Pos) && spends(Kiosk) && !spends(Scoreboard));
        // Listing a day's orders is for the till, not a self-service kiosk.
        assert!(Pos.permissions().contains(&ReadOrders));
        assert!(!Kiosk.permissions().contains(&ReadOrders));
        assert!(Scoreboard.permissions().contains(&ReadSessions));
        for kind in [Kiosk, Pos, Tablet, Game, Scoreboard] {
            assert!(!kind.permissions().contains(&AdjustBalances));
            assert!(!kind.permissions().contains(&RefundOrders));
        }
        assert!(AdjustBalances.is_sensitive() && !SpendBalances.is_sensitive());
        assert!(Role::Staff.permissions().contains(&SpendBalances));
        assert!(!Role::Staff.permissions().contains(&AdjustBalances));
        assert!(Permission::ALL.contains(&SpendBalances));
        // Whichever terminal takes a signature shows the waiver text first.
        for kind in [Kiosk, Pos, Tablet, Game, Scoreboard] {
            assert!(kind.permissions().contains(&ReadWaiverTexts), "{kind:?}");
        }
        assert!(!Edge.permissions().contains(&ReadWaiverTexts));
        for role in [Role::Owner, Role::Admin, Role::Manager, Role::Staff] {
            assert!(role.permissions().contains(&ReadWaiverTexts), "{role:?}");
        }
    }

    #[test]
    fn devices_are_bound_to_their_site() {
        let site = Uuid::now_v7();
        let kiosk = Principal::Device {
            device_id: Uuid::now_v7(),
            site_id: site,
            kind: DeviceKind::Kiosk,
            allowed_networks: vec![],
        };
        assert!(kiosk.can_access_site(site));
        assert!(!kiosk.can_access_site(Uuid::now_v7()));
        assert!(!kiosk.has(Permission::Sync));
    }

    #[test]
    fn mapped_ipv6_addresses_match_ipv4_networks() {
        let nets = vec!["127.0.0.0/8".parse().unwrap()];
        assert!(address_allowed("::ffff:127.0.0.1".parse().unwrap(), &nets));
        assert!(!address_allowed("10.1.2.3".parse().unwrap(), &nets));
    }
}
