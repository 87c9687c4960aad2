//! Web console (being written; see issue 4).

use serde::{Deserialize, Serialize};

/// `[web]` section of faced.toml.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {}
