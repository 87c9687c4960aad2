//! Web console (issue 4): axum server, embedded front end, accounts and the JSON API.
//!
//! The daemon (`faced run`) starts it; the pipeline is reached only through [`live::LiveSource`].

pub mod live;

use serde::{Deserialize, Serialize};

/// `[web]` section of faced.toml.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {}
