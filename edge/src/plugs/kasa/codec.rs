//! The Kasa wire format: an XOR autokey cipher seeded with 171, and frames of a 4-byte
//! big-endian length followed by that many encrypted bytes.

use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The key the cipher starts from in both directions.
pub const INITIAL_KEY: u8 = 171;

/// The largest frame accepted. A six-outlet strip's sysinfo is about 2 KiB; a length far past
/// this is another protocol on the port (an HTTP answer reads as a 1 GiB length), not a plug.
pub const MAX_FRAME: usize = 64 * 1024;

const HEADER: usize = 4;

/// Encrypts: every plain byte is XORed with the previous cipher byte.
pub fn encrypt(plain: &[u8]) -> Vec<u8> {
    let mut key = INITIAL_KEY;
    plain
        .iter()
        .map(|&byte| {
            key ^= byte;
            key
        })
        .collect()
}

/// Decrypts what [`encrypt`] produced.
pub fn decrypt(cipher: &[u8]) -> Vec<u8> {
    let mut key = INITIAL_KEY;
    cipher
        .iter()
        .map(|&byte| {
            let plain = byte ^ key;
            key = byte;
            plain
        })
        .collect()
}

/// One whole frame for `plain`: the length header, then the encrypted bytes.
///
/// # Panics
/// When `plain` is longer than 4 GiB, which no message of this protocol comes near.
pub fn frame(plain: &[u8]) -> Vec<u8> {
    let len = u32::try_from(plain.len()).expect("a Kasa message fits a 32-bit length");
    let mut framed = Vec::with_capacity(HEADER + plain.len());
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(&encrypt(plain));
    framed
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed before sending any byte of a frame: the clean end of a conversation.
    #[error("connection closed before a frame began")]
    Eof,
    /// The peer closed part-way through a frame.
    #[error("connection closed after {received} bytes of a frame")]
    Truncated { received: usize },
    /// The header announced more than [`MAX_FRAME`] bytes.
    #[error("frame of {0} bytes announced, more than the {MAX_FRAME} accepted")]
    TooLarge(usize),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads one frame and returns its decrypted payload, looping until every byte has arrived:
/// a strip's sysinfo often comes in several TCP segments.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Vec<u8>, FrameError> {
    let mut header = [0u8; HEADER];
    let got = fill(reader, &mut header).await?;
    if got == 0 {
        return Err(FrameError::Eof);
    }
    if got < HEADER {
        return Err(FrameError::Truncated { received: got });
    }
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    let got = fill(reader, &mut body).await?;
    if got < len {
        return Err(FrameError::Truncated {
            received: HEADER + got,
        });
    }
    Ok(decrypt(&body))
}

/// Writes `plain` as one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(writer: &mut W, plain: &[u8]) -> io::Result<()> {
    writer.write_all(&frame(plain)).await?;
    writer.flush().await
}

/// Reads until `buf` is full or the peer closes; returns how many bytes arrived.
async fn fill<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]).await? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYSINFO: &[u8] = br#"{"system":{"get_sysinfo":{}}}"#;

    #[test]
    fn encrypt_then_decrypt_is_the_identity() {
        let plain: Vec<u8> = (0..=255).chain(0..=255).collect();
        assert_eq!(decrypt(&encrypt(&plain)), plain);
        assert_eq!(decrypt(&encrypt(SYSINFO)), SYSINFO);
    }

    #[test]
    fn sysinfo_request_encrypts_to_the_known_bytes() {
        let known = [
            0xd0, 0xf2, 0x81, 0xf8, 0x8b, 0xff, 0x9a, 0xf7, 0xd5, 0xef, 0x94, 0xb6,
        ];
        assert_eq!(&encrypt(SYSINFO)[..known.len()], &known);
        let framed = frame(SYSINFO);
        assert_eq!(&framed[..4], &(SYSINFO.len() as u32).to_be_bytes());
        assert_eq!(&framed[4..4 + known.len()], &known);
    }

    #[tokio::test]
    async fn a_frame_arriving_a_byte_at_a_time_is_read_whole() {
        let payload = br#"{"system":{"get_sysinfo":{"children":[1,2,3,4,5,6]}}}"#.repeat(40);
        // A one-byte pipe hands the reader one byte per read.
        let (mut writer, mut reader) = tokio::io::duplex(1);
        let sent = payload.clone();
        let sender = tokio::spawn(async move { write_frame(&mut writer, &sent).await });
        let received = read_frame(&mut reader).await.expect("whole frame");
        sender.await.expect("sender").expect("written");
        assert_eq!(received, payload);
    }

    #[tokio::test]
    async fn two_frames_back_to_back_are_read_apart() {
        let (mut writer, mut reader) = tokio::io::duplex(4096);
        write_frame(&mut writer, b"first").await.expect("write");
        write_frame(&mut writer, b"second").await.expect("write");
        drop(writer);
        assert_eq!(read_frame(&mut reader).await.expect("first"), b"first");
        assert_eq!(read_frame(&mut reader).await.expect("second"), b"second");
        assert!(matches!(
            read_frame(&mut reader).await,
            Err(FrameError::Eof)
        ));
    }

    #[tokio::test]
    async fn an_absurd_length_is_refused_before_allocating() {
        let mut input: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\r\n";
        match read_frame(&mut input).await {
            Err(FrameError::TooLarge(len)) => assert_eq!(len, 0x4854_5450),
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_frame_cut_short_reports_how_much_arrived() {
        let framed = frame(b"0123456789");
        let mut cut: &[u8] = &framed[..9];
        match read_frame(&mut cut).await {
            Err(FrameError::Truncated { received }) => assert_eq!(received, 9),
            other => panic!("expected Truncated, got {other:?}"),
        }
        let mut header_only: &[u8] = &framed[..2];
        assert!(matches!(
            read_frame(&mut header_only).await,
            Err(FrameError::Truncated { received: 2 })
        ));
    }
}
