//! Where environment variables come from. Tests pass a map; `main` passes the process env,
//! so no test ever mutates the process environment.

use std::collections::HashMap;

pub const ENV_CLIENT_SECRET: &str = "GATEHOUSE_OIDC_CLIENT_SECRET";
pub const ENV_SESSION_KEYS: &str = "GATEHOUSE_SESSION_KEYS";
pub const ENV_REDIS_URL: &str = "GATEHOUSE_REDIS_URL";
pub const ENV_REDIS_PASSWORD: &str = "GATEHOUSE_REDIS_PASSWORD";

pub trait EnvSource {
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl EnvSource for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// No environment at all.
pub struct NoEnv;

impl EnvSource for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
}
