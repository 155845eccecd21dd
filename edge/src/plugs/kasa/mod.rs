//! The TP-Link Kasa local protocol, spoken by our own code: the wire format ([`codec`]), how a
//! request reaches a device ([`transport`]) and what is asked of it ([`commands`]).
//!
//! Every failure is a [`KasaError`], which knows whether trying again could help.

pub mod codec;
pub mod commands;
pub mod transport;

pub use commands::{Emeter, OutletInfo, SysInfo};
pub use transport::{DEFAULT_PORT, Endpoint, TcpTransport, Timeouts, Transport};

use std::io;
use std::sync::Arc;
use std::time::Duration;

/// Why a request to a plug failed. Cheap to clone, so the last failure can be both returned and
/// kept as the device's status.
#[derive(Clone, Debug, thiserror::Error)]
pub enum KasaError {
    /// Nothing listens on the port. A rebooting plug does this for a few seconds; a plug that
    /// keeps doing it runs firmware that closed the local port.
    #[error(
        "the plug refused the connection; if this persists, its firmware has closed port 9999 to \
         local control: enable \"third-party compatibility\" for this plug in the Kasa or Tapo app"
    )]
    Refused,
    /// The connection could not be made (no route, host unreachable, name not resolved).
    #[error("could not connect to the plug: {0}")]
    Connect(#[source] Arc<io::Error>),
    #[error("no connection to the plug within {0:?}")]
    ConnectTimeout(Duration),
    /// Connected, but the whole reply did not arrive in time.
    #[error("no complete reply from the plug within {0:?}")]
    ReplyTimeout(Duration),
    #[error("the plug closed the connection after {received} bytes of its reply")]
    ClosedEarly { received: usize },
    #[error("the plug reset the connection")]
    Reset,
    #[error("connection to the plug failed: {0}")]
    Io(#[source] Arc<io::Error>),
    /// The reply is not this protocol: undecodable, not JSON, or JSON of the wrong shape.
    #[error("the plug's reply is not the Kasa protocol: {0}")]
    Garbage(String),
    /// The plug understood and answered with a non-zero `err_code`.
    #[error("the plug refused {command}: err_code {code}: {message}")]
    Device {
        /// `module` or `module.method`, whichever level carried the error.
        command: String,
        code: i64,
        message: String,
    },
    /// A strip outlet that the strip does not have, or an outlet asked of a plain plug.
    #[error("the plug has no outlet {0:?}")]
    UnknownOutlet(String),
}

impl KasaError {
    /// Whether the same request may succeed if sent again soon: lost or slow connections, yes;
    /// an answer the plug gave on purpose, or one we cannot understand, no. A refused connection
    /// is not retried either: it is answered at once, and a plug that is rebooting or has closed
    /// its port will still refuse a second later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect(_)
            | Self::ConnectTimeout(_)
            | Self::ReplyTimeout(_)
            | Self::ClosedEarly { .. }
            | Self::Reset
            | Self::Io(_) => true,
            Self::Refused | Self::Garbage(_) | Self::Device { .. } | Self::UnknownOutlet(_) => {
                false
            }
        }
    }

    /// Whether the plug answered in its protocol: then it is reachable, whatever it said.
    pub fn plug_answered(&self) -> bool {
        matches!(self, Self::Device { .. } | Self::UnknownOutlet(_))
    }
}
