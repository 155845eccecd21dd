//! Fuzzing the plug wire decoders with arbitrary bytes: the frame reader, the discovery reply
//! parser and the reply parsers. A plug, or anything else answering on its port, is outside our
//! control; whatever it sends must end in a value or an error, never a panic or a huge
//! allocation.
//!
//! The case count is bounded for CI; `PROPTEST_CASES=100000 cargo test -p aero-edge --test
//! fuzz_kasa` runs a longer campaign.

use aero_edge::plugs::discover::parse_reply;
use aero_edge::plugs::kasa::codec::{self, FrameError, MAX_FRAME};
use aero_edge::plugs::kasa::commands::{command_reply, parse_emeter, parse_sysinfo};
use proptest::prelude::*;
use serde_json::{Value, json};

/// JSON of any shape, a few levels deep, with keys a plug reply uses so the parsers get past
/// their first lookup often.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "[ -~]{0,12}".prop_map(Value::from),
    ];
    let key = prop_oneof![
        Just("system".to_string()),
        Just("get_sysinfo".to_string()),
        Just("emeter".to_string()),
        Just("get_realtime".to_string()),
        Just("err_code".to_string()),
        Just("err_msg".to_string()),
        Just("deviceId".to_string()),
        Just("relay_state".to_string()),
        Just("children".to_string()),
        Just("id".to_string()),
        Just("state".to_string()),
        Just("power_mw".to_string()),
        Just("power".to_string()),
        Just("voltage".to_string()),
        Just("current".to_string()),
        Just("total".to_string()),
        "[a-z_]{1,8}",
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Reads every frame from `bytes` as they would arrive in `chunk`-sized reads.
fn read_all(bytes: &[u8], chunk: usize) -> (Vec<Vec<u8>>, FrameError) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (mut writer, mut reader) = tokio::io::duplex(chunk);
        let sent = bytes.to_vec();
        let sender = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            // The reader may stop early (a frame too large); what it did not read is dropped.
            let _ = writer.write_all(&sent).await;
        });
        let mut frames = Vec::new();
        let end = loop {
            match codec::read_frame(&mut reader).await {
                Ok(frame) => frames.push(frame),
                Err(err) => break err,
            }
        };
        drop(reader);
        sender.await.expect("sender");
        (frames, end)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_end_in_frames_and_one_error_never_a_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        chunk in 1usize..64,
    ) {
        let (frames, end) = read_all(&bytes, chunk);
        // Every frame read is accounted for by the bytes: a header plus its body each.
        let consumed: usize = frames.iter().map(|f| 4 + f.len()).sum();
        prop_assert!(consumed <= bytes.len());
        match end {
            FrameError::Eof => prop_assert_eq!(consumed, bytes.len()),
            FrameError::Truncated { received } => {
                prop_assert_eq!(consumed + received, bytes.len());
            }
            FrameError::TooLarge(len) => prop_assert!(len > MAX_FRAME),
            FrameError::Io(err) => prop_assert!(false, "an in-memory pipe failed: {err}"),
        }
    }

    #[test]
    fn framed_messages_come_back_whole_however_they_are_split(
        messages in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..5),
        chunk in 1usize..64,
    ) {
        let stream: Vec<u8> = messages.iter().flat_map(|m| codec::frame(m)).collect();
        let (frames, end) = read_all(&stream, chunk);
        prop_assert_eq!(frames, messages);
        prop_assert!(matches!(end, FrameError::Eof));
    }

    #[test]
    fn a_header_announcing_more_than_the_limit_is_refused(
        len in (MAX_FRAME as u32 + 1)..=u32::MAX,
        tail in prop::collection::vec(any::<u8>(), 0..32),
    ) {
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.extend_from_slice(&tail);
        let (frames, end) = read_all(&bytes, 16);
        prop_assert!(frames.is_empty());
        prop_assert!(matches!(end, FrameError::TooLarge(seen) if seen == len as usize));
    }

    #[test]
    fn discovery_datagrams_of_arbitrary_bytes_never_panic(
        datagram in prop::collection::vec(any::<u8>(), 0..400),
    ) {
        let _ = parse_reply(&datagram);
    }

    #[test]
    fn discovery_replies_of_arbitrary_json_parse_or_are_ignored(reply in json_value()) {
        let datagram = codec::encrypt(reply.to_string().as_bytes());
        if let Some(info) = parse_reply(&datagram) {
            // Anything accepted is a plug or a strip: it has a relay or outlets.
            prop_assert!(info.relay_on.is_some() || !info.outlets.is_empty());
        }
    }

    #[test]
    fn replies_of_arbitrary_json_give_a_value_or_an_error(reply in json_value()) {
        if let Ok(body) = command_reply(&reply, "system", "get_sysinfo")
            && let Ok(info) = parse_sysinfo(body)
        {
            prop_assert!(info.relay_on.is_some() || !info.outlets.is_empty());
        }
        if let Ok(body) = command_reply(&reply, "emeter", "get_realtime") {
            let _ = parse_emeter(body);
        }
        let _ = parse_sysinfo(&reply);
        let _ = parse_emeter(&reply);
    }
}
