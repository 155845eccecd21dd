//! What the edge asks of a plug: its sysinfo, switching a relay (one outlet of a strip through
//! `context.child_ids`), and the energy meter's realtime reading; with the `err_code` checks
//! every reply gets, at module level and at command level.

use super::KasaError;
use super::transport::Transport;
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// What `system.get_sysinfo` says of a plug or strip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SysInfo {
    pub alias: String,
    pub model: String,
    pub device_id: String,
    /// Capability tags separated by `:`; `ENE` means an energy meter.
    pub feature: String,
    /// The relay of a plain plug; strips report per outlet in `outlets` instead.
    pub relay_on: Option<bool>,
    /// A strip's outlets, in the strip's order; empty for a plain plug.
    pub outlets: Vec<OutletInfo>,
}

/// One outlet of a strip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutletInfo {
    /// The full child id: the strip's device id followed by the outlet's two-digit index.
    pub id: String,
    pub alias: String,
    pub on: bool,
}

/// An energy meter reading in one set of units, whichever form the firmware replied in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Emeter {
    pub power_mw: u64,
    pub voltage_mv: u64,
    pub current_ma: u64,
    /// Energy counted since the meter was last reset.
    pub total_wh: u64,
}

impl SysInfo {
    /// Whether the plug meters energy and answers `emeter.get_realtime`.
    pub fn has_emeter(&self) -> bool {
        self.feature.contains("ENE")
    }

    /// The full child id of outlet `child`, given either as that full id or as the two-digit
    /// index the strip appends to its device id (`"00"` is the first outlet).
    pub fn outlet_id(&self, child: &str) -> Result<String, KasaError> {
        let wanted = full_child_id(&self.device_id, child);
        self.outlets
            .iter()
            .find(|outlet| outlet.id.eq_ignore_ascii_case(&wanted))
            .map(|outlet| outlet.id.clone())
            .ok_or_else(|| KasaError::UnknownOutlet(child.to_owned()))
    }
}

/// `child` as a full child id: a two-digit index is appended to `device_id`, anything else is
/// taken as the full id already.
pub fn full_child_id(device_id: &str, child: &str) -> String {
    if child.len() == 2 && child.bytes().all(|b| b.is_ascii_digit()) {
        format!("{device_id}{child}")
    } else {
        child.to_owned()
    }
}

/// Reads the plug's sysinfo.
pub async fn get_sysinfo(transport: &dyn Transport) -> Result<SysInfo, KasaError> {
    let reply = transport
        .request(&request("system", "get_sysinfo", json!({}), &[]))
        .await?;
    parse_sysinfo(command_reply(&reply, "system", "get_sysinfo")?)
}

/// Switches the relay of a plain plug (`child_ids` empty) or of the listed strip outlets (full
/// child ids, see [`SysInfo::outlet_id`]).
pub async fn set_relay_state(
    transport: &dyn Transport,
    child_ids: &[String],
    on: bool,
) -> Result<(), KasaError> {
    let state = json!({ "state": u8::from(on) });
    let reply = transport
        .request(&request("system", "set_relay_state", state, child_ids))
        .await?;
    command_reply(&reply, "system", "set_relay_state").map(|_| ())
}

/// Reads the energy meter of a plain plug (`child_id` `None`) or of one strip outlet. Only
/// plugs whose [`SysInfo::has_emeter`] have one.
pub async fn get_realtime(
    transport: &dyn Transport,
    child_id: Option<&str>,
) -> Result<Emeter, KasaError> {
    let children: Vec<String> = child_id.map(str::to_owned).into_iter().collect();
    let reply = transport
        .request(&request("emeter", "get_realtime", json!({}), &children))
        .await?;
    parse_emeter(command_reply(&reply, "emeter", "get_realtime")?)
}

/// `{"module":{"method":args}}`, addressed to strip outlets through `context.child_ids` when
/// any are given.
pub fn request(module: &str, method: &str, args: Value, child_ids: &[String]) -> Value {
    let mut body = Map::new();
    if !child_ids.is_empty() {
        body.insert("context".into(), json!({ "child_ids": child_ids }));
    }
    body.insert(module.into(), json!({ method: args }));
    Value::Object(body)
}

/// The command's own reply inside `reply`, once neither the module nor the command carries a
/// non-zero `err_code`. A module the plug lacks fails at module level
/// (`{"emeter":{"err_code":-1,"err_msg":"module not support"}}`), a bad argument at command
/// level.
pub fn command_reply<'a>(
    reply: &'a Value,
    module: &str,
    method: &str,
) -> Result<&'a Value, KasaError> {
    let module_reply = reply
        .get(module)
        .ok_or_else(|| KasaError::Garbage(format!("no {module:?} in the reply")))?;
    check_err_code(module_reply, module)?;
    let command = module_reply
        .get(method)
        .ok_or_else(|| KasaError::Garbage(format!("no {module}.{method} in the reply")))?;
    check_err_code(command, &format!("{module}.{method}"))?;
    Ok(command)
}

fn check_err_code(level: &Value, command: &str) -> Result<(), KasaError> {
    let Some(code) = level.get("err_code") else {
        return Ok(());
    };
    let code = code
        .as_i64()
        .ok_or_else(|| KasaError::Garbage(format!("err_code of {command} is {code}")))?;
    if code == 0 {
        return Ok(());
    }
    Err(KasaError::Device {
        command: command.to_owned(),
        code,
        message: level
            .get("err_msg")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    })
}

#[derive(Deserialize)]
struct RawSysInfo {
    #[serde(default)]
    alias: String,
    #[serde(default)]
    model: String,
    #[serde(rename = "deviceId")]
    device_id: String,
    #[serde(default)]
    feature: String,
    relay_state: Option<u8>,
    #[serde(default)]
    children: Vec<RawChild>,
}

#[derive(Deserialize)]
struct RawChild {
    id: String,
    #[serde(default)]
    alias: String,
    state: u8,
}

/// Parses the body of a `system.get_sysinfo` reply.
pub fn parse_sysinfo(body: &Value) -> Result<SysInfo, KasaError> {
    let raw = RawSysInfo::deserialize(body)
        .map_err(|err| KasaError::Garbage(format!("sysinfo: {err}")))?;
    let outlets: Vec<OutletInfo> = raw
        .children
        .into_iter()
        .map(|child| OutletInfo {
            // Some firmware lists children by index only; the protocol addresses them in full.
            id: full_child_id(&raw.device_id, &child.id),
            alias: child.alias,
            on: child.state != 0,
        })
        .collect();
    if outlets.is_empty() && raw.relay_state.is_none() {
        return Err(KasaError::Garbage(
            "sysinfo has neither relay_state nor children".into(),
        ));
    }
    Ok(SysInfo {
        alias: raw.alias,
        model: raw.model,
        device_id: raw.device_id,
        feature: raw.feature,
        relay_on: raw.relay_state.map(|state| state != 0),
        outlets,
    })
}

/// Both reply forms of `emeter.get_realtime`: first-generation HS110 firmware sends decimal
/// `power` (W), `voltage` (V), `current` (A) and `total` (kWh); later firmware sends integer
/// `power_mw`, `voltage_mv`, `current_ma` and `total_wh`.
#[derive(Deserialize)]
struct RawEmeter {
    power_mw: Option<f64>,
    voltage_mv: Option<f64>,
    current_ma: Option<f64>,
    total_wh: Option<f64>,
    power: Option<f64>,
    voltage: Option<f64>,
    current: Option<f64>,
    total: Option<f64>,
}

/// Parses the body of an `emeter.get_realtime` reply, in either form, into milli-units.
pub fn parse_emeter(body: &Value) -> Result<Emeter, KasaError> {
    let raw =
        RawEmeter::deserialize(body).map_err(|err| KasaError::Garbage(format!("emeter: {err}")))?;
    let reading = |milli: Option<f64>, unit: Option<f64>, name: &str| {
        milli
            .or(unit.map(|value| value * 1000.0))
            .map(to_milli)
            .ok_or_else(|| KasaError::Garbage(format!("emeter reading without {name}")))
    };
    Ok(Emeter {
        power_mw: reading(raw.power_mw, raw.power, "power")?,
        voltage_mv: reading(raw.voltage_mv, raw.voltage, "voltage")?,
        current_ma: reading(raw.current_ma, raw.current, "current")?,
        total_wh: reading(raw.total_wh, raw.total, "total")?,
    })
}

/// Rounds to whole milli-units; meters read a hair below zero with nothing plugged in.
fn to_milli(value: f64) -> u64 {
    // The cast saturates, and a plug's readings are far from u64::MAX.
    value.round().max(0.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRIP_ID: &str = "8006A0B1C2D3E4F5000000000000000000000007";

    fn strip() -> Value {
        json!({
            "alias": "Arcade strip", "model": "HS300(US)", "deviceId": STRIP_ID,
            "feature": "TIM:ENE", "child_num": 3, "err_code": 0,
            "children": [
                {"id": format!("{STRIP_ID}00"), "state": 1, "alias": "Claw"},
                {"id": format!("{STRIP_ID}01"), "state": 0, "alias": "Hoops"},
                {"id": "02", "state": 1, "alias": "Air hockey"},
            ]
        })
    }

    #[test]
    fn a_plain_plug_sysinfo_has_one_relay_and_no_outlets() {
        let info = parse_sysinfo(&json!({
            "alias": "Lobby", "model": "HS103(US)", "deviceId": "ABC", "feature": "TIM",
            "relay_state": 1, "err_code": 0
        }))
        .expect("sysinfo");
        assert_eq!(info.relay_on, Some(true));
        assert!(info.outlets.is_empty());
        assert!(!info.has_emeter());
        assert!(matches!(
            info.outlet_id("00"),
            Err(KasaError::UnknownOutlet(_))
        ));
    }

    #[test]
    fn a_strip_sysinfo_lists_outlets_by_full_id() {
        let info = parse_sysinfo(&strip()).expect("sysinfo");
        assert!(info.has_emeter());
        assert_eq!(info.relay_on, None);
        let states: Vec<(String, bool)> =
            info.outlets.iter().map(|o| (o.id.clone(), o.on)).collect();
        assert_eq!(
            states,
            [
                (format!("{STRIP_ID}00"), true),
                (format!("{STRIP_ID}01"), false),
                (format!("{STRIP_ID}02"), true),
            ]
        );
    }

    #[test]
    fn an_outlet_is_found_by_index_or_by_full_id() {
        let info = parse_sysinfo(&strip()).expect("sysinfo");
        let second = format!("{STRIP_ID}01");
        assert_eq!(info.outlet_id("01").expect("by index"), second);
        assert_eq!(info.outlet_id(&second).expect("by id"), second);
        assert_eq!(
            info.outlet_id(&second.to_lowercase()).expect("any case"),
            second
        );
        assert!(matches!(info.outlet_id("03"), Err(KasaError::UnknownOutlet(c)) if c == "03"));
        assert!(matches!(
            info.outlet_id("1"),
            Err(KasaError::UnknownOutlet(_))
        ));
    }

    #[test]
    fn a_sysinfo_without_relay_or_outlets_is_garbage() {
        let err = parse_sysinfo(&json!({"deviceId": "ABC"})).expect_err("no relay");
        assert!(matches!(err, KasaError::Garbage(_)));
        let err = parse_sysinfo(&json!({"alias": "no id", "relay_state": 0})).expect_err("no id");
        assert!(matches!(err, KasaError::Garbage(_)));
    }

    #[test]
    fn strip_requests_carry_the_child_ids_in_context() {
        let ids = vec![format!("{STRIP_ID}04")];
        assert_eq!(
            request("system", "set_relay_state", json!({"state": 1}), &ids),
            json!({
                "context": {"child_ids": [format!("{STRIP_ID}04")]},
                "system": {"set_relay_state": {"state": 1}}
            })
        );
        assert_eq!(
            request("system", "get_sysinfo", json!({}), &[]),
            json!({"system": {"get_sysinfo": {}}})
        );
    }

    #[test]
    fn both_emeter_forms_read_as_the_same_values() {
        let decimal = parse_emeter(&json!({
            "power": 12.5, "voltage": 120.5, "current": 0.103, "total": 0.042, "err_code": 0
        }))
        .expect("decimal form");
        let milli = parse_emeter(&json!({
            "power_mw": 12500, "voltage_mv": 120500, "current_ma": 103, "total_wh": 42,
            "err_code": 0
        }))
        .expect("milli form");
        assert_eq!(decimal, milli);
        assert_eq!(
            milli,
            Emeter {
                power_mw: 12_500,
                voltage_mv: 120_500,
                current_ma: 103,
                total_wh: 42
            }
        );
        assert!(matches!(
            parse_emeter(&json!({"voltage_mv": 1, "current_ma": 1, "total_wh": 1})),
            Err(KasaError::Garbage(_))
        ));
    }

    #[test]
    fn a_module_level_err_code_is_a_device_error() {
        let reply = json!({"emeter": {"err_code": -1, "err_msg": "module not support"}});
        match command_reply(&reply, "emeter", "get_realtime") {
            Err(KasaError::Device {
                command,
                code,
                message,
            }) => {
                assert_eq!(command, "emeter");
                assert_eq!(code, -1);
                assert_eq!(message, "module not support");
            }
            other => panic!("expected a device error, got {other:?}"),
        }
    }

    #[test]
    fn a_command_level_err_code_is_a_device_error() {
        let reply =
            json!({"system": {"set_relay_state": {"err_code": -3, "err_msg": "invalid argument"}}});
        match command_reply(&reply, "system", "set_relay_state") {
            Err(KasaError::Device { command, code, .. }) => {
                assert_eq!(command, "system.set_relay_state");
                assert_eq!(code, -3);
            }
            other => panic!("expected a device error, got {other:?}"),
        }
        let ok = json!({"system": {"set_relay_state": {"err_code": 0}}});
        assert!(command_reply(&ok, "system", "set_relay_state").is_ok());
        let missing = json!({"system": {}});
        assert!(matches!(
            command_reply(&missing, "system", "set_relay_state"),
            Err(KasaError::Garbage(_))
        ));
    }
}
