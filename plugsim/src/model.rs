//! What a simulated plug is and how it answers: the models, their relays and meters, and the
//! replies to `system` and `emeter` commands as the real firmware shapes them.

use serde_json::{Map, Value, json};
use std::fmt;
use std::str::FromStr;

/// The plugs the simulator can be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Model {
    /// A plain plug without an energy meter.
    Hs103,
    /// The first-generation metered plug: emeter readings in decimal W, V, A and kWh.
    Hs110V1,
    /// A metered plug with readings in mW, mV, mA and Wh.
    Kp115,
    /// A six-outlet strip: outlets addressed through `context.child_ids`, one meter each.
    Hs300,
}

impl Model {
    pub const ALL: [Self; 4] = [Self::Hs103, Self::Hs110V1, Self::Kp115, Self::Hs300];

    /// Relays: six for the strip, one for a plug.
    pub fn outlets(self) -> usize {
        match self {
            Self::Hs300 => 6,
            _ => 1,
        }
    }

    pub fn has_emeter(self) -> bool {
        !matches!(self, Self::Hs103)
    }

    pub fn is_strip(self) -> bool {
        matches!(self, Self::Hs300)
    }

    fn name(self) -> &'static str {
        match self {
            Self::Hs103 => "HS103(US)",
            Self::Hs110V1 => "HS110(US)",
            Self::Kp115 => "KP115(US)",
            Self::Hs300 => "HS300(US)",
        }
    }

    fn feature(self) -> &'static str {
        if self.has_emeter() { "TIM:ENE" } else { "TIM" }
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Hs103 => "hs103",
            Self::Hs110V1 => "hs110",
            Self::Kp115 => "kp115",
            Self::Hs300 => "hs300",
        })
    }
}

impl FromStr for Model {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|model| model.to_string().eq_ignore_ascii_case(name))
            .ok_or_else(|| format!("unknown model {name:?}: one of hs103, hs110, kp115, hs300"))
    }
}

/// Mains voltage every simulated meter reads.
const VOLTAGE_MV: u64 = 120_500;

/// A simulated device's state.
#[derive(Debug)]
pub(crate) struct Device {
    pub(crate) model: Model,
    pub(crate) device_id: String,
    pub(crate) alias: String,
    pub(crate) relays: Vec<bool>,
    serial: u32,
}

impl Device {
    /// A device with all relays off. `serial` makes its ids unique among simulated devices.
    pub(crate) fn new(model: Model, serial: u32) -> Self {
        Self {
            model,
            device_id: format!("8006A0B1C2D3E4F5{serial:024X}"),
            alias: format!("Simulated {} {serial}", model.name()),
            relays: vec![false; model.outlets()],
            serial,
        }
    }

    pub(crate) fn child_id(&self, index: usize) -> String {
        format!("{}{index:02}", self.device_id)
    }

    /// The reply to a whole request, applying what it asks. With `forced_error`, every command
    /// answers that `err_code` and `err_msg` instead, and nothing is applied.
    pub(crate) fn answer(&mut self, request: &Value, forced_error: Option<(i64, &str)>) -> Value {
        let Some(modules) = request.as_object() else {
            return json!({"err_code": -1, "err_msg": "invalid request"});
        };
        let targets = match modules.get("context") {
            None => Ok(None),
            Some(context) => self.targets(context).map(Some),
        };
        let mut reply = Map::new();
        // JSON objects arrive here sorted by key; `system` goes first so a request that switches
        // and reads the meter together reads the new draw.
        let mut commands: Vec<_> = modules
            .iter()
            .filter(|(name, _)| *name != "context")
            .collect();
        commands.sort_by_key(|(name, _)| *name != "system");
        for (module, methods) in commands {
            let Some(methods) = methods.as_object() else {
                reply.insert(module.clone(), error(-1, "invalid request"));
                continue;
            };
            if !self.has_module(module) {
                reply.insert(module.clone(), error(-1, "module not support"));
                continue;
            }
            let mut answers = Map::new();
            for (method, args) in methods {
                let answer = match (forced_error, &targets) {
                    (Some((code, message)), _) => error(code, message),
                    (None, Err(bad)) => bad.clone(),
                    (None, Ok(targets)) => self.command(module, method, args, targets.as_deref()),
                };
                answers.insert(method.clone(), answer);
            }
            reply.insert(module.clone(), Value::Object(answers));
        }
        Value::Object(reply)
    }

    fn has_module(&self, module: &str) -> bool {
        module == "system" || (module == "emeter" && self.model.has_emeter())
    }

    /// The outlets `context.child_ids` names, or the error the strip answers for an id it
    /// does not have.
    fn targets(&self, context: &Value) -> Result<Vec<usize>, Value> {
        let ids = context
            .get("child_ids")
            .and_then(Value::as_array)
            .ok_or_else(|| error(-3, "invalid argument"))?;
        ids.iter()
            .map(|id| {
                id.as_str()
                    .and_then(|id| {
                        (0..self.relays.len())
                            .find(|&index| self.model.is_strip() && self.child_id(index) == id)
                    })
                    .ok_or_else(|| error(-14, "entry not exist"))
            })
            .collect()
    }

    fn command(
        &mut self,
        module: &str,
        method: &str,
        args: &Value,
        targets: Option<&[usize]>,
    ) -> Value {
        match (module, method) {
            ("system", "get_sysinfo") => self.sysinfo(),
            ("system", "set_relay_state") => {
                let Some(state) = args.get("state").and_then(Value::as_u64) else {
                    return error(-3, "invalid argument");
                };
                let all: Vec<usize> = (0..self.relays.len()).collect();
                for &index in targets.unwrap_or(&all) {
                    self.relays[index] = state != 0;
                }
                json!({"err_code": 0})
            }
            ("emeter", "get_realtime") => match (targets, self.model.is_strip()) {
                (Some([index]), true) => self.realtime(*index),
                (None, false) => self.realtime(0),
                _ => error(-3, "invalid argument"),
            },
            _ => error(-2, "member not support"),
        }
    }

    fn sysinfo(&self) -> Value {
        let serial = self.serial;
        let mut info = json!({
            "sw_ver": "1.0.12 Build 210121 Rel.151213",
            "hw_ver": if self.model == Model::Hs110V1 { "1.0" } else { "2.0" },
            "model": self.model.name(),
            "deviceId": self.device_id,
            "oemId": "FFF22CFF774A0B89F7624BFC6F50D5DE",
            "hwId": "044A516EE63C875F9458DA25C2CCC5A0",
            "mac": format!("50:C7:BF:{:02X}:{:02X}:{:02X}", (serial >> 16) & 0xff, (serial >> 8) & 0xff, serial & 0xff),
            "alias": self.alias,
            "feature": self.model.feature(),
            "rssi": -48,
            "led_off": 0,
            "updating": 0,
            "latitude_i": 0,
            "longitude_i": 0,
            "err_code": 0,
        });
        if self.model.is_strip() {
            let children: Vec<Value> = self
                .relays
                .iter()
                .enumerate()
                .map(|(index, &on)| {
                    json!({
                        "id": self.child_id(index),
                        "state": u8::from(on),
                        "alias": format!("Outlet {}", index + 1),
                        "on_time": 0,
                        "next_action": {"type": -1},
                    })
                })
                .collect();
            info["child_num"] = json!(children.len());
            info["children"] = Value::Array(children);
            info["mic_type"] = json!("IOT.SMARTPLUGSWITCH");
        } else {
            info["relay_state"] = json!(u8::from(self.relays[0]));
            info["type"] = json!("IOT.SMARTPLUGSWITCH");
            info["on_time"] = json!(0);
            info["active_mode"] = json!("none");
        }
        info
    }

    /// Outlet `index`'s meter: its load while on, nothing while off.
    fn realtime(&self, index: usize) -> Value {
        let power_mw = if self.relays[index] {
            load_mw(index)
        } else {
            0
        };
        let current_ma = power_mw * 1000 / VOLTAGE_MV;
        let total_wh = 42 + index as u64;
        if self.model == Model::Hs110V1 {
            json!({
                "power": power_mw as f64 / 1000.0,
                "voltage": VOLTAGE_MV as f64 / 1000.0,
                "current": current_ma as f64 / 1000.0,
                "total": total_wh as f64 / 1000.0,
                "err_code": 0,
            })
        } else {
            json!({
                "power_mw": power_mw,
                "voltage_mv": VOLTAGE_MV,
                "current_ma": current_ma,
                "total_wh": total_wh,
                "err_code": 0,
            })
        }
    }
}

/// The load on outlet `index` while it is on: distinct per outlet, so a reading shows which
/// outlet it came from.
pub fn load_mw(index: usize) -> u64 {
    12_500 + 1_000 * index as u64
}

fn error(code: i64, message: &str) -> Value {
    json!({"err_code": code, "err_msg": message})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_strip_refuses_a_child_it_does_not_have_and_switches_nothing() {
        let mut strip = Device::new(Model::Hs300, 900);
        let request = json!({
            "context": {"child_ids": [strip.child_id(1), format!("{}06", strip.device_id)]},
            "system": {"set_relay_state": {"state": 1}}
        });
        let reply = strip.answer(&request, None);
        assert_eq!(reply["system"]["set_relay_state"]["err_code"], -14);
        assert_eq!(strip.relays, [false; 6]);
    }

    #[test]
    fn a_plain_plug_has_no_emeter_module() {
        let mut plug = Device::new(Model::Hs103, 901);
        let reply = plug.answer(&json!({"emeter": {"get_realtime": {}}}), None);
        assert_eq!(
            reply,
            json!({"emeter": {"err_code": -1, "err_msg": "module not support"}})
        );
    }

    #[test]
    fn a_forced_error_answers_every_command_and_applies_none() {
        let mut plug = Device::new(Model::Kp115, 902);
        let reply = plug.answer(
            &json!({"system": {"set_relay_state": {"state": 1}}}),
            Some((-7, "busy")),
        );
        assert_eq!(
            reply,
            json!({"system": {"set_relay_state": {"err_code": -7, "err_msg": "busy"}}})
        );
        assert_eq!(plug.relays, [false]);
    }

    #[test]
    fn model_names_parse_back() {
        for model in Model::ALL {
            assert_eq!(model.to_string().parse::<Model>(), Ok(model));
        }
        assert!("hs999".parse::<Model>().is_err());
    }
}
