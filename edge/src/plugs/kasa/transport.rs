//! How one JSON request reaches a plug and its reply comes back. [`TcpTransport`] speaks the
//! classic protocol on TCP 9999; newer firmware's KLAP can be another [`Transport`].

use super::KasaError;
use super::codec::{self, FrameError};
use async_trait::async_trait;
use serde_json::Value;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// The port Kasa plugs answer the local protocol on.
pub const DEFAULT_PORT: u16 = 9999;

/// Sends requests to one device.
#[async_trait]
pub trait Transport: Send + Sync + fmt::Debug {
    /// Sends `request` to the device and returns its reply, or why there is none.
    async fn request(&self, request: &Value) -> Result<Value, KasaError>;
}

/// Where a plug listens.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// `host` on the default port.
    pub fn new(host: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            port: DEFAULT_PORT,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Bounds on one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing the TCP connection.
    pub connect: Duration,
    /// Sending the request and receiving the whole reply. A deadline for the reply rather than
    /// for each read, so a plug dribbling bytes cannot hold a request open forever.
    pub read: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(3),
            read: Duration::from_secs(3),
        }
    }
}

/// The classic protocol: one TCP connection per request, closed when the request ends however
/// it ends, so a venue's hundreds of polls a minute never accumulate sockets.
#[derive(Clone, Debug)]
pub struct TcpTransport {
    endpoint: Endpoint,
    timeouts: Timeouts,
}

impl TcpTransport {
    pub fn new(endpoint: Endpoint, timeouts: Timeouts) -> Self {
        Self { endpoint, timeouts }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
}

#[async_trait]
impl Transport for TcpTransport {
    async fn request(&self, request: &Value) -> Result<Value, KasaError> {
        let address = (self.endpoint.host.as_str(), self.endpoint.port);
        let mut stream = tokio::time::timeout(self.timeouts.connect, TcpStream::connect(address))
            .await
            .map_err(|_| KasaError::ConnectTimeout(self.timeouts.connect))?
            .map_err(connect_error)?;
        let body = request.to_string();
        let exchange = async {
            codec::write_frame(&mut stream, body.as_bytes()).await?;
            codec::read_frame(&mut stream).await
        };
        let reply = tokio::time::timeout(self.timeouts.read, exchange)
            .await
            .map_err(|_| KasaError::ReplyTimeout(self.timeouts.read))?
            .map_err(frame_error)?;
        drop(stream);
        serde_json::from_slice(&reply)
            .map_err(|err| KasaError::Garbage(format!("{err}; reply starts {:?}", preview(&reply))))
    }
}

fn connect_error(err: io::Error) -> KasaError {
    match err.kind() {
        io::ErrorKind::ConnectionRefused => KasaError::Refused,
        _ => KasaError::Connect(Arc::new(err)),
    }
}

fn frame_error(err: FrameError) -> KasaError {
    match err {
        FrameError::Eof => KasaError::ClosedEarly { received: 0 },
        FrameError::Truncated { received } => KasaError::ClosedEarly { received },
        FrameError::TooLarge(len) => {
            KasaError::Garbage(format!("a frame of {len} bytes announced"))
        }
        FrameError::Io(err) => io_error(err),
    }
}

fn io_error(err: io::Error) -> KasaError {
    match err.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => KasaError::Reset,
        _ => KasaError::Io(Arc::new(err)),
    }
}

/// The first bytes of an unreadable reply, for the operator who has to find out what answers
/// on that port.
fn preview(reply: &[u8]) -> String {
    String::from_utf8_lossy(&reply[..reply.len().min(40)]).into_owned()
}
