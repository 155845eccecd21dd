//! Who sees which live events: the one table for every device kind and for staff.
//!
//! A credential with `WatchLive` may connect; what it then receives depends on who it is. A
//! scoreboard is a public screen: it shows sessions and scores, never sales or plug control. A
//! game station follows scores only. Terminals see the sessions they serve (and the POS its
//! sales). Staff see everything.

use super::LiveEvent;
use aero_shared::auth::principal::{DeviceKind, Principal};

/// What an event is about; every event belongs to exactly one topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topic {
    /// Check-ins and sessions running out or ending.
    Sessions,
    Scores,
    Sales,
    Plugs,
}

impl Topic {
    pub fn of(event: &LiveEvent) -> Self {
        match event {
            LiveEvent::Checkin { .. }
            | LiveEvent::SessionExpiring { .. }
            | LiveEvent::SessionExpired { .. } => Self::Sessions,
            LiveEvent::Score { .. } => Self::Scores,
            LiveEvent::Order { .. } => Self::Sales,
            LiveEvent::PlugState { .. } => Self::Plugs,
        }
    }
}

/// Who is watching, as far as visibility goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audience {
    /// Any staff role: owner, admin, manager, staff.
    Staff,
    Device(DeviceKind),
}

impl Audience {
    pub fn of(principal: &Principal) -> Self {
        match principal {
            Principal::Staff { .. } => Self::Staff,
            Principal::Device { kind, .. } => Self::Device(*kind),
        }
    }

    /// The table.
    pub fn topics(self) -> &'static [Topic] {
        use Topic::*;
        match self {
            Self::Staff => &[Sessions, Scores, Sales, Plugs],
            Self::Device(DeviceKind::Scoreboard) => &[Sessions, Scores],
            Self::Device(DeviceKind::Game) => &[Scores],
            Self::Device(DeviceKind::Pos) => &[Sessions, Sales],
            Self::Device(DeviceKind::Kiosk | DeviceKind::Tablet) => &[Sessions],
            Self::Device(DeviceKind::Edge) => &[],
        }
    }

    pub fn sees(self, event: &LiveEvent) -> bool {
        self.topics().contains(&Topic::of(event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use uuid::Uuid;

    fn every_event() -> Vec<LiveEvent> {
        let id = Uuid::nil();
        let session = (id, id, "W1".to_string(), Utc::now());
        vec![
            LiveEvent::Checkin {
                checkin_id: id,
                customer_id: id,
                wristband: session.2.clone(),
                product_id: id,
                ends_at: session.3,
            },
            LiveEvent::SessionExpiring {
                checkin_id: id,
                customer_id: id,
                wristband: session.2.clone(),
                ends_at: session.3,
            },
            LiveEvent::SessionExpired {
                checkin_id: id,
                customer_id: id,
                wristband: session.2.clone(),
                ends_at: session.3,
            },
            LiveEvent::Score {
                score_id: id,
                game_id: id,
                customer_id: id,
                first_name: None,
                score: 1,
            },
            LiveEvent::Order {
                order_id: id,
                customer_id: None,
                total_cents: 1,
            },
            LiveEvent::PlugState {
                plug_id: id,
                state: "on".into(),
                reachable: true,
            },
        ]
    }

    fn seen_by(audience: Audience) -> Vec<&'static str> {
        every_event()
            .iter()
            .filter(|e| audience.sees(e))
            .map(LiveEvent::kind)
            .collect()
    }

    #[test]
    fn each_audience_sees_only_its_topics() {
        let sessions = ["checkin", "session_expiring", "session_expired"];
        assert_eq!(seen_by(Audience::Staff).len(), every_event().len());
        assert_eq!(
            seen_by(Audience::Device(DeviceKind::Scoreboard)),
            [&sessions[..], &["score"]].concat()
        );
        assert_eq!(seen_by(Audience::Device(DeviceKind::Game)), ["score"]);
        assert_eq!(
            seen_by(Audience::Device(DeviceKind::Pos)),
            [&sessions[..], &["order"]].concat()
        );
        assert_eq!(seen_by(Audience::Device(DeviceKind::Kiosk)), sessions);
        assert_eq!(seen_by(Audience::Device(DeviceKind::Tablet)), sessions);
        assert!(seen_by(Audience::Device(DeviceKind::Edge)).is_empty());
    }
}
