//! GPIO actions (being written; see issue 5).

use serde::{Deserialize, Serialize};

/// `[gpio]` section of faced.toml.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GpioConfig {}
