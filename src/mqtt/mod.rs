//! MQTT publishing (being written; see issue 3).

use serde::{Deserialize, Serialize};

/// `[mqtt]` section of faced.toml.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {}
