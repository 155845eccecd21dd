//! Misbehaviour a simulated plug can be scripted to show, one request at a time, and how each
//! is carried out on the connection that brought the request.

use crate::Shared;
use aero_edge::plugs::kasa::codec;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the simulator does with one request instead of answering it promptly. Faults are taken
/// from the script in order, one per request received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answers (and applies the request) only after this long.
    Delay(Duration),
    /// Never answers and does not apply the request; the connection stays open until the
    /// client closes it.
    NoReply,
    /// Applies the request, sends the reply's length header, then nothing more until the
    /// client closes.
    HeaderThenStall,
    /// Applies the request, sends the header and half of the reply, then closes.
    PartialThenClose,
    /// Drops the connection with a TCP reset, without applying the request.
    Reset,
    /// Answers with a well-framed payload that is not JSON.
    Garbage,
    /// Answers with a header announcing a 1 GiB reply, as another protocol on the port would.
    Oversized,
    /// Answers every command of the request with this non-zero `err_code` and `err_msg`,
    /// applying nothing.
    ErrCode { code: i64, message: String },
    /// Drops the connection and reboots: the port refuses connections for this long, then the
    /// plug answers again, relays as they were.
    Reboot(Duration),
}

/// Serves one accepted connection until the client closes it or a fault ends it.
pub(crate) async fn serve(mut stream: TcpStream, shared: Arc<Shared>) {
    loop {
        let Ok(request) = codec::read_frame(&mut stream).await else {
            return;
        };
        shared.count_request();
        let fault = shared.next_fault();
        let Ok(request) = serde_json::from_slice::<Value>(&request) else {
            let _ = codec::write_frame(
                &mut stream,
                b"{\"err_code\":-1,\"err_msg\":\"invalid request\"}",
            )
            .await;
            continue;
        };
        let keep_going = match fault {
            None => reply(&mut stream, &shared.answer(&request, None)).await,
            Some(Fault::Delay(delay)) => {
                tokio::time::sleep(delay).await;
                reply(&mut stream, &shared.answer(&request, None)).await
            }
            Some(Fault::NoReply) => {
                hold(&mut stream).await;
                false
            }
            Some(Fault::HeaderThenStall) => {
                let framed = framed_answer(&shared, &request);
                if stream.write_all(&framed[..4]).await.is_ok() {
                    hold(&mut stream).await;
                }
                false
            }
            Some(Fault::PartialThenClose) => {
                let framed = framed_answer(&shared, &request);
                let half = 4 + (framed.len() - 4) / 2;
                let _ = stream.write_all(&framed[..half]).await;
                let _ = stream.shutdown().await;
                false
            }
            Some(Fault::Reset) => {
                // A zero linger turns the close into a reset instead of an orderly FIN.
                let _ = stream.set_zero_linger();
                false
            }
            Some(Fault::Garbage) => codec::write_frame(&mut stream, b"\x00\x13not json at all\xff")
                .await
                .is_ok(),
            Some(Fault::Oversized) => {
                let _ = stream.write_all(&(1u32 << 30).to_be_bytes()).await;
                hold(&mut stream).await;
                false
            }
            Some(Fault::ErrCode { code, message }) => {
                reply(
                    &mut stream,
                    &shared.answer(&request, Some((code, &message))),
                )
                .await
            }
            Some(Fault::Reboot(offline)) => {
                shared.reboot(offline);
                false
            }
        };
        if !keep_going {
            return;
        }
    }
}

async fn reply(stream: &mut TcpStream, answer: &Value) -> bool {
    codec::write_frame(stream, answer.to_string().as_bytes())
        .await
        .is_ok()
}

fn framed_answer(shared: &Shared, request: &Value) -> Vec<u8> {
    codec::frame(shared.answer(request, None).to_string().as_bytes())
}

/// Keeps the connection open, discarding whatever arrives, until the client closes it.
async fn hold(stream: &mut TcpStream) {
    let mut sink = [0u8; 512];
    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
}
