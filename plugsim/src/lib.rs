//! `aero-plugsim`: TP-Link Kasa plugs simulated on loopback, speaking the real protocol through
//! the edge's own codec. Each [`SimPlug`] listens on its own `127.0.0.1` port, keeps its relays,
//! answers sysinfo, relay and emeter commands as its [`Model`] does, answers UDP discovery on a
//! `127.0.0.1` port of its own, and can be scripted to
//! misbehave one request at a time ([`Fault`]) or to refuse connections for a while. It counts
//! the requests it saw and the connections still open, so tests can assert retries and that
//! no socket was left behind.

mod discovery;
mod fault;
mod model;

pub use fault::Fault;
pub use model::{Model, load_mw};

use aero_edge::plugs::kasa::Endpoint;
use model::Device;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// Gives every simulated device in the process its own device id and MAC.
static NEXT_SERIAL: AtomicU32 = AtomicU32::new(1);

/// A simulated plug on loopback. Dropping it closes its port and every connection.
#[derive(Debug)]
pub struct SimPlug {
    addr: SocketAddr,
    /// Where the plug answers discovery. Its own port rather than 9999, so tests can run many
    /// plugs side by side and ask each one without broadcasting.
    udp_addr: SocketAddr,
    shared: Arc<Shared>,
    supervisor: JoinHandle<()>,
    responder: JoinHandle<()>,
}

impl SimPlug {
    /// Binds `127.0.0.1` on a free TCP port and a free UDP port and starts answering as
    /// `model`, all relays off. Both ports take requests before this returns.
    pub fn start(model: Model) -> io::Result<Self> {
        let socket = reserve((Ipv4Addr::LOCALHOST, 0).into())?;
        let addr = socket.local_addr()?;
        let listener = socket.listen(1024)?;
        let udp = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        udp.set_nonblocking(true)?;
        let udp = UdpSocket::from_std(udp)?;
        let udp_addr = udp.local_addr()?;
        let serial = NEXT_SERIAL.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(Shared {
            device: Mutex::new(Device::new(model, serial)),
            script: Mutex::new(VecDeque::new()),
            requests: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
            open: watch::Sender::new(0),
            power: watch::Sender::new(PowerCommand {
                seq: 0,
                power: Power::On,
            }),
            port: watch::Sender::new(PortState {
                online: true,
                applied: 0,
            }),
        });
        // Subscribed here, not in the task: a command given before the task first runs (a
        // reboot right after start) must still be seen as a change.
        let power = shared.power.subscribe();
        let supervisor = tokio::spawn(supervise(listener, addr, Arc::clone(&shared), power));
        let responder = tokio::spawn(discovery::answer(udp, Arc::clone(&shared)));
        Ok(Self {
            addr,
            udp_addr,
            shared,
            supervisor,
            responder,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the plug answers discovery datagrams.
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    /// Where the edge finds this plug.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            host: self.addr.ip().to_string(),
            port: self.addr.port(),
        }
    }

    pub fn model(&self) -> Model {
        self.shared.device().model
    }

    pub fn device_id(&self) -> String {
        self.shared.device().device_id.clone()
    }

    /// The name the plug reports in its sysinfo.
    pub fn alias(&self) -> String {
        self.shared.device().alias.clone()
    }

    /// The full child id of strip outlet `index` (from 0).
    pub fn child_id(&self, index: usize) -> String {
        self.shared.device().child_id(index)
    }

    /// Every relay, in outlet order.
    pub fn relays(&self) -> Vec<bool> {
        self.shared.device().relays.clone()
    }

    /// Switches a relay by hand, as someone pressing the plug's button would.
    ///
    /// # Panics
    /// When the model has no outlet `index`.
    pub fn set_relay(&self, index: usize, on: bool) {
        self.shared.device().relays[index] = on;
    }

    /// Appends faults to the script: each request received takes the next one, and requests
    /// find the plug well-behaved once the script is used up.
    pub fn script(&self, faults: impl IntoIterator<Item = Fault>) {
        self.shared.script().extend(faults);
    }

    /// Faults scripted and not yet taken by a request.
    pub fn faults_left(&self) -> usize {
        self.shared.script().len()
    }

    /// Requests received (whole frames), faulted ones included.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Connections accepted since the start.
    pub fn connections(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections accepted and not yet closed.
    pub fn open_connections(&self) -> usize {
        *self.shared.open.borrow()
    }

    /// Waits until no connection is open.
    pub async fn wait_closed(&self) {
        let mut open = self.shared.open.subscribe();
        let _ = open.wait_for(|open| *open == 0).await;
    }

    /// Whether the port accepts connections.
    pub fn is_online(&self) -> bool {
        self.shared.is_online()
    }

    /// Waits until the port accepts connections again (after a reboot).
    pub async fn wait_online(&self) {
        let mut port = self.shared.port.subscribe();
        let _ = port.wait_for(|port| port.online).await;
    }

    /// Stops listening, as firmware that closed port 9999 does: connections are refused until
    /// [`Self::open_port`]. The port stays reserved for this plug meanwhile. Open connections
    /// are dropped.
    pub async fn close_port(&self) {
        let seq = self.shared.command(Power::Off { until: None });
        self.applied(seq).await;
    }

    /// Listens again after [`Self::close_port`] or during a reboot.
    pub async fn open_port(&self) {
        let seq = self.shared.command(Power::On);
        self.applied(seq).await;
    }

    /// Reboots now: connections are dropped and refused for `offline` (tokio time, so paused
    /// tests can skip it), then accepted again with the relays as they were.
    pub async fn reboot(&self, offline: Duration) {
        let seq = self.shared.reboot(offline);
        self.applied(seq).await;
    }

    async fn applied(&self, seq: u64) {
        let mut port = self.shared.port.subscribe();
        let _ = port.wait_for(|port| port.applied >= seq).await;
    }
}

impl Drop for SimPlug {
    fn drop(&mut self) {
        self.supervisor.abort();
        self.responder.abort();
    }
}

/// What a plug's port and its connections share.
#[derive(Debug)]
pub(crate) struct Shared {
    device: Mutex<Device>,
    script: Mutex<VecDeque<Fault>>,
    requests: AtomicUsize,
    accepted: AtomicUsize,
    open: watch::Sender<usize>,
    /// What the port is told to be; the supervisor carries it out.
    power: watch::Sender<PowerCommand>,
    /// What the port is, and the last command carried out.
    port: watch::Sender<PortState>,
}

impl Shared {
    fn device(&self) -> MutexGuard<'_, Device> {
        self.device
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn script(&self) -> MutexGuard<'_, VecDeque<Fault>> {
        self.script
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn next_fault(&self) -> Option<Fault> {
        self.script().pop_front()
    }

    pub(crate) fn answer(&self, request: &Value, forced_error: Option<(i64, &str)>) -> Value {
        self.device().answer(request, forced_error)
    }

    /// The reply to `system.get_sysinfo`, as a TCP request for it would get.
    pub(crate) fn sysinfo_reply(&self) -> Value {
        self.answer(&json!({"system": {"get_sysinfo": {}}}), None)
    }

    /// Whether the port is up: not rebooting, not closed.
    pub(crate) fn is_online(&self) -> bool {
        self.port.borrow().online
    }

    /// Goes offline for `offline`; returns the command's sequence number.
    pub(crate) fn reboot(&self, offline: Duration) -> u64 {
        self.command(Power::Off {
            until: Some(Instant::now() + offline),
        })
    }

    fn command(&self, power: Power) -> u64 {
        let mut seq = 0;
        self.power.send_modify(|command| {
            command.seq += 1;
            command.power = power;
            seq = command.seq;
        });
        seq
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Power {
    On,
    /// Refusing connections, until the instant given or until told otherwise.
    Off {
        until: Option<Instant>,
    },
}

#[derive(Clone, Copy, Debug)]
struct PowerCommand {
    seq: u64,
    power: Power,
}

#[derive(Clone, Copy, Debug)]
struct PortState {
    online: bool,
    applied: u64,
}

/// Counts a connection as open for as long as it lives.
struct OpenConnection(Arc<Shared>);

impl OpenConnection {
    fn new(shared: Arc<Shared>) -> Self {
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        shared.open.send_modify(|open| *open += 1);
        Self(shared)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.send_modify(|open| *open -= 1);
    }
}

/// A socket bound to `addr` and not listening: connections to it are refused, and no other
/// socket can take the port.
fn reserve(addr: SocketAddr) -> io::Result<TcpSocket> {
    let socket = TcpSocket::new_v4()?;
    // Connections closed by the plug linger in TIME_WAIT on this port; rebinding must not wait.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

/// Owns the port: accepts and serves connections while on, refuses them while off.
async fn supervise(
    mut listener: TcpListener,
    addr: SocketAddr,
    shared: Arc<Shared>,
    mut power: watch::Receiver<PowerCommand>,
) {
    loop {
        let mut connections = JoinSet::new();
        let off = loop {
            tokio::select! {
                accepted = listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        spawn_connection(&mut connections, stream, &shared);
                    }
                }
                Some(_) = connections.join_next() => {}
                changed = power.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let command = *power.borrow_and_update();
                    if command.power == Power::On {
                        shared.port.send_modify(|port| port.applied = command.seq);
                    } else {
                        break command;
                    }
                }
            }
        };
        connections.shutdown().await;
        drop(listener);
        let reserved = match reserve(addr) {
            Ok(socket) => socket,
            Err(err) => {
                eprintln!("simulated plug {addr}: could not keep the port while offline: {err}");
                return;
            }
        };
        shared.port.send_replace(PortState {
            online: false,
            applied: off.seq,
        });
        loop {
            let command = *power.borrow_and_update();
            shared.port.send_modify(|port| port.applied = command.seq);
            let until = match command.power {
                Power::On => break,
                Power::Off { until } => until,
            };
            tokio::select! {
                () = sleep_until(until) => {
                    shared.command(Power::On);
                }
                changed = power.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
        listener = match reserved.listen(1024) {
            Ok(listener) => listener,
            Err(err) => {
                eprintln!("simulated plug {addr}: could not listen again: {err}");
                return;
            }
        };
        let seq = power.borrow().seq;
        shared.port.send_replace(PortState {
            online: true,
            applied: seq,
        });
    }
}

fn spawn_connection(connections: &mut JoinSet<()>, stream: TcpStream, shared: &Arc<Shared>) {
    let open = OpenConnection::new(Arc::clone(shared));
    let shared = Arc::clone(shared);
    connections.spawn(async move {
        fault::serve(stream, shared).await;
        drop(open);
    });
}

async fn sleep_until(until: Option<Instant>) {
    match until {
        Some(until) => tokio::time::sleep_until(until).await,
        None => std::future::pending().await,
    }
}
