//! `[redis]` as written in the config file, and its validation into what
//! the client connects with. Secrets (the password, also inside the URL)
//! never reach `Debug` output or error messages.

use std::path::PathBuf;
use std::time::Duration;

use redis::IntoConnectionInfo;
use serde::Deserialize;
use url::Url;

use crate::error::RedisError;

/// Where the shared ledger lives and how to reach it.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:6379` or `rediss://host:6380` (TLS), optionally with
    /// `user:password@` and a database number (`/0`). `${VAR}` is expanded
    /// by the config loader before this sees it.
    pub url: String,
    /// User name (Redis ACL); overrides the URL's.
    #[serde(default)]
    pub username: Option<String>,
    /// Password; overrides the URL's. Never logged.
    #[serde(default)]
    pub password: Option<String>,
    /// Extra trusted root certificates (PEM) for `rediss://`, besides the
    /// system's (for a server whose certificate a private CA signed).
    /// Without it, the Mozilla roots are trusted.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Longest a connection attempt may take (`"2s"`).
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest one exchange with the server may take (`"1s"`).
    #[serde(default = "default_command_timeout", with = "humantime_serde")]
    pub command_timeout: Duration,
    /// Prepended to every key, so that several deployments can share a
    /// server.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_command_timeout() -> Duration {
    Duration::from_secs(1)
}

fn default_key_prefix() -> String {
    "tollgate:".to_owned()
}

impl RedisConfig {
    /// A config for `url` with every other setting at its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            username: None,
            password: None,
            ca_file: None,
            connect_timeout: default_connect_timeout(),
            command_timeout: default_command_timeout(),
            key_prefix: default_key_prefix(),
        }
    }

    /// Checks the settings and resolves them into what the client connects
    /// with; the error is one line naming the field and the fix.
    pub fn validate(&self) -> Result<RedisTarget, RedisError> {
        let bad = |msg: String| RedisError::Config(msg);
        let mut url = Url::parse(&self.url).map_err(|e| {
            bad(format!(
                "redis.url: not a URL ({e}): write redis://host:6379 or rediss://host:6380"
            ))
        })?;
        let tls = match url.scheme() {
            "redis" => false,
            "rediss" => true,
            other => {
                return Err(bad(format!(
                    "redis.url: scheme {other}:// is not supported: use redis:// or rediss:// (TLS)"
                )));
            }
        };
        let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
            return Err(bad("redis.url: no host: write redis://host:6379".to_owned()));
        };
        let server = format!("{host}:{}", url.port().unwrap_or(6379));
        if !url.path().is_empty() && url.path() != "/" {
            let db = url.path().trim_start_matches('/');
            if db.parse::<u32>().is_err() {
                return Err(bad(format!(
                    "redis.url: the path must be a database number (/0), not /{db}"
                )));
            }
        }
        if self.ca_file.is_some() && !tls {
            return Err(bad(
                "redis.ca_file is set but redis.url is redis:// (no TLS): use rediss://".to_owned(),
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(bad(
                "redis.connect_timeout must be more than 0 (e.g. \"2s\")".to_owned(),
            ));
        }
        if self.command_timeout.is_zero() {
            return Err(bad(
                "redis.command_timeout must be more than 0 (e.g. \"1s\")".to_owned(),
            ));
        }
        let root_pem = match &self.ca_file {
            Some(path) => Some(roots_with(path)?),
            None => None,
        };
        // The URL's credentials, unless given separately.
        let password = match &self.password {
            Some(p) => Some(p.clone()),
            None => url
                .password()
                .map(|p| percent_decode(p, "password"))
                .transpose()?,
        };
        let username = match &self.username {
            Some(u) => Some(u.clone()),
            None if url.username().is_empty() => None,
            None => Some(percent_decode(url.username(), "user name")?),
        };
        // Credentials travel in the connection settings, not in the URL.
        let _ = url.set_password(None);
        let _ = url.set_username("");
        let info = url
            .as_str()
            .into_connection_info()
            .map_err(|e| bad(format!("redis.url: {e}")))?;
        let mut settings = info.redis_settings().clone();
        if let Some(u) = &username {
            settings = settings.set_username(u);
        }
        if let Some(p) = &password {
            settings = settings.set_password(p);
        }
        Ok(RedisTarget {
            info: info.set_redis_settings(settings),
            server,
            tls,
            root_pem,
            password: password.filter(|p| !p.is_empty()),
            connect_timeout: self.connect_timeout,
            command_timeout: self.command_timeout,
            key_prefix: self.key_prefix.clone(),
        })
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("ca_file", &self.ca_file)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

/// `url` with its password replaced by `***` (and as little as possible of
/// it when it does not parse).
pub fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        // Whatever sits before the last '@' may be a secret.
        Err(_) => match url.rfind('@') {
            Some(at) => {
                let start = url.find("://").map_or(0, |s| s + 3);
                format!("{}***{}", &url[..start.min(at)], &url[at..])
            }
            None => url.to_owned(),
        },
    }
}

fn percent_decode(s: &str, what: &str) -> Result<String, RedisError> {
    let mut out = Vec::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out)
        .map_err(|_| RedisError::Config(format!("redis.url: the {what} is not UTF-8")))
}

/// The CA file's certificates plus the system's roots, as one PEM bundle
/// (the client takes one bundle that replaces its default roots).
fn roots_with(path: &std::path::Path) -> Result<Vec<u8>, RedisError> {
    use base64::Engine as _;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let shown = path.display();
    let mut pem = std::fs::read(path)
        .map_err(|e| RedisError::Config(format!("redis.ca_file: cannot read {shown}: {e}")))?;
    let mut found = 0usize;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        cert.map_err(|e| {
            RedisError::Config(format!(
                "redis.ca_file: {shown}: not PEM certificates ({e})"
            ))
        })?;
        found += 1;
    }
    if found == 0 {
        return Err(RedisError::Config(format!(
            "redis.ca_file: {shown}: no PEM certificate in it"
        )));
    }
    // Missing or unreadable system roots leave the CA file alone trusted.
    let system = rustls_native_certs::load_native_certs();
    pem.push(b'\n');
    for cert in system.certs {
        let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        pem.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.extend_from_slice(line);
            pem.push(b'\n');
        }
        pem.extend_from_slice(b"-----END CERTIFICATE-----\n");
    }
    Ok(pem)
}

/// A validated [`RedisConfig`]: what [`crate::Redis::connect`] uses.
#[derive(Clone)]
pub struct RedisTarget {
    pub(crate) info: redis::ConnectionInfo,
    pub(crate) server: String,
    pub(crate) tls: bool,
    /// Trusted roots (PEM) replacing the default ones, with `ca_file`.
    pub(crate) root_pem: Option<Vec<u8>>,
    /// Scrubbed from every error message, in case a server echoes it.
    pub(crate) password: Option<String>,
    pub(crate) connect_timeout: Duration,
    pub(crate) command_timeout: Duration,
    pub(crate) key_prefix: String,
}

impl RedisTarget {
    /// `host:port` of the server (for messages).
    pub fn server(&self) -> &str {
        &self.server
    }

    pub fn tls(&self) -> bool {
        self.tls
    }

    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTarget")
            .field("server", &self.server)
            .field("tls", &self.tls)
            .field("extra_roots", &self.root_pem.is_some())
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> RedisConfig {
        match toml::from_str(toml_text) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    fn error_of(c: &RedisConfig) -> String {
        match c.validate() {
            Ok(t) => panic!("accepted: {t:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_apply() {
        let c = parse(r#"url = "redis://127.0.0.1:6380""#);
        assert_eq!(c.connect_timeout, Duration::from_secs(2));
        assert_eq!(c.command_timeout, Duration::from_secs(1));
        assert_eq!(c.key_prefix, "tollgate:");
        let t = c.validate().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.server(), "127.0.0.1:6380");
        assert!(!t.tls());
        let c = parse("url = \"rediss://cache.example\"\nconnect_timeout = \"500ms\"");
        assert_eq!(c.connect_timeout, Duration::from_millis(500));
        let t = c.validate().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.server(), "cache.example:6379");
        assert!(t.tls());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = toml::from_str::<RedisConfig>("url = \"redis://h\"\npasword = \"x\"");
        assert!(e.is_err());
    }

    #[test]
    fn credentials_come_from_the_url_or_override_it() {
        let t = RedisConfig::new("redis://alice:s%40cret@h:1/2")
            .validate()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.info.redis_settings().username(), Some("alice"));
        assert_eq!(t.info.redis_settings().password(), Some("s@cret"));
        assert_eq!(t.info.redis_settings().db(), 2);
        let mut c = RedisConfig::new("redis://alice:old@h:1");
        c.username = Some("bob".into());
        c.password = Some("new".into());
        let t = c.validate().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.info.redis_settings().username(), Some("bob"));
        assert_eq!(t.info.redis_settings().password(), Some("new"));
    }

    #[test]
    fn debug_never_shows_the_password() {
        let mut c = RedisConfig::new("redis://alice:hunter2@h:6379/0");
        c.password = Some("swordfish".into());
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("swordfish"), "{shown}");
        assert!(shown.contains("alice:***@h:6379"), "{shown}");
        let t = c.validate().unwrap_or_else(|e| panic!("{e}"));
        let shown = format!("{t:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("swordfish"),
            "{shown}"
        );
        let shown = redact_url("redis://u:p@ss@h");
        assert!(
            shown.contains("u:***@h") && !shown.contains("ss"),
            "{shown}"
        );
        let shown = redact_url("redis://u:p@ss@h:notaport");
        assert!(
            shown.contains("***@h") && !shown.contains("p@ss"),
            "{shown}"
        );
    }

    #[test]
    fn bad_settings_get_one_clear_line() {
        let e = error_of(&RedisConfig::new("http://h:6379"));
        assert!(e.contains("redis.url") && e.contains("redis://"), "{e}");
        let e = error_of(&RedisConfig::new("redis//h"));
        assert!(e.contains("redis.url: not a URL"), "{e}");
        let e = error_of(&RedisConfig::new("redis://h/abc"));
        assert!(e.contains("database number"), "{e}");
        let mut c = RedisConfig::new("redis://h");
        c.ca_file = Some("/nonexistent/ca.pem".into());
        let e = error_of(&c);
        assert!(e.contains("rediss://"), "{e}");
        c.url = "rediss://h".into();
        let e = error_of(&c);
        assert!(
            e.contains("redis.ca_file: cannot read /nonexistent/ca.pem"),
            "{e}"
        );
        let mut c = RedisConfig::new("redis://h");
        c.command_timeout = Duration::ZERO;
        assert!(error_of(&c).contains("redis.command_timeout"));
        assert!(!error_of(&c).contains('\n'));
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!("tollgate-redis-ca-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("ca.pem");
        let _ = std::fs::write(&path, "not a certificate\n");
        let mut c = RedisConfig::new("rediss://h");
        c.ca_file = Some(path);
        let e = error_of(&c);
        assert!(e.contains("no PEM certificate"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
